-- Hold a delayed message until it is due (ScheduledStore.schedule). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the stream's sorted set <stream>:scheduled (id by due ms),
-- KEYS[3] its payload hash <stream>:scheduled:payloads, KEYS[4] the state record ksr:msg:<id>.
-- ARGV[1] term or '', ARGV[2] message id, ARGV[3] due (ms), ARGV[4] payload.
-- Returns {'KNOWN'} when the id has a state record (a duplicate or a cancelled id: the
-- dispatcher's claim decides), else {'OK', 1 when held now | 0 when already held}.
-- A `dead` record without a Job is no duplicate (claim.lua): the id is held afresh, and the
-- record of the dead letter goes, so the id reads as scheduled.
if redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('HGET', KEYS[4], 'state') ~= 'dead' or redis.call('HEXISTS', KEYS[4], 'job_name') == 1 then
    return {'KNOWN'}
  end
  redis.call('DEL', KEYS[4])
end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[4]) == 0 then return {'OK', 0} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return {'OK', 1}
