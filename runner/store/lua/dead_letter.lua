-- Move a stream entry to its dead-letter stream (runner.store.deadletter.dead_letter):
-- XADD then XACK, both or (if the XADD fails) neither. A MULTI would still run the XACK
-- after a failed XADD, losing the entry. In the same step, what the message left behind:
-- its claim unless a Job was recorded in it (that Job is real, and its record is what makes
-- a replay a duplicate), and its place among the creates that wait (runner.store.waiting).
-- KEYS[1] the dead-letter stream, KEYS[2] the original stream, KEYS[3] the message's state
-- record, KEYS[4] the active set, KEYS[5] the waiting index, KEYS[6] the entry's waiting hash.
-- ARGV[1] group, ARGV[2] original entry id, ARGV[3] MAXLEN (approximate) of the dead stream,
-- ARGV[4] message id ('' : no claim to clear), ARGV[5] waiting member ('' : none),
-- ARGV[6..] the dead entry's field/value pairs.
-- Returns the dead entry id.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 6))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[3], 'job_name') == 0 then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[5], ARGV[5])
  redis.call('DEL', KEYS[6])
end
return id
