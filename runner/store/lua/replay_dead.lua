-- Replay a dead entry (runner.store.deadletter.replay_dead): read it, XADD its payload and
-- field:<name> fields back to the original stream, XDEL the dead entry, in one step, so two
-- operators replaying at once give one entry.
-- KEYS[1] the original stream, KEYS[2] its dead-letter stream. ARGV[1] the dead entry id.
-- Returns the new entry id, false when the dead entry does not exist, or the error
-- 'WRONGSTREAM ...' when the dead entry came from another stream.
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #found == 0 then return false end
local f = found[1][2]
local out, extra, origin = {}, {}, nil
for i = 1, #f, 2 do
  local k, v = f[i], f[i + 1]
  if k == 'payload' then
    out[#out + 1] = k; out[#out + 1] = v
  elseif k == 'original_stream' then
    origin = v
  elseif string.sub(k, 1, 6) == 'field:' then
    extra[#extra + 1] = string.sub(k, 7); extra[#extra + 1] = v
  end
end
if origin ~= KEYS[1] then
  return redis.error_reply('WRONGSTREAM dead entry came from ' .. tostring(origin))
end
for i = 1, #extra do out[#out + 1] = extra[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(out))
redis.call('XDEL', KEYS[2], ARGV[1])
return id
