-- Prelude, put in front of a script by the loader (`uses`): the owner lease of a message's
-- callbacks (docs/callbacks.md, "One owner"). The state record's field `cb_owner` holds
-- "<token> <deadline ms> <since ms>": the RQ job id that alone may deliver the message's
-- callbacks, until when its lease holds, and when it was granted or last renewed. Only the
-- scripts of this prelude write it, and they judge time by Redis's own TIME (one clock for
-- every worker and leader). No KEYS[1] or ARGV of its own: the functions take them as
-- arguments (the record key, the owed index and its member, the score of that member in
-- seconds). Returns nothing itself; see each function:
-- owner(record) -> token, deadline, since (nil when nobody holds it)
-- take(record, owed, member, proposed, status, lease_ms, older_than_ms) -> token granted,
--   or nil and the holder's token. A lease is free when absent or past its deadline, or
--   (older_than_ms >= 0) granted or renewed at least that long ago.
-- hold(record, owed, member, token, status, deadline, now) writes the lease, names the job
--   as status's latest (cbj_<s>; not when status is nil) and scores the owed member at the
--   deadline (seconds).
-- fresh(record, proposed, status, current) -> a job id never used for this message: the
--   proposed one, or it with a `:<n>` suffix when it is the holder's or status's latest.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function owner(record)
  local value = redis.call('HGET', record, 'cb_owner')
  if not value then return nil end
  local token, deadline, since = string.match(value, '^(%S+) (%d+) (%d+)$')
  if not token then return nil end
  return token, tonumber(deadline), tonumber(since)
end
local function hold(record, owed, member, token, status, deadline, now)
  redis.call('HSET', record, 'cb_owner', token .. ' ' .. deadline .. ' ' .. now)
  if status then redis.call('HSET', record, 'cbj_' .. status, token) end
  if member ~= '' then redis.call('ZADD', owed, deadline / 1000, member) end
end
local function fresh(record, proposed, status, current)
  if proposed == current or redis.call('HGET', record, 'cbj_' .. status) == proposed then
    return proposed .. '_3a' .. redis.call('HINCRBY', record, 'cb_seq', 1)
  end
  return proposed
end
local function take(record, owed, member, proposed, status, lease_ms, older_than_ms)
  local now = now_ms()
  local token, deadline, since = owner(record)
  if token and deadline > now and not (older_than_ms >= 0 and since <= now - older_than_ms) then
    if member ~= '' then redis.call('ZADD', owed, deadline / 1000, member) end  -- look again then
    return nil, token
  end
  local granted = fresh(record, proposed, status, token)
  hold(record, owed, member, granted, status, now + lease_ms, now)
  return granted
end
