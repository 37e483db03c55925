-- Claim a page of a stream's pending entries for a new leader (StreamReader.take_over),
-- ids only: XAUTOCLAIM JUSTID counts no delivery (redis-py drops the cursor of a JUSTID
-- reply, hence the script). The leader reads the entries from its own pending list next.
-- KEYS[1] the stream. ARGV[1] group, ARGV[2] consumer, ARGV[3] cursor, ARGV[4] page size.
-- Returns XAUTOCLAIM's reply: {next cursor, claimed ids, deleted ids (Redis 7)}.
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'COUNT', tonumber(ARGV[4]), 'JUSTID')
