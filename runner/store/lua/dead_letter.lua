-- Move a stream entry to its dead-letter stream (runner.store.deadletter.dead_letter):
-- XADD then XACK, both or (if the XADD fails) neither. A MULTI would still run the XACK
-- after a failed XADD, losing the entry. In the same step, the message's end and what it
-- left behind:
--   its state record becomes state=dead (reason, error, dead entry id, the TTL of an ended
--   record) when it has none, or only a claim (claimed, no Job), or was dead already; a
--   record of a Job (that Job is real, and its record is what makes a replay a duplicate) or
--   of another end (completed, failed, exception, cancelled) is left as it is;
--   with that record, one event (a 99, DeadLettered) unless a 99 was marked already (a
--   create_refused told the producer itself);
--   its place among the creates that wait (runner.store.waiting).
-- A message without a usable id (ARGV[4] '') gets no record and no event.
-- KEYS[1] the dead-letter stream, KEYS[2] the original stream, KEYS[3] the message's state
-- record, KEYS[4] the active set, KEYS[5] the waiting index, KEYS[6] the entry's waiting hash,
-- KEYS[7] the events stream.
-- ARGV[1] group, ARGV[2] original entry id, ARGV[3] MAXLEN (approximate) of the dead stream,
-- ARGV[4] message id ('' : no record to write), ARGV[5] waiting member ('' : none),
-- ARGV[6] record TTL (s), ARGV[7] now (ms), ARGV[8] reason, ARGV[9] error,
-- ARGV[10] MAXLEN (approximate) of the events stream, ARGV[11] n, the number of the event's
-- field/value items, ARGV[12 .. 11+n] those items, then the dead entry's field/value pairs.
-- Returns the dead entry id.
local n = tonumber(ARGV[11])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 12 + n))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[3], 'job_name') == 0 then
  local state = redis.call('HGET', KEYS[3], 'state')
  if state == STATE.DEAD or legal(state, STATE.DEAD) then
    local told = redis.call('HEXISTS', KEYS[3], 'cb_99') == 1
    redis.call('HSET', KEYS[3], 'state', STATE.DEAD, 'dead_reason', ARGV[8], 'dead_error', ARGV[9], 'dead_id', id,
               'stream', KEYS[2], 'entry_id', ARGV[2], 'updated_at', ARGV[7], 'finished_at', ARGV[7])
    redis.call('EXPIRE', KEYS[3], ARGV[6])
    redis.call('SREM', KEYS[4], ARGV[4])
    if n > 0 and not told then
      redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[10], '*', unpack(ARGV, 12, 11 + n))
    end
  end
end
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[5], ARGV[5])
  redis.call('DEL', KEYS[6])
end
return id
