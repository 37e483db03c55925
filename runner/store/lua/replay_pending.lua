-- Replay a pending entry (runner.pipeline.replay.replay_pending): re-add its fields to the end
-- of its stream and XACK the old one, in one step, so the new entry starts with a fresh
-- delivery counter. The entry must still be pending (and idle enough) when the script runs:
-- one the leader acked in the meantime is left alone. One whose stream entry is gone is
-- only acked.
-- KEYS[1] the stream. ARGV[1] group, ARGV[2] entry id, ARGV[3] minimum idle ms (0: any).
-- Returns {'REPLAYED', new id} | {'GONE', ''} | {'NOTPENDING', ''}.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), ARGV[2], ARGV[2], 1)
if #p == 0 then return {'NOTPENDING', ''} end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return {'GONE', ''}
end
local id = redis.call('XADD', KEYS[1], '*', unpack(found[1][2]))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return {'REPLAYED', id}
