-- Write fields of a state record (StateStore.record_job / set_state / finish). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the state record, KEYS[3] the active set (ksr:active).
-- ARGV[1] term or '', ARGV[2] message id, ARGV[3] mode: set | record | finish,
-- ARGV[4] TTL in seconds (finish), ARGV[5..] field/value pairs.
-- record: also SADD the id to the active set and PERSIST (a live Job's record must not expire).
-- finish: also SREM it from the active set and EXPIRE the record (kept for late duplicates).
-- Returns {'OK'}.
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'term', ARGV[1]) end
if ARGV[3] == 'record' then
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('PERSIST', KEYS[2])
elseif ARGV[3] == 'finish' then
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {'OK'}
