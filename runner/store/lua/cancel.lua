-- Cancel a message wherever it is (ScheduledStore.cancel); not fenced: any process may ask,
-- and every write here is one the leader's own scripts handle (a cancelled record is terminal).
-- KEYS[1] the state record, KEYS[2] the cancel requests set (ksr:cancels),
-- KEYS[3..] for each stream its <stream>:scheduled and <stream>:scheduled:payloads.
-- With the state prelude (runner.lifecycle).
-- ARGV[1] message id, ARGV[2] now (ms), ARGV[3] record TTL (s), ARGV[4..] the stream names,
-- in the order of KEYS[3..].
-- Returns {'FINISHED', state} | {'CANCELLED', 'scheduled' | 'pending'} | {'REQUESTED', state}.
--   requested (a record that has not ended: claimed, created, running): the leader ends it
--     (runner.pipeline.cancels, or the claim before any Job is created) and sends the 99. A
--     held copy under the same id is a duplicate of that message: dropped here, so it neither
--     comes back nor turns the cancel into a cancel of the held copy.
--   scheduled (no record, held): removed from its set; the record says cancelled and the
--     leader sends the 99.
--   pending (no record: not read yet, or unknown): a cancelled record, so the dispatcher acks
--     the entry without a Job and sends the 99 when it reads it.
local state = redis.call('HGET', KEYS[1], 'state')
if is_terminal(state) then return {'FINISHED', state} end
if state then
  for i = 3, #KEYS, 2 do
    redis.call('ZREM', KEYS[i], ARGV[1])
    redis.call('HDEL', KEYS[i + 1], ARGV[1])
  end
  redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
  return {'REQUESTED', state}
end
for i = 3, #KEYS, 2 do
  local payload = redis.call('HGET', KEYS[i + 1], ARGV[1])
  if payload then
    redis.call('ZREM', KEYS[i], ARGV[1])
    redis.call('HDEL', KEYS[i + 1], ARGV[1])
    local hook = ''
    local ok, doc = pcall(cjson.decode, payload)
    if ok and type(doc) == 'table' and type(doc.webhook) == 'table' and type(doc.webhook.url) == 'string' then
      hook = doc.webhook.url
    end
    redis.call('HSET', KEYS[1], 'state', STATE.CANCELLED, 'cancel_stage', 'scheduled', 'cancelled_at', ARGV[2],
               'stream', ARGV[4 + (i - 3) / 2], 'webhook', hook)
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('SADD', KEYS[2], ARGV[1])
    return {'CANCELLED', 'scheduled'}
  end
end
redis.call('HSET', KEYS[1], 'state', STATE.CANCELLED, 'cancel_stage', 'pending', 'cancelled_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {'CANCELLED', 'pending'}
