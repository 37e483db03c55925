-- Owe a callback and take the owner lease of its message if nobody holds it
-- (CallbackQueue.enqueue, and the leader's recovery: CallbackQueue.sweep). With lib_owner.lua.
-- KEYS[1] the state record, KEYS[2] the owed index (ksr:callbacks:owed).
-- ARGV[1] the owed member `<status>:<id>`, ARGV[2] the proposed RQ job id, ARGV[3] status,
-- ARGV[4] lease (ms), ARGV[5] older than (ms, or -1: only a lapsed lease is taken over),
-- ARGV[6] now (ms) for cb_<s> when the status was not marked yet, ARGV[7] the webhook URL
-- ('' keeps the record's), ARGV[8] the detail JSON ('' keeps the record's; never replaced
-- once an attempt was made: every attempt sends the same bytes).
-- Returns {'MISSING'} without a record, {'DONE'} when the callback is finished, else
-- {'GRANTED' | 'HELD', the owner's job id, HGETALL of the record}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'MISSING'} end
local status = ARGV[3]
local outcome = redis.call('HGET', KEYS[1], 'cbd_' .. status)
if outcome == 'delivered' or outcome == 'gone' or outcome == 'failed' or outcome == 'expired' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'DONE'}
end
redis.call('HSETNX', KEYS[1], 'cb_' .. status, ARGV[6])
if ARGV[7] ~= '' then redis.call('HSETNX', KEYS[1], 'webhook', ARGV[7]) end
if ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[1], 'cba_' .. status) == 0 then
  redis.call('HSET', KEYS[1], 'detail_' .. status, ARGV[8])
end
local granted, holder = take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], status, tonumber(ARGV[4]), tonumber(ARGV[5]))
if granted then return {'GRANTED', granted, redis.call('HGETALL', KEYS[1])} end
return {'HELD', holder, redis.call('HGETALL', KEYS[1])}
