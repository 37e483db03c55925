-- The Job exists: record it, join the active set and mark its callback 0, in one step
-- (StateStore.record_job). Fenced (fence.lua), with the state prelude (runner.lifecycle),
-- lib_mark.lua and lib_owner.lua: recording over a record the table does not let become
-- `created` (one that has its Job already, or has ended) is refused and nothing is written.
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the active set (ksr:active), KEYS[4] the
-- owed-callbacks sorted set, KEYS[5] the events stream (KEYS[4], KEYS[5]: any key when not used).
-- ARGV[1] term or '', ARGV[2] message id, ARGV[3] the RQ job id proposed as the message's
-- courier ('' starts none), ARGV[4] its lease (ms),
-- ARGV[5..12+n] the mark (lib_mark.lua, at 5; ARGV[5] '' records without marking), then the
-- record's field/value pairs (without `state`: the script writes it). With lib_owner.lua: a
-- first mark takes the owner lease for the proposed job when nobody holds it.
-- The record is PERSISTed: a live Job's record must not expire.
-- Returns {'OK', 1 when this call marked the callback | 0, the job id granted or ''};
-- {'ILLEGAL', current state} when refused.
local at = 5
local cur = redis.call('HGET', KEYS[2], 'state')
if not legal(cur, STATE.CREATED) then return {'ILLEGAL', cur or ''} end
redis.call('HSET', KEYS[2], 'state', STATE.CREATED, unpack(ARGV, at + 8 + tonumber(ARGV[at + 7])))
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PERSIST', KEYS[2])
local first = 0
if ARGV[at] ~= '' then first = mark(KEYS[2], KEYS[4], KEYS[5], at) end
local granted = ''
if first == 1 and ARGV[3] ~= '' then
  granted = take(KEYS[2], KEYS[4], ARGV[at + 4], ARGV[3], string.sub(ARGV[at], 4), tonumber(ARGV[4]), -1) or ''
end
return {'OK', first, granted}
