-- Fencing prologue, prepended by the loader to every script that writes the state store
-- (see runner/store/scripts.py). KEYS[1]: the term key (ksr:term). ARGV[1]: the caller's
-- term, or '' to skip the check.
-- Returns {'STALE', <stored term>} and stops the script when ARGV[1] is lower than the
-- stored term; otherwise the script that follows runs.
local function stale()
  if ARGV[1] == '' then return nil end
  local cur = redis.call('GET', KEYS[1])
  if cur and tonumber(ARGV[1]) < tonumber(cur) then return cur end
  return nil
end
local s = stale()
if s then return {'STALE', s} end
