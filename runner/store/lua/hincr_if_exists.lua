-- HINCRBY on a hash that already exists, never creating it (see hset_if_exists.lua): the
-- courier counts each callback attempt in the state record before making it.
-- KEYS[1] the state record. ARGV[1] the field.
-- Returns the new count, or 0 when the record is absent.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
return 0
