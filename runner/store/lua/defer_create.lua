-- Hold an entry whose create was refused for now (runner.store.waiting.WaitingCreates.defer)
-- and XACK it in the same step: it is in the waiting set or still pending, never neither.
-- `since` is kept from the first refusal (the start of KSR_CREATE_HORIZON); `tries` counts.
-- Fenced (fence.lua before it): KEYS[1] the term key, ARGV[1] the caller's term.
-- KEYS[2] the waiting index, KEYS[3] the entry's waiting hash, KEYS[4] the stream.
-- ARGV[2] group, ARGV[3] entry id, ARGV[4] member in the index, ARGV[5] next try (Unix s),
-- ARGV[6] now (ms), ARGV[7..] field/value pairs for the hash.
-- Returns {'OK'}.
redis.call('HSETNX', KEYS[3], 'since', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'tries', 1)
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('XACK', KEYS[4], ARGV[2], ARGV[3])
return {'OK'}
