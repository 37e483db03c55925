-- The owner hands its lease to the RQ job that goes on after it (a retry, a move to the
-- slow lane, a turn that must wait for its time): the successor is named owner before it
-- is enqueued, so it finds itself the owner when it runs. With lib_owner.lua.
-- KEYS[1] the state record, KEYS[2] the owed index.
-- ARGV[1] the owner's job id, ARGV[2] the proposed successor job id, ARGV[3] the status it
-- goes on with, ARGV[4] the owed member of that status, ARGV[5] when the successor may start
-- (ms, by the caller's clock; 0: now), ARGV[6] lease (ms) counted from then, ARGV[7] '1' to
-- name the successor the status's latest job (cbj_<s>: a new attempt or lane), '' when it
-- only goes on with the same attempt later (a job RQ started before its time).
-- Returns {'LOST'} when ARGV[1] no longer holds the lease, else {'OK', the successor's id}.
local token = owner(KEYS[1])
if token ~= ARGV[1] then return {'LOST'} end
local now = now_ms()
local start = math.max(now, tonumber(ARGV[5]))
local successor = fresh(KEYS[1], ARGV[2], ARGV[3], token)
hold(KEYS[1], KEYS[2], ARGV[4], successor, ARGV[7] == '1' and ARGV[3] or nil, start + tonumber(ARGV[6]), now)
return {'OK', successor}
