-- The owner's step (runner.callbacks.courier): while ARGV[1] holds the lease, extend it and
-- write what the step did. With lib_owner.lua.
-- KEYS[1] the state record, KEYS[2] the owed index.
-- ARGV[1] the owner's job id, ARGV[2] lease (ms), ARGV[3] a field to count (HINCRBY 1: the
-- attempt, cba_<s>, counted before it is made) or '', ARGV[4] the owed member of the status
-- being tried, scored at the new deadline (the leader's recovery looks at it then) or '',
-- ARGV[5] the owed member to remove (the status finished) or '', ARGV[6] '1' to return the
-- record, ARGV[7..] field/value pairs to write (the outcome cbd_<s>, cbd_gone_url).
-- Returns {'LOST'} when the record is gone or another job holds the lease (this one must
-- stop), else {'OK', the count or 0, HGETALL of the record when asked for}.
local token = owner(KEYS[1])
if token ~= ARGV[1] then return {'LOST'} end
local now = now_ms()
local deadline = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'cb_owner', token .. ' ' .. deadline .. ' ' .. now)
local count = 0
if ARGV[3] ~= '' then count = redis.call('HINCRBY', KEYS[1], ARGV[3], 1) end
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], deadline / 1000, ARGV[4]) end
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[2], ARGV[5]) end
if ARGV[6] == '1' then return {'OK', count, redis.call('HGETALL', KEYS[1])} end
return {'OK', count}
