//! One Lua script per algorithm: each decision is a single `EVALSHA`, atomic in Redis, so
//! any number of instances enforce one limit together without a lock or a race between
//! reading the usage and charging it.
//!
//! Every script takes the same arguments and gives the same answer:
//!
//! - `KEYS[1]`: the key's state; `KEYS[2]`: a second key only the sliding log uses;
//!   `KEYS[3]`: the daily quota's counter. All carry the caller's key in a `{hash tag}`, so on
//!   Redis Cluster they share a slot.
//! - `ARGV`: `limit`, `window` (µs), `burst`, `cost`, `daily quota` (0: none; see `Policy`),
//!   `lease` (units wanted, at least `cost`; see `lease.rs`).
//! - Reply: `{allowed (0|1), remaining, reset_after µs, retry_after µs (0 when allowed),
//!   quota remaining (-1: no quota), quota reset_after µs, refused by (0 no, 1 the rate,
//!   2 the quota), units granted}`.
//!
//! A lease asks for more than the request costs: the script charges all `lease` units if the
//! rate and the quota both hold them, else only `cost` (or refuses). Every unit an instance
//! later admits from its lease was thus charged here first, atomically: leases never make
//! Redis admit more than the limit. All or `cost`, never a part in between: simpler, and the
//! caller asks for little once the budget runs low. Each algorithm charges `n` units the way
//! it charges a request of cost `n` (the sliding log as one entry of `n` units), so all five
//! take leases at the price of one call. `remaining` and the quota's count the whole grant.
//!
//! The daily quota is checked in the same call as the rate, so there is no moment when one
//! has charged and the other refuses: a request is charged to both or to neither. The quota
//! is a fixed window of 24 h aligned on Redis's clock (UTC days), checked first; a request it
//! refuses reads the rate's state without charging it (`cost = 0`), for the headers.
//!
//! Time is Redis's own (`TIME`, µs), never the instance's: instances with skewed clocks still
//! agree on every window. (Since Redis 5, scripts replicate their effects, not the script, so
//! a non-deterministic `TIME` before a write is allowed.) A refused request is not charged.
//! Every write sets a TTL that ends when the key no longer matters, so idle keys disappear.
//! Times are µs since the epoch, about 1.8e15: exact in Lua's doubles (up to 2^53).

use crate::config::LimiterAlgorithm;

/// Shared prologue: the arguments and Redis's clock. The algorithm follows as the body of
/// `local function decide(cost)`, which returns the first four numbers of the reply.
const PROLOGUE: &str = r"
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, cost, quota = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local function ttl_ms(us) return math.max(1, math.ceil(us / 1000)) end
local function decide(cost)
";

/// Shared epilogue: the daily quota around the rate. Stores a hash `{d = day index, u = units
/// used that day}` (about 70 bytes a key), expiring at the day's end.
const DAILY_QUOTA: &str = r"
end
-- A lease: charge `want` units (at least `cost`) if they fit, else just `cost`.
local want = math.max(cost, tonumber(ARGV[6]) or cost)
local function grant(want)
  local r = decide(want)
  if r[1] ~= 1 and want > cost then return decide(cost), cost end
  return r, want
end
if quota <= 0 then
  local r, granted = grant(want)
  return {r[1], r[2], r[3], r[4], -1, 0, r[1] == 1 and 0 or 1, r[1] == 1 and granted or 0}
end
local day = 86400000000
local today = math.floor(now / day)
local day_reset = (today + 1) * day - now
local state = redis.call('HMGET', KEYS[3], 'd', 'u')
local used = 0
if tonumber(state[1]) == today then used = tonumber(state[2]) end
if used + cost > quota then
  local r = decide(0)
  local retry = 0
  if cost <= quota then retry = day_reset end
  return {0, r[2], r[3], retry, math.max(0, quota - used), day_reset, 2, 0}
end
if used + want > quota then want = quota - used end
local r, granted = grant(want)
if r[1] == 1 and granted > 0 then
  used = used + granted
  redis.call('HSET', KEYS[3], 'd', today, 'u', used)
  redis.call('PEXPIRE', KEYS[3], ttl_ms(day_reset))
end
return {r[1], r[2], r[3], r[4], quota - used, day_reset, r[1] == 1 and 0 or 1,
        r[1] == 1 and granted or 0}
";

/// Stores a hash `{t = tokens, ts = last update µs}`: two small fields, about 80 bytes a key.
/// Capacity `burst`, refilled continuously at `limit / window`; the key lives until the
/// bucket would be full again.
const TOKEN_BUCKET: &str = r"
local rate = limit / window
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
-- 1e-6 of a token absorbs the rounding of the refill arithmetic.
if tokens + 1e-6 >= cost then
  tokens = math.max(0, tokens - cost)
  local reset = (burst - tokens) / rate
  redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], ttl_ms(reset))
  return {1, math.floor(tokens + 1e-6), math.ceil(reset), 0}
end
return {0, math.floor(tokens + 1e-6), math.ceil((burst - tokens) / rate),
        math.ceil((cost - tokens) / rate)}
";

/// Stores a hash `{w = window index, c = units used in it}`: about 70 bytes a key. Windows
/// are aligned on Redis time (`now / window`), the key expires when its window ends.
const FIXED_WINDOW: &str = r"
local index = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'w', 'c')
local used = 0
if tonumber(state[1]) == index then used = tonumber(state[2]) end
local reset = (index + 1) * window - now
if used + cost <= limit then
  used = used + cost
  redis.call('HSET', KEYS[1], 'w', index, 'c', used)
  redis.call('PEXPIRE', KEYS[1], ttl_ms(reset))
  return {1, limit - used, reset, 0}
