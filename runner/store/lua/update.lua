-- Write fields of a state record (StateStore.set_state / finish). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the active set (ksr:active).
-- ARGV[1] term or '', ARGV[2] message id, ARGV[3] mode: set | finish,
-- ARGV[4] TTL in seconds (finish), ARGV[5..] field/value pairs.
-- finish: also SREM it from the active set and EXPIRE the record (kept for late duplicates).
-- (Recording the Job is record_job.lua.)
-- Returns {'OK'}.
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
if ARGV[3] == 'finish' then
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {'OK'}
