-- Mark a callback sent, first caller wins (StateStore.mark_callback). Fenced (fence.lua),
-- with lib_mark.lua and lib_owner.lua.
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the owed-callbacks sorted set, KEYS[4]
-- the events stream (KEYS[3], KEYS[4]: any key when not used).
-- ARGV[1] term or '', ARGV[2] the RQ job id proposed as the message's courier ('' starts
-- none), ARGV[3] its lease (ms), ARGV[4..] the mark (lib_mark.lua, at 4). With lib_owner.lua: the first caller takes the owner lease for the
-- proposed job when nobody holds it (lib_owner.lua `take`).
-- ARGV[at+8+n] (after the mark's n event items) the message's webhook URL or '': kept in the
-- record when it has none (a record written before the message was read, by a cancel, or a
-- create refused for good), since the courier reads the URL from the record. The tracker
-- passes it only then: '' costs nothing.
-- Without a record the event is still appended (nothing can own the callback: not sent).
-- Returns {'MISSING'} without a record, else {'OK', 1 for the first caller | 0, the job id
-- granted or ''}.
local at = 4
if redis.call('EXISTS', KEYS[2]) == 0 then
  event(KEYS[4], at)
  return {'MISSING'}
end
local hook = ARGV[at + 8 + tonumber(ARGV[at + 7])]
if hook and hook ~= '' then redis.call('HSETNX', KEYS[2], 'webhook', hook) end
local first = mark(KEYS[2], KEYS[3], KEYS[4], at)
local granted = ''
if first == 1 and ARGV[2] ~= '' then
  granted = take(KEYS[2], KEYS[3], ARGV[at + 4], ARGV[2], string.sub(ARGV[at], 4), tonumber(ARGV[3]), -1) or ''
end
return {'OK', first, granted}
