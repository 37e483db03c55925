-- Forget a message entirely (StateStore.release). Fenced (fence.lua), with the state
-- prelude (runner.lifecycle): only an ended record is released; a live one is refused.
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the active set.
-- ARGV[1] term or '', ARGV[2] message id.
-- Returns {'OK', 1 released | 0 there was no record} | {'ILLEGAL', current state}.
local cur = redis.call('HGET', KEYS[2], 'state')
if cur and not legal(cur, '') then return {'ILLEGAL', cur} end
local released = redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
return {'OK', released}
