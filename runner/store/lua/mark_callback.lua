-- Mark a callback sent, first caller wins (StateStore.mark_callback_sent). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the owed-callbacks sorted set (or any
-- key when ARGV[6] is '').
-- ARGV[1] term or '', ARGV[2] the mark field, ARGV[3] now (ms), ARGV[4] the detail field,
-- ARGV[5] the detail JSON, ARGV[6] owed member or '', ARGV[7] owed score.
-- The mark, the detail kept for recovery and the owed-index entry go together: a callback
-- marked sent is always findable until it finishes.
-- Returns {'MISSING'} without a record, else {'OK', 1 for the first caller | 0}.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'MISSING'} end
local first = redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
if first == 1 then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
  if ARGV[6] ~= '' then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6]) end
end
return {'OK', first}
