-- Fire one tick of a recurring schedule (runner.schedules.beat). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the last-fired hash (ksr:schedules:last), KEYS[3] the target stream.
-- ARGV[1] term or '', ARGV[2] entry name, ARGV[3] tick (ms), ARGV[4] payload or '' (skip:
-- only remember the tick).
-- A tick at or before the last one remembered is never fired again, and the XADD and the
-- remembering go together: a failover gives one message per tick.
-- Returns {'OK', 1 fired | 0 remembered only | -1 already done}.
local last = redis.call('HGET', KEYS[2], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then return {'OK', -1} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] == '' then return {'OK', 0} end
redis.call('XADD', KEYS[3], '*', 'payload', ARGV[4])
return {'OK', 1}
