-- Move a state record to another state, with fields (StateStore.set_state / finish).
-- Fenced (fence.lua), with the state prelude (runner.lifecycle): a move the table does not
-- give this script is refused and nothing is written (a record that is absent is never
-- made here: it would look claimed).
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the active set (ksr:active).
-- ARGV[1] term or '', ARGV[2] message id, ARGV[3] the target state,
-- ARGV[4] TTL in seconds (a terminal target), ARGV[5..] field/value pairs.
-- A terminal target also SREMs the id from the active set and EXPIREs the record (kept for
-- late duplicates). (Recording the Job is record_job.lua.)
-- Returns {'OK'} | {'ILLEGAL', current state or ''}.
local cur = redis.call('HGET', KEYS[2], 'state')
if not legal(cur, ARGV[3]) then return {'ILLEGAL', cur or ''} end
redis.call('HSET', KEYS[2], 'state', ARGV[3], unpack(ARGV, 5))
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
if is_terminal(ARGV[3]) then
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {'OK'}
