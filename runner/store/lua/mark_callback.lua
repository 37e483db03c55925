-- Mark a callback sent, first caller wins (StateStore.mark_callback), and with callback 1
-- move the record to running, with a terminal one to its end, in the same step
-- (StateStore.start_with_callback, finish_with_callback).
-- Fenced (fence.lua), with the state prelude, lib_mark.lua and lib_owner.lua.
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the owed-callbacks sorted set, KEYS[4]
-- the events stream (KEYS[3], KEYS[4]: any key when not used), KEYS[5] the active set.
-- ARGV[1] term or '', ARGV[2] the RQ job id proposed as the message's courier ('' starts
-- none), ARGV[3] its lease (ms), ARGV[4..] the mark (lib_mark.lua, at 4). With lib_owner.lua: the first caller takes the owner lease for the
-- proposed job when nobody holds it (lib_owner.lua `take`).
-- After the mark's n event items, at h = at+8+n: ARGV[h] the message's webhook URL or '':
-- kept in the record when it has none (a record written before the message was read, by a
-- cancel, or a create refused for good), since the courier reads the URL from the record.
-- The tracker passes it only then: '' costs nothing.
-- ARGV[h+1] the state to move to, or '' (a mark alone); ARGV[h+2] the message id,
-- ARGV[h+3] the TTL in seconds for a terminal state, '' for a live one (running: the record
-- stays active, without a TTL), ARGV[h+4..] field/value pairs. The move is checked first: a
-- record the table does not let end there (ended already, by a cancel) gets neither the
-- mark nor the event. ARGV[at] '' moves without marking (StateStore.finish). With it, the final event and the terminal record are one write: a
-- producer that read the event never reads the record still running.
-- Without a record the event is still appended (nothing can own the callback: not sent).
-- Returns {'MISSING'} without a record, {'ILLEGAL', current state} for a refused move, else
-- {'OK', 1 for the first caller | 0, the job id granted or ''}.
local at = 4
if redis.call('EXISTS', KEYS[2]) == 0 then
  event(KEYS[4], at)
  return {'MISSING'}
end
local h = at + 8 + tonumber(ARGV[at + 7])
local target = ARGV[h + 1]
if target and target ~= '' then
  local cur = redis.call('HGET', KEYS[2], 'state')
  if not legal(cur, target) then return {'ILLEGAL', cur or ''} end
end
local hook = ARGV[h]
if hook and hook ~= '' then redis.call('HSETNX', KEYS[2], 'webhook', hook) end
local first = 0
if ARGV[at] ~= '' then first = mark(KEYS[2], KEYS[3], KEYS[4], at) end
local granted = ''
if first == 1 and ARGV[2] ~= '' then
  granted = take(KEYS[2], KEYS[3], ARGV[at + 4], ARGV[2], string.sub(ARGV[at], 4), tonumber(ARGV[3]), -1) or ''
end
if target and target ~= '' then
  redis.call('HSET', KEYS[2], 'state', target, unpack(ARGV, h + 4))
  if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
  if ARGV[h + 3] ~= '' then
    redis.call('SREM', KEYS[5], ARGV[h + 2])
    redis.call('EXPIRE', KEYS[2], ARGV[h + 3])
  end
end
return {'OK', first, granted}
