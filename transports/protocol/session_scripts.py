"""The Lua scripts of the shared session store (``shared_sessions.RedisSessionStore``): each change to a
session's keys in Redis is one round trip and atomic.

What a session owns in Redis (``<prefix>`` is GATEWAY_REDIS_PREFIX and a colon): its record ``s:<id>``, its
entries in the counts ``all`` and ``u:<user>``, the logs of its streams ``e:<id>:<stream>`` (each with its
counter ``:n``, readers ``:r``, and for a request stream its runner ``:w`` and orphan mark ``:wx``), the index of
those logs ``e:<id>`` and its notification claims ``c:<id>``. Ending a session (``_END``), or finding it expired
when a session is made (``_CREATE``), deletes them all at once; each also expires on its own.
"""

# KEYS: log, counter, readers, runner, the session's record, its index of logs; ARGV: field, payload, ttl, keep,
# last ("1": also end the stream), runner (a request stream's: who runs the request and its id, JSON; '' for
# none), stream id, now. Returns {sequence, readers elsewhere}, {0, 0} when the session has ended (a call that
# outlived it writes nothing: its logs would outlive it). The index lists the session's logs by their latest
# event, so that ending the session deletes them (those older than the ttl have expired and are pruned).
_APPEND = """
if redis.call('EXISTS', KEYS[5]) == 0 then return {0, 0} end
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], n .. '-1', ARGV[1], ARGV[2])
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[1], (redis.call('INCR', KEYS[2])) .. '-1', 'd', '1')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[3])
end
if n == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', tonumber(ARGV[8]) - tonumber(ARGV[3]))
end
redis.call('ZADD', KEYS[6], ARGV[8], ARGV[7])
redis.call('EXPIRE', KEYS[6], ARGV[3])
return {n, redis.call('EXISTS', KEYS[3])}
"""

# Deletes what a session owns besides its record and its entries in the counts: its logs (the standalone
# stream's, and those its index lists, each with its counter, readers, runner and orphan marks), the index and
# its notification claims. The key names follow from the prefix and the session id, no SCAN.
_DROP = """
local function drop(prefix, sid)
  local base = prefix .. 'e:' .. sid
  -- 'g': the standalone stream (sessions.STANDALONE_STREAM_ID), whose readers' key may exist without a log
  local keys = {base, prefix .. 'c:' .. sid, base .. ':g', base .. ':g:n', base .. ':g:r'}
  for _, stream in ipairs(redis.call('ZRANGE', base, 0, -1)) do
    local log = base .. ':' .. stream
    for _, key in ipairs({log, log .. ':n', log .. ':r', log .. ':w', log .. ':wx'}) do keys[#keys + 1] = key end
    if #keys >= 500 then
      redis.call('UNLINK', unpack(keys))
      keys = {}
    end
  end
  if #keys > 0 then redis.call('UNLINK', unpack(keys)) end
end
"""

# KEYS: the record, all sessions; ARGV: prefix, session id, its user ('' when not known here). Ends a session
# with everything it owns; returns 1 when its record was still there.
_END = (
    _DROP
    + """
local user = ARGV[3]
if user == '' then user = redis.call('HGET', KEYS[1], 'u') end
local existed = redis.call('UNLINK', KEYS[1])
drop(ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
if user then redis.call('ZREM', ARGV[1] .. 'u:' .. user, ARGV[2]) end
return existed
"""
)

# KEYS: all sessions, the user's sessions, the record; ARGV: now, expires, most in all, most for the
# user (0: no bound), ttl, session id, prefix, then the record's field/value pairs. Returns 0, or 1 / 2 when
# the deployment's / the user's bound is reached. Sessions that expired since (their record gone; at most 64
# at a time) leave nothing behind: an abandoned session is never deleted by anyone else.
_CREATE = (
    _DROP
    + """
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 64)) do
  if redis.call('EXISTS', ARGV[7] .. 's:' .. sid) == 0 then drop(ARGV[7], sid) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
redis.call('HSET', KEYS[3], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
return 0
"""
)

# KEYS: the record; ARGV: field/value pairs. Writes them only while the session lasts: a request ending after
# its session would otherwise leave a record that never expires.
_SAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: the session's claims; ARGV: the notice's key, now, ttl. 1 for the first replica to claim the notice.
# The claims live in one sorted set per session (the session's end deletes it), pruned of those past the ttl.
_CLAIM = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
CLAIM_SECONDS = 120

SCRIPTS = {"append": _APPEND, "create": _CREATE, "end": _END, "save": _SAVE, "claim": _CLAIM}
