"""What ksr_client shares with the runner: names, defaults and the cancel script.

Generated from the runner's declarations by `python -m runner.client --write-contract`; do not edit.
"""

DEFAULTS = {'REDIS_URL': 'redis://127.0.0.1:6379/0', 'KSR_STREAMS': 'ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low', 'KSR_GROUP': 'ksr', 'KSR_EVENTS_STREAM': 'ksr:events', 'CACHE_JOB_KEY_PREFIX': 'ksr:msg:', 'KSR_STATE_TTL': '604800', 'KSR_MAX_MESSAGE_BYTES': '65536'}

FIELD_STATE = 'state'
FIELD_STREAM = 'stream'
FIELD_ENTRY_ID = 'entry_id'
FIELD_JOB_NAME = 'job_name'
STATE_DEAD = 'dead'
STATE_EXCEPTION = 'exception'
TERMINAL_STATES = frozenset(['cancelled', 'completed', 'dead', 'exception', 'failed'])
FINAL_STATUSES = frozenset([2, 3, 99])
STATUS_STATES = {2: 'completed', 3: 'failed'}
ERROR_CODE_STATES = {'Cancelled': 'cancelled', 'DeadLettered': 'dead'}
CANCELS_KEY = 'ksr:cancels'
SCHEDULED_SUFFIX = ':scheduled'
PAYLOADS_SUFFIX = ':scheduled:payloads'

CANCEL_LUA = "-- Generated from runner/lifecycle.py for cancel.lua: the states, and the moves of the\n-- record's `state` this script may make. Change the table there, never here.\nlocal STATE = {SCHEDULED = 'scheduled', WAITING = 'waiting', CLAIMED = 'claimed', CREATED = 'created', RUNNING = 'running', COMPLETED = 'completed', FAILED = 'failed', EXCEPTION = 'exception', CANCELLED = 'cancelled', DEAD = 'dead'}\nlocal TERMINAL = {['cancelled'] = true, ['completed'] = true, ['dead'] = true, ['exception'] = true, ['failed'] = true}\nlocal MOVES = {[''] = {['cancelled'] = true}}\nlocal function is_terminal(state) return state and TERMINAL[state] == true or false end\nlocal function legal(from, to)\n  local row = MOVES[from or '']\n  return row ~= nil and row[to or ''] == true\nend\n-- Cancel a message wherever it is (ScheduledStore.cancel); not fenced: any process may ask,\n-- and every write here is one the leader's own scripts handle (a cancelled record is terminal).\n-- KEYS[1] the state record, KEYS[2] the cancel requests set (ksr:cancels),\n-- KEYS[3..] for each stream its <stream>:scheduled and <stream>:scheduled:payloads.\n-- With the state prelude (runner.lifecycle).\n-- ARGV[1] message id, ARGV[2] now (ms), ARGV[3] record TTL (s), ARGV[4..] the stream names,\n-- in the order of KEYS[3..].\n-- Returns {'FINISHED', state} | {'CANCELLED', 'scheduled' | 'pending'} | {'REQUESTED', state}.\n--   requested (a record that has not ended: claimed, created, running): the leader ends it\n--     (runner.pipeline.cancels, or the claim before any Job is created) and sends the 99. A\n--     held copy under the same id is a duplicate of that message: dropped here, so it neither\n--     comes back nor turns the cancel into a cancel of the held copy.\n--   scheduled (no record, held): removed from its set; the record says cancelled and the\n--     leader sends the 99.\n--   pending (no record: not read yet, or unknown): a cancelled record, so the dispatcher acks\n--     the entry without a Job and sends the 99 when it reads it.\nlocal state = redis.call('HGET', KEYS[1], 'state')\nif is_terminal(state) then return {'FINISHED', state} end\nif state then\n  for i = 3, #KEYS, 2 do\n    redis.call('ZREM', KEYS[i], ARGV[1])\n    redis.call('HDEL', KEYS[i + 1], ARGV[1])\n  end\n  redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[2])\n  redis.call('SADD', KEYS[2], ARGV[1])\n  return {'REQUESTED', state}\nend\nfor i = 3, #KEYS, 2 do\n  local payload = redis.call('HGET', KEYS[i + 1], ARGV[1])\n  if payload then\n    redis.call('ZREM', KEYS[i], ARGV[1])\n    redis.call('HDEL', KEYS[i + 1], ARGV[1])\n    local hook = ''\n    local ok, doc = pcall(cjson.decode, payload)\n    if ok and type(doc) == 'table' and type(doc.webhook) == 'table' and type(doc.webhook.url) == 'string' then\n      hook = doc.webhook.url\n    end\n    redis.call('HSET', KEYS[1], 'state', STATE.CANCELLED, 'cancel_stage', 'scheduled', 'cancelled_at', ARGV[2],\n               'stream', ARGV[4 + (i - 3) / 2], 'webhook', hook)\n    redis.call('EXPIRE', KEYS[1], ARGV[3])\n    redis.call('SADD', KEYS[2], ARGV[1])\n    return {'CANCELLED', 'scheduled'}\n  end\nend\nredis.call('HSET', KEYS[1], 'state', STATE.CANCELLED, 'cancel_stage', 'pending', 'cancelled_at', ARGV[2])\nredis.call('EXPIRE', KEYS[1], ARGV[3])\nreturn {'CANCELLED', 'pending'}\n"
