-- Raise the stored leader term; it only ever grows (StateStore.advance_term).
-- KEYS[1] term key. ARGV[1] the new term.
-- Returns the stored term after the call.
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(ARGV[1]) > tonumber(cur) then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return cur
