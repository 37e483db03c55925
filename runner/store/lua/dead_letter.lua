-- Move a stream entry to its dead-letter stream (runner.store.deadletter.dead_letter):
-- XADD then XACK, both or (if the XADD fails) neither. A MULTI would still run the XACK
-- after a failed XADD, losing the entry.
-- KEYS[1] the dead-letter stream, KEYS[2] the original stream.
-- ARGV[1] group, ARGV[2] original entry id, ARGV[3] MAXLEN (approximate) of the dead stream,
-- ARGV[4..] the dead entry's field/value pairs.
-- Returns the dead entry id.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return id
