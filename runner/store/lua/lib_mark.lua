-- Prelude, put in front of a script by the loader (runner/store/scripts.py, `uses`): the
-- callback mark that mark_callback.lua and record_job.lua share. The KEYS[1] of the caller
-- is the term key and ARGV[1] its term (fence.lua); the mark's arguments start at ARGV[at]:
--   ARGV[at] the mark field (cb_<s>), ARGV[at+1] now (ms), ARGV[at+2] the detail field,
--   ARGV[at+3] the detail JSON, ARGV[at+4] owed member or '' (not indexed: no webhook),
--   ARGV[at+5] its score, ARGV[at+6] the events stream's MAXLEN (approximate),
--   ARGV[at+7] n, the number of the event's field/value items (0: no event),
--   ARGV[at+8 .. at+7+n] those items.
-- mark(record, owed, events, at) Returns 1 for the first caller (who then enqueues the
-- callback), else 0. The mark, the detail kept for recovery, the owed-index entry and the
-- event go together: a callback marked sent is findable until it finishes, and its event
-- is written once. event(events, at) appends the event alone.
local function event(events, at)
  local n = tonumber(ARGV[at + 7])
  if n > 0 then
    redis.call('XADD', events, 'MAXLEN', '~', ARGV[at + 6], '*', unpack(ARGV, at + 8, at + 7 + n))
  end
end
local function mark(record, owed, events, at)
  local first = redis.call('HSETNX', record, ARGV[at], ARGV[at + 1])
  if first == 1 then
    redis.call('HSET', record, ARGV[at + 2], ARGV[at + 3])
    if ARGV[at + 4] ~= '' then redis.call('ZADD', owed, ARGV[at + 5], ARGV[at + 4]) end
    event(events, at)
  end
  return first
end
