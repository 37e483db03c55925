-- Claim a message id set-if-absent (StateStore.claim). Fenced (fence.lua), with the
-- state prelude (runner.lifecycle).
-- KEYS[1] term key, KEYS[2] the state record ksr:msg:<id>.
-- ARGV[1] term or '', ARGV[2] stream, ARGV[3] entry id, ARGV[4] now (ms),
-- ARGV[5] the record TTL (s).
-- Returns {'NEW' | 'DUPLICATE' | 'RESUME', HGETALL of the record}: NEW when the record was
-- absent or `dead` without a Job (now created with state=claimed), DUPLICATE when a Job is
-- recorded or the state is any other terminal one, RESUME when claimed earlier without a
-- Job. Field names: runner/store/record.py.
-- A claim without a Job whose cancel was requested meanwhile (a leader died after claiming,
-- a create waited out a refusal) ends here, before any create: state=cancelled, the TTL of an
-- ended record, answered DUPLICATE; the dispatcher then sends its 99.
-- A `dead` record without a Job ended a message that never ran (a dead letter): not a
-- duplicate, the claim starts afresh over it (a replay, a corrected message under the id).
local state = redis.call('HGET', KEYS[2], 'state')
if state == STATE.DEAD and redis.call('HEXISTS', KEYS[2], 'job_name') == 0 then
  redis.call('DEL', KEYS[2])
  state = nil
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'state', STATE.CLAIMED, 'stream', ARGV[2], 'entry_id', ARGV[3],
             'claimed_at', ARGV[4])
  if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
  return {'NEW', redis.call('HGETALL', KEYS[2])}
end
if redis.call('HEXISTS', KEYS[2], 'job_name') == 1 or is_terminal(state) then
  return {'DUPLICATE', redis.call('HGETALL', KEYS[2])}
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
if redis.call('HEXISTS', KEYS[2], 'cancel_requested') == 1 and legal(state, STATE.CANCELLED) then
  redis.call('HSET', KEYS[2], 'state', STATE.CANCELLED, 'cancel_stage', 'pending', 'updated_at', ARGV[4],
             'finished_at', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  return {'DUPLICATE', redis.call('HGETALL', KEYS[2])}
end
return {'RESUME', redis.call('HGETALL', KEYS[2])}
