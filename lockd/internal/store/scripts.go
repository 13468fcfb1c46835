package store

import "github.com/redis/go-redis/v9"

// Every state change is one Lua script: Redis runs a script to completion
// before any other command, so check-and-set steps cannot interleave, no
// matter how many lockd replicas send them. Times come from Redis (TIME),
// never from a replica's clock, so replicas with skewed clocks agree.
//
// Lock hash fields: side, client, user, version, token, since and expires
// (ms since the Unix epoch), secret (hex SHA-256 of the holder's secret).
// The key's PTTL matches expires; Redis deletes the key when it runs out.

// prelude is prepended to the lock scripts that read the holder or the
// clock; acquire and release carry only what they call.
const prelude = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- holder returns {side, client, user, version, token, since, expires} or nil.
local function holder(key)
  local h = redis.call('HMGET', key, 'side', 'client', 'user', 'version', 'token', 'since', 'expires')
  if not h[5] or redis.call('PTTL', key) < 0 then return nil end
  return {h[1], h[2], h[3], h[4], tonumber(h[5]), tonumber(h[6]), tonumber(h[7])}
end
` + checkFunc

// checkFunc returns 1 when token and secret match, -1 when the caller's
// grant is gone (expired, released, or the resource was granted again
// since), -2 when the caller is not the holder. One HMGET.
const checkFunc = `
local function check(key, token, secret)
  local h = redis.call('HMGET', key, 'token', 'secret')
  if not h[1] then return -1 end
  if h[1] ~= token then
    if tonumber(h[1]) > tonumber(token) then return -1 end
    return -2
  end
  if h[2] ~= secret then return -2 end
  return 1
end
`

// acquireScript grants the lock when it is free.
// KEYS[1] lock hash, KEYS[2] the clinic's fencing hash.
// ARGV resource, side, client, user, version, secret hash, ttl ms.
// Returns {1, token, since, expires, saved version} or {0, holder}.
//
// The fencing token is the resource's last token + 1, floored at Redis's
// clock in microseconds: should Redis lose recent writes (a restart without
// AOF, a failover), tokens still never go back to ones already handed out.
// Microseconds stay below 2^53 (exact in JSON numbers) until the year 2255.
//
// Trimmed to what fencing needs: six Redis calls (HMGET the lock, TIME, one
// HMGET of the last token and the saved version, HSET the counter, HSET the
// lock, PEXPIRE), where it used eight (no PTTL: every lock hash is written
// with its expiry in the same script, and Redis treats a key whose time has
// passed as absent inside a script; one HMGET instead of two HGETs on the
// fencing hash), and no helper functions it does not call.
var acquireScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'side', 'client', 'user', 'version', 'token', 'since', 'expires')
if h[5] then
  return {0, {h[1], h[2], h[3], h[4], tonumber(h[5]), tonumber(h[6]), tonumber(h[7])}}
end
local t = redis.call('TIME')
local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(us / 1000)
local f = redis.call('HMGET', KEYS[2], ARGV[1], ARGV[1] .. '#saved')
local token = string.format('%d', math.max(tonumber(f[1] or 0) + 1, us))
local expires = now + tonumber(ARGV[7])
redis.call('HSET', KEYS[2], ARGV[1], token)
redis.call('HSET', KEYS[1], 'side', ARGV[2], 'client', ARGV[3], 'user', ARGV[4],
  'version', ARGV[5], 'token', token, 'since', string.format('%d', now),
  'expires', string.format('%d', expires), 'secret', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return {1, tonumber(token), now, expires, f[2] or ''}
`)

// renewScript extends the holder's lock.
// KEYS[1] lock hash. ARGV token, secret hash, ttl ms.
// Returns {1, expires} or {-1} (expired) or {-2} (not yours).
var renewScript = redis.NewScript(prelude + `
local ok = check(KEYS[1], ARGV[1], ARGV[2])
if ok ~= 1 then return {ok} end
local expires = nowms() + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'expires', string.format('%d', expires))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, expires}
`)

