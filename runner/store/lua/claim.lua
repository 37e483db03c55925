-- Claim a message id set-if-absent (StateStore.claim). Fenced (fence.lua), with the
-- state prelude (runner.lifecycle).
-- KEYS[1] term key, KEYS[2] the state record ksr:msg:<id>.
-- ARGV[1] term or '', ARGV[2] stream, ARGV[3] entry id, ARGV[4] now (ms).
-- Returns {'NEW' | 'DUPLICATE' | 'RESUME', HGETALL of the record}: NEW when the record was
-- absent (now created with state=claimed), DUPLICATE when a Job is recorded or the state
-- is terminal, RESUME when claimed earlier without a Job. Field names: runner/store/record.py.
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'state', STATE.CLAIMED, 'stream', ARGV[2], 'entry_id', ARGV[3],
             'claimed_at', ARGV[4])
  if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
  return {'NEW', redis.call('HGETALL', KEYS[2])}
end
local state = redis.call('HGET', KEYS[2], 'state')
if redis.call('HEXISTS', KEYS[2], 'job_name') == 1 or is_terminal(state) then
  return {'DUPLICATE', redis.call('HGETALL', KEYS[2])}
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
return {'RESUME', redis.call('HGETALL', KEYS[2])}
