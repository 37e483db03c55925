-- Forget a message entirely (StateStore.release). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the active set.
-- ARGV[1] term or '', ARGV[2] message id.
-- Returns {'OK'}.
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
return {'OK'}