end
return {0, limit - used, reset, reset}
";

/// Stores a sorted set with one member per admitted request (`seq:cost`, scored by its
/// admission time in µs) and a hash `{u = units in the log, s = sequence}`: about 20 bytes
/// per admitted request while the set is small (listpack), 60-100 once it is a skiplist, so
/// memory grows with `limit`. Both expire one window after the newest admission.
const SLIDING_LOG: &str = r"
local start = now - window
local units = tonumber(redis.call('HGET', KEYS[2], 'u') or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', start)
if #expired > 0 then
  for _, member in ipairs(expired) do
    units = units - tonumber(string.match(member, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', start)
  if redis.call('ZCARD', KEYS[1]) == 0 then units = 0 end
  redis.call('HSET', KEYS[2], 'u', units)
end
if units + cost <= limit then
  if cost > 0 then
    local seq = redis.call('HINCRBY', KEYS[2], 's', 1)
    redis.call('ZADD', KEYS[1], now, seq .. ':' .. cost)
    units = units + cost
    redis.call('HSET', KEYS[2], 'u', units)
    redis.call('PEXPIRE', KEYS[1], ttl_ms(window))
    redis.call('PEXPIRE', KEYS[2], ttl_ms(window))
  end
  local reset = 0
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #newest > 0 then reset = tonumber(newest[2]) + window - now end
  return {1, limit - units, reset, 0}
end
-- Refused: wait until enough of the oldest admissions have left the window.
local log = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local retry, freed = window, 0
for i = 1, #log, 2 do
  freed = freed + tonumber(string.match(log[i], ':(%d+)$'))
  if units - freed + cost <= limit then
    retry = tonumber(log[i + 1]) + window - now
    break
  end
end
local reset = 0
if #log > 0 then reset = tonumber(log[#log]) + window - now end
return {0, limit - units, reset, math.max(1, retry)}
";

/// Cloudflare's sliding-window counter. Stores a hash `{w = window index, c = units in it,
/// p = units in the previous window}`: about 80 bytes a key. Usage is
/// `p * (1 - elapsed / window) + c`, i.e. it assumes the previous window's requests were
/// spread evenly. The key lives until its current window has also aged out as a previous one.
const SLIDING_WINDOW: &str = r"
local index = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local stored = tonumber(state[1])
local current, previous = 0, 0
if stored == index then
  current, previous = tonumber(state[2]), tonumber(state[3]) or 0
elseif stored == index - 1 then
  previous = tonumber(state[2])
end
local elapsed = now - index * window
local weight = (window - elapsed) / window
local used = previous * weight + current
local function reset_after(c, p)
  if c > 0 then return 2 * window - elapsed end
  if p > 0 then return window - elapsed end
  return 0
end
if used + cost <= limit + 1e-9 then
  current = current + cost
  redis.call('HSET', KEYS[1], 'w', index, 'c', current, 'p', previous)
  redis.call('PEXPIRE', KEYS[1], ttl_ms(2 * window - elapsed))
  return {1, math.floor(limit - used - cost + 1e-9), reset_after(current, previous), 0}
end
-- Refused: when does the previous window's share fall far enough?
local retry
if current + cost <= limit and previous > 0 then
  retry = window * (1 - (limit - current - cost) / previous) - elapsed
elseif cost <= limit and current > 0 then
  retry = window - elapsed + math.max(0, window * (1 - (limit - cost) / current))
else
  retry = window - elapsed
end
return {0, math.max(0, math.floor(limit - used + 1e-9)), reset_after(current, previous),
        math.max(1, math.ceil(retry))}
";

/// The generic cell rate algorithm. Stores one number, the theoretical arrival time (TAT,
/// µs): about 60 bytes a key. Emission interval `T = window / limit`, tolerance
/// `burst * T`: a request of `cost` units passes if `max(TAT, now) + cost * T - burst * T <=
/// now`. The key expires when the TAT is reached (the key is then idle).
const GCRA: &str = r"
local interval = window / limit
local tolerance = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
-- 1e-3 µs absorbs the rounding of fractional intervals.
if allow_at <= now + 1e-3 then
  if cost > 0 then
    redis.call('SET', KEYS[1], new_tat, 'PX', ttl_ms(new_tat - now))
  end
  return {1, math.floor((now + tolerance - new_tat) / interval + 1e-6),
          math.ceil(new_tat - now), 0}
end
return {0, math.max(0, math.floor((now + tolerance - tat) / interval + 1e-6)),
        math.ceil(tat - now), math.ceil(allow_at - now)}
";

/// The script for `algorithm`: prologue, the algorithm, the daily quota.
pub(super) fn source(algorithm: LimiterAlgorithm) -> String {
    let body = match algorithm {
        LimiterAlgorithm::TokenBucket => TOKEN_BUCKET,
        LimiterAlgorithm::FixedWindow => FIXED_WINDOW,
        LimiterAlgorithm::SlidingLog => SLIDING_LOG,
        LimiterAlgorithm::SlidingWindow => SLIDING_WINDOW,
        LimiterAlgorithm::Gcra => GCRA,
    };
    format!("{PROLOGUE}{body}{DAILY_QUOTA}")
}
