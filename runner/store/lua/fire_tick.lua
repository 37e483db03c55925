-- Fire one tick of a recurring schedule (runner.schedules.ticker). Fenced (fence.lua).
-- KEYS[1] term key, KEYS[2] the last-fired hash (ksr:schedules:last), KEYS[3] the target stream.
-- ARGV[1] term or '', ARGV[2] entry name, ARGV[3] tick (ms), ARGV[4] payload or '' (skip:
-- only remember the tick), ARGV[5] tolerance (ms).
-- A tick at or before the last one remembered is never fired again, and the XADD and the
-- remembering go together: a failover gives one message per tick.
-- A tick more than the tolerance ahead of Redis's own TIME comes from a caller whose clock
-- is ahead: refused, so that it is neither fired nor remembered (remembered, it would hold
-- back every real tick until the real time caught up).
-- Returns {'OK', 1 fired | 0 remembered only | -1 already done} or {'AHEAD', Redis's TIME in ms}.
local last = redis.call('HGET', KEYS[2], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then return {'OK', -1} end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(ARGV[3]) > now_ms + tonumber(ARGV[5]) then return {'AHEAD', now_ms} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] == '' then return {'OK', 0} end
redis.call('XADD', KEYS[3], '*', 'payload', ARGV[4])
return {'OK', 1}
