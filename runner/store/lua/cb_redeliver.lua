-- An operator's re-delivery of one callback (runner.operate.redeliver): the ended callback
-- of ARGV[3] is owed again and its courier takes the owner lease, in one step, only when
-- nothing of the message is being delivered. With lib_owner.lua. Not fenced: like
-- cb_take.lua it writes only callback fields, guarded by the lease, never `state`.
-- KEYS[1] the state record, KEYS[2] the owed index (ksr:callbacks:owed).
-- ARGV[1] the owed member `<status>:<id>`, ARGV[2] the proposed RQ job id, ARGV[3] status,
-- ARGV[4] lease (ms).
-- Returns, for a refusal (nothing written): {'MISSING'} no record, {'NO_WEBHOOK'}, {'NOT_MARKED'} the
-- status was never owed (cb_<s>), {'GONE', url} the URL answered 410, {'IN_FLIGHT', outcome
-- or ''} its delivery has not ended, {'BUSY', holder} another job holds a live lease.
-- Else {'GRANTED', the courier's job id, the webhook URL}: cbd_<s> is cleared,
-- cbr_<s> = "<attempts before> <now ms>" (the re-delivery's own allowance and horizon).
local record, status = KEYS[1], ARGV[3]
if redis.call('EXISTS', record) == 0 then return {'MISSING'} end
local hook = redis.call('HGET', record, 'webhook')
if not hook or hook == '' then return {'NO_WEBHOOK'} end
if redis.call('HEXISTS', record, 'cb_' .. status) == 0 then return {'NOT_MARKED'} end
local outcome = redis.call('HGET', record, 'cbd_' .. status)
if outcome == 'gone' or redis.call('HGET', record, 'cbd_gone_url') == hook then return {'GONE', hook} end
if outcome ~= 'delivered' and outcome ~= 'failed' and outcome ~= 'expired' then
  return {'IN_FLIGHT', outcome or ''}
end
local now = now_ms()
local holder, deadline = owner(record)
if holder and deadline > now then return {'BUSY', holder} end
local before = tonumber(redis.call('HGET', record, 'cba_' .. status) or '0')
redis.call('HDEL', record, 'cbd_' .. status)
redis.call('HSET', record, 'cbr_' .. status, before .. ' ' .. now)
local granted = take(record, KEYS[2], ARGV[1], ARGV[2], status, tonumber(ARGV[4]), -1)
return {'GRANTED', granted, hook}
