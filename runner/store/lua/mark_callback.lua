-- Mark a callback sent, first caller wins (StateStore.mark_callback). Fenced (fence.lua),
-- with lib_mark.lua.
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the owed-callbacks sorted set, KEYS[4]
-- the events stream (KEYS[3], KEYS[4]: any key when not used).
-- ARGV[1] term or '', ARGV[2] '1' to return the record, ARGV[3..] the mark (lib_mark.lua, at 3).
-- Without a record the event is still appended (the callback is sent anyway).
-- Returns {'MISSING'} without a record, else {'OK', 1 for the first caller | 0} and, when
-- asked for, the record's HGETALL after the mark as a third item.
if redis.call('EXISTS', KEYS[2]) == 0 then
  event(KEYS[4], 3)
  return {'MISSING'}
end
local first = mark(KEYS[2], KEYS[3], KEYS[4], 3)
if ARGV[2] == '1' then return {'OK', first, redis.call('HGETALL', KEYS[2])} end
return {'OK', first}
