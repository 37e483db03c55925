-- HSET on a hash that already exists, never creating it: the callback side writes its
-- outcome and chain fields only into a state record the runner made (one made here would
-- look like a claimed message to claim.lua).
-- KEYS[1] the state record. ARGV: field/value pairs.
-- Returns 1 when written, 0 when the record is absent.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0
