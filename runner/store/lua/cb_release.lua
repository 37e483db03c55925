-- The owner found nothing owed: it releases the lease, unless a status was marked since it
-- read the record (then it goes on). With lib_owner.lua.
-- KEYS[1] the state record.
-- ARGV[1] the owner's job id, ARGV[2] how many statuses were marked (cb_<s> fields) in the
-- record it read, ARGV[3] lease (ms) when it goes on.
-- Returns {'LOST'} when ARGV[1] does not hold the lease, {'RELEASED'}, or {'MORE', HGETALL
-- of the record} with the lease extended.
local token = owner(KEYS[1])
if token ~= ARGV[1] then return {'LOST'} end
local marked = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.match(name, '^cb_%d+$') then marked = marked + 1 end
end
if marked == tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], 'cb_owner')
  return {'RELEASED'}
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'cb_owner', token .. ' ' .. (now + tonumber(ARGV[3])) .. ' ' .. now)
return {'MORE', redis.call('HGETALL', KEYS[1])}
