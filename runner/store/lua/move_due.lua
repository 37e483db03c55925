-- Move due delayed messages into their stream (ScheduledStore.move_due). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] <stream>:scheduled, KEYS[3] <stream>:scheduled:payloads, KEYS[4] the stream.
-- ARGV[1] term or '', ARGV[2] now (ms), ARGV[3] the most to move.
-- XADD and removal happen together, so a takeover loses none and moves none twice. The new
-- entry carries `scheduled_for` (the due ms): the dispatcher runs it instead of holding it again.
-- Returns {'OK', number moved}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[3], id)
  if payload then
    redis.call('XADD', KEYS[4], '*', 'payload', payload, 'scheduled_for', redis.call('ZSCORE', KEYS[2], id))
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return {'OK', moved}
