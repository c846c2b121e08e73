"""Lua scripts of the Redis session store.

Every script declares all keys it touches in KEYS (one session, one hash tag, one Cluster
slot). KEYS = meta, cur, eps, rank, rets (see `RedisSessionStore.keys`).

The ``#!lua`` shebang (Redis >= 7) makes Redis check OOM / read-only replica *before* a writing
script starts, so a refused script has written nothing. The scripts also validate everything
before their first write: a Lua error after a write would not be rolled back.

Numbers: returns are kept with ``%.17g`` (exact round trip of an IEEE double; Lua's default
``tostring`` keeps only 14 digits). Records and responses arrive as JSON built by Python and are
stored verbatim; a closed episode's JSON is assembled by concatenation (no cjson, whose number
precision is 14 digits).
"""

from __future__ import annotations

# ARGV: ttl_ms ("0" = no expiry), then field/value pairs of the meta hash.
# Returns 1 if created, 0 if the session exists.
CREATE = """#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

# ARGV: ttl_ms. Returns nil if unknown, else {meta hash flat, cur records, eps values, rets}.
LOAD = """#!lua
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local meta = redis.call('HGETALL', KEYS[1])
local cur = redis.call('LRANGE', KEYS[2], 0, -1)
local eps = redis.call('HVALS', KEYS[3])
local rets = redis.call('LRANGE', KEYS[5], 0, -1)
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  for i = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return {meta, rets, cur, eps}
"""

# Read-only (works on replicas, no TTL refresh). KEYS: meta, rets. Returns nil or {meta, rets}.
GET_META = """#!lua flags=no-writes
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# ARGV: step, record_json, response_json, reward ("" = none), done ("1"/"0"), ttl_ms,
# created_at ("" = any incarnation of the session).
# Returns {"missing"} | {"duplicate", response_json} | {"conflict", next_step} | {"appended"}.
APPEND = """#!lua
local meta, cur, eps, rank, rets = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local h = redis.call('HMGET', meta, 'next_step', 'last_step', 'last_response', 'episode',
  'episode_steps', 'episode_return', 'retention_mode', 'retention_count', 'created_at')
if not h[1] then
  return {'missing'}
end
if ARGV[7] ~= '' and tonumber(h[9]) ~= tonumber(ARGV[7]) then
  return {'conflict', h[1]}
end
local ttl = tonumber(ARGV[6])
local function touch()
  if ttl > 0 then
    for i = 1, #KEYS do
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
local step = tonumber(ARGV[1])
if h[2] and h[2] ~= '' and tonumber(h[2]) == step then
  touch()
  -- rewrites a field unchanged: the reply is then ordered after a write in the replication
  -- stream, so a WAIT on this connection also covers the step's original append
  redis.call('HSET', meta, 'last_step', h[2])
  return {'duplicate', h[3] or 'null'}
end
if tonumber(h[1]) ~= step then
  touch()
  return {'conflict', h[1]}
end
local ret = tonumber(h[6])
if ARGV[4] ~= '' then
  ret = ret + tonumber(ARGV[4])
end
if ret ~= ret or ret == math.huge or ret == -math.huge then
  return redis.error_reply('T2MIR_NONFINITE episode return overflowed to a non-finite value')
end
local retstr = string.format('%.17g', ret)
local nexts = string.format('%d', step + 1)
local laststr = string.format('%d', step)
-- validation done: writes start here
if ARGV[5] == '1' then
  local e = tonumber(h[4])
  local estr = string.format('%d', e)
  local items = redis.call('LRANGE', cur, 0, -1)
  items[#items + 1] = ARGV[2]
  local ep = '{"index":' .. estr .. ',"ret":' .. retstr .. ',"records":[' .. table.concat(items, ',') .. ']}'
  local count = tonumber(h[8])
  redis.call('HSET', eps, estr, ep)
  if h[7] == 'last' then
    if e - count >= 0 then
      redis.call('HDEL', eps, string.format('%d', e - count))
    end
  else
    -- member = zero-padded index: among equal scores the lexicographically smallest member,
    -- i.e. the earliest episode, ranks lowest and is evicted first (ties: later wins)
    redis.call('ZADD', rank, retstr, string.format('%015d', e))
    while redis.call('ZCARD', rank) > count do
      local worst = redis.call('ZRANGE', rank, 0, 0)[1]
      redis.call('ZREM', rank, worst)
      redis.call('HDEL', eps, string.format('%d', tonumber(worst)))
    end
  end
  redis.call('DEL', cur)
  redis.call('RPUSH', rets, retstr)
  redis.call('HSET', meta, 'next_step', nexts, 'last_step', laststr, 'last_response', ARGV[3],
    'episode', string.format('%d', e + 1), 'episode_steps', '0', 'episode_return', '0')
else
  redis.call('RPUSH', cur, ARGV[2])
  redis.call('HSET', meta, 'next_step', nexts, 'last_step', laststr, 'last_response', ARGV[3],
    'episode_steps', string.format('%d', tonumber(h[5]) + 1), 'episode_return', retstr)
end
touch()
return {'appended'}
"""