// releaseScript deletes the holder's lock. The fencing counter stays; a
// saved version, when given, is kept for the next grant (field
// "<resource>#saved" of the clinic's fencing hash).
// KEYS[1] lock hash, KEYS[2] fencing hash. ARGV token, secret hash,
// resource, saved version (” for none). Returns {1}, {-1} or {-2}.
var releaseScript = redis.NewScript(checkFunc + `
local ok = check(KEYS[1], ARGV[1], ARGV[2])
if ok ~= 1 then return {ok} end
redis.call('DEL', KEYS[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[3] .. '#saved', ARGV[4]) end
return {1}
`)

// inspectScript reads the lock and the last token in one consistent view.
// KEYS[1] lock hash, KEYS[2] fencing hash. ARGV resource.
// Returns {1, last, holder} or {0, last}.
var inspectScript = redis.NewScript(prelude + `
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or 0)
local cur = holder(KEYS[1])
if cur then return {1, last, cur} end
return {0, last}
`)

// forceReleaseScript deletes the lock whoever holds it.
// KEYS[1] lock hash. Returns {1, holder} or {0}.
var forceReleaseScript = redis.NewScript(prelude + `
local cur = holder(KEYS[1])
if not cur then return {0} end
redis.call('DEL', KEYS[1])
return {1, cur}
`)

// Node leases share their key scheme with shared/ids.LeaseCloudNode:
// <prefix>node:<n> exists while n is leased, and n is not leased while
// <prefix>node:<n>:cooldown exists. lockd keeps the cooldown key alive for
// the lease TTL plus the quarantine on every lease and renewal, so an id
// that simply expires (its holder died or lost Redis) stays quarantined as
// long as one that was released.
//
// <prefix>nodes:epoch records when Redis first served a lease. If it is
// missing, Redis lost its data (or this is the first lease ever), and the
// leases held before are unknown: no id is handed out until every such
// lease has expired and been quarantined.

const nodePrelude = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- check returns 1 when the lease exists with this secret, -1 when it is
-- gone, -2 when it belongs to someone else (including a lease taken
-- directly with shared/ids, which stores a string).
local function check(key, secret)
  local typ = redis.call('TYPE', key)['ok']
  if typ == 'none' then return -1 end
  if typ ~= 'hash' or redis.call('HGET', key, 'secret') ~= secret then return -2 end
  return 1
end
`

// leaseNodeScript leases the lowest free cloud node id.
// KEYS[1] epoch key. ARGV node prefix, min, max, secret hash, owner, ttl ms,
// quarantine ms. Returns {1, node, expires} or {0, retry after ms}.
var leaseNodeScript = redis.NewScript(nodePrelude + `
local now = nowms()
local ttl, q = tonumber(ARGV[6]), tonumber(ARGV[7])
local epoch = tonumber(redis.call('GET', KEYS[1]) or 0)
if epoch == 0 then
  epoch = now
  redis.call('SET', KEYS[1], string.format('%d', now))
end
if now < epoch + ttl + q then return {0, epoch + ttl + q - now} end
for n = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local key = ARGV[1] .. 'node:' .. string.format('%d', n)
  if redis.call('EXISTS', key, key .. ':cooldown') == 0 then
    redis.call('HSET', key, 'secret', ARGV[4], 'owner', ARGV[5], 'since', string.format('%d', now))
    redis.call('PEXPIRE', key, ttl)
    redis.call('SET', key .. ':cooldown', '1', 'PX', ttl + q)
    return {1, n, now + ttl}
  end
end
return {0, ttl}
`)

// renewNodeScript extends a node lease and its quarantine.
// KEYS[1] lease key, KEYS[2] cooldown key. ARGV secret hash, ttl ms,
// quarantine ms. Returns {1, expires}, {-1} or {-2}.
var renewNodeScript = redis.NewScript(nodePrelude + `
local ok = check(KEYS[1], ARGV[1])
if ok ~= 1 then return {ok} end
local ttl = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], '1', 'PX', ttl + tonumber(ARGV[3]))
return {1, nowms() + ttl}
`)

// releaseNodeScript ends a node lease; the id stays quarantined.
// KEYS[1] lease key, KEYS[2] cooldown key. ARGV secret hash, quarantine ms.
// Returns {1, quarantined until}, {-1} or {-2}.
var releaseNodeScript = redis.NewScript(nodePrelude + `
local ok = check(KEYS[1], ARGV[1])
if ok ~= 1 then return {ok} end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return {1, nowms() + tonumber(ARGV[2])}
`)
