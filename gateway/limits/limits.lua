-- Every limit of one request in one round trip: sliding windows, paced rates (GCRA) and
-- budget reservations.
--
-- KEYS: per window a sorted set (member "<id>:<weight>", score = admission time in ms) and
--       its running weight sum (a paced rate: its theoretical arrival time in ms, twice);
--       then per budget a hash {spent, held} (nano-USD) and a sorted set of holds
--       (member "<id>:<nano-USD>", score = lease expiry in ms).
-- A call's arguments: op ("admit" | "settle" | "unslice"), now_ms (0 = Redis' own clock), id,
--       #windows, #budgets, lease_ms, then per window and per budget:
--   admit:  window  limit, window_ms, weight, burst (0: sliding)    budget  limit, reserve, ttl_s
--   settle: window  window_ms, old, new, admitted_ms, pace          budget  hold, cost, ttl_s
--   (pace 0: a sliding window; -1: a paced rate Redis decided, nothing to do; > 0: a paced
--    rate decided elsewhere, whose spacing in ms it now takes)
-- admit returns {0, now, per window: remaining, reset_ms, per budget: remaining, hold}
--            or {1, now, window index, retry_ms (-1: larger than the limit itself)}
--            or {2, now, budget index, 1 if spent alone is at the limit else 0}
--   (a budget with less room than the reserve admits only when nothing else is held there)
-- settle returns {now, per budget: spent + held}
-- unslice: window  slice weight, window_ms, weight settled, latest admitted_ms
--          budget  slice hold, cost settled       then how many admissions in flight,
--          and per admission: id, admitted_ms, its weight per window, its hold per budget;
--          KEYS: the windows', the budgets', then the slice's marker; returns {now}
-- One script call runs several of these (one team's keys: one slot); see the end.

local function int(x) return string.format('%.0f', x) end

local function weight_of(member)
  return tonumber(string.match(member, ':(%-?%d+)$')) or 0
end

-- Let `key` live at least `ms` more (never shorten what a later admission set).
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

local function now_ms(arg)
  local given = tonumber(arg)
  if given > 0 then return given end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop the entries scored at or before `cutoff`, keeping the sum right; the sum left.
local function purge(zset, sum, cutoff)
  local old = redis.call('ZRANGEBYSCORE', zset, '-inf', cutoff)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do gone = gone + weight_of(m) end
    redis.call('ZREMRANGEBYSCORE', zset, '-inf', cutoff)
    if redis.call('ZCARD', zset) == 0 then
      redis.call('DEL', sum)
      return 0
    end
    return redis.call('INCRBY', sum, int(0 - gone))  -- not -0: Redis refuses "-0"
  end
  return tonumber(redis.call('GET', sum) or '0')
end

-- When enough of the oldest entries leave the window for `weight` to fit.
local function retry_ms(zset, total, weight, limit, window, now)
  if weight > limit then return -1 end
  local need, freed, start = total + weight - limit, 0, 0
  while true do
    local batch = redis.call('ZRANGE', zset, start, start + 99, 'WITHSCORES')
    if #batch == 0 then return window end
    for i = 1, #batch, 2 do
      freed = freed + weight_of(batch[i])
      if freed >= need then return tonumber(batch[i + 1]) + window - now end
    end
    start = start + 100
  end
end

local function budget_totals(totals, holds, now)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #expired > 0 then
    local gone = 0
    for _, m in ipairs(expired) do gone = gone + weight_of(m) end
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
    redis.call('HINCRBY', totals, 'held', int(0 - gone))
  end
  local v = redis.call('HMGET', totals, 'spent', 'held')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end

-- A paced rate: `burst` at once, then one per `interval` ms. The new arrival time if
-- `weight` fits now, else nil and the ms until it would.
local function pace(key, weight, burst, interval, now)
  if weight > burst then return nil, -1 end
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now) + weight * interval
  local early = tat - now - burst * interval
  if early > 1e-6 then return nil, math.max(math.ceil(early), 1) end
  return tat, 0
end

-- One admission or settlement; KEYS and ARGV are its own (a batch passes slices).
local function run(KEYS, ARGV)
  local now = now_ms(ARGV[2])
  local id, nw, nb, lease = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local bk = 2 * nw  -- budget keys start after the window keys

  local W = 4  -- admit arguments per window
  if ARGV[1] == 'admit' then
    local tats = {}
    for i = 0, nw - 1 do
      local a = 7 + W * i
      local limit, window, weight = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
      local burst = tonumber(ARGV[a + 3])
      local zset, sum = KEYS[2 * i + 1], KEYS[2 * i + 2]
      if burst > 0 then
        local tat, wait = pace(zset, weight, burst, window / limit, now)
        if not tat then return {1, now, i, wait} end
        tats[i] = tat
      else
        local total = purge(zset, sum, now - window)
        if total + weight > limit then
          return {1, now, i, retry_ms(zset, total, weight, limit, window, now)}
        end
      end
    end
    local free = {}
    for j = 0, nb - 1 do
      local limit = tonumber(ARGV[7 + W * nw + 3 * j])
      local spent, held = budget_totals(KEYS[bk + 2 * j + 1], KEYS[bk + 2 * j + 2], now)
      if spent + held >= limit then return {2, now, j, spent >= limit and 1 or 0} end
      free[j] = limit - spent - held
      -- Less room than the estimate: only a request alone may hold what is left, so at most one
      -- request at a time holds short and the overspend stays within its reservation error.
      if free[j] < tonumber(ARGV[7 + W * nw + 3 * j + 1]) and held > 0 then
        return {2, now, j, 0}
      end
    end
    -- Everything fits: count the request in each window, hold its cost in each budget.
    local out = {0, now}
    for i = 0, nw - 1 do
      local a = 7 + W * i
      local limit, window = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
      local zset, sum = KEYS[2 * i + 1], KEYS[2 * i + 2]
      if tats[i] then
        -- left: whole requests the burst still has room for; reset: until it is full again
        local interval, ahead = window / limit, tats[i] - now
        redis.call('SET', zset, string.format('%.3f', tats[i]), 'PX', math.ceil(ahead) + 1000)
        out[#out + 1] = math.floor(tonumber(ARGV[a + 3]) - ahead / interval + 1e-6)
        out[#out + 1] = math.ceil(ahead)
      else
        redis.call('ZADD', zset, now, id .. ':' .. ARGV[a + 2])
        local total = redis.call('INCRBY', sum, ARGV[a + 2])
        redis.call('PEXPIRE', zset, window + 1000)
        redis.call('PEXPIRE', sum, window + 1000)
        local oldest = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
        out[#out + 1] = limit - total
        out[#out + 1] = tonumber(oldest[2]) + window - now
      end
    end
    for j = 0, nb - 1 do
      local a = 7 + W * nw + 3 * j
      local totals, holds = KEYS[bk + 2 * j + 1], KEYS[bk + 2 * j + 2]
      local hold = math.min(tonumber(ARGV[a + 1]), free[j])
      if hold > 0 then
        redis.call('ZADD', holds, now + lease, id .. ':' .. int(hold))
        redis.call('HINCRBY', totals, 'held', int(hold))
      end
      redis.call('EXPIRE', totals, ARGV[a + 2])
      redis.call('EXPIRE', holds, ARGV[a + 2])
      out[#out + 1] = free[j] - hold
      out[#out + 1] = hold
    end
    return out
  end

  if ARGV[1] == 'unslice' then
    -- A process gives back a slice (slices.py): the slice's entry leaves every window and its
    -- hold every budget; the admissions made from it that are still in flight become entries
    -- and holds of their own (settled later like any other); those settled already have theirs.
    -- Once only: a return replayed after a call that ran but timed out is not applied twice
    -- (its marker, the key after the budgets', lives 2 minutes).
    if redis.call('SET', KEYS[bk + 2 * nb + 1], '1', 'NX', 'PX', 120000) == false then
      return {now}
    end
    -- Those settled while it was out come summed: one entry per window at the latest of
    -- their admission times (they leave the window no earlier than they should), their cost
    -- spent in every budget.
    local a, windows = 7, {}
    for i = 0, nw - 1 do
      local zset, sum = KEYS[2 * i + 1], KEYS[2 * i + 2]
      local window, done, at = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
      windows[i] = window
      if redis.call('ZREM', zset, id .. ':' .. ARGV[a]) == 1 then
        redis.call('INCRBY', sum, int(0 - tonumber(ARGV[a])))
      end
      if done > 0 and at > now - window then
        redis.call('ZADD', zset, at, id .. 'd:' .. ARGV[a + 2])
        redis.call('INCRBY', sum, ARGV[a + 2])
        extend(zset, at + window - now + 1000)
        extend(sum, at + window - now + 1000)
      end
      a = a + 4
    end
    for j = 0, nb - 1 do
      local totals, holds = KEYS[bk + 2 * j + 1], KEYS[bk + 2 * j + 2]
      if tonumber(ARGV[a]) > 0 and redis.call('ZREM', holds, id .. ':' .. ARGV[a]) == 1 then
        redis.call('HINCRBY', totals, 'held', '-' .. ARGV[a])
      end
      if tonumber(ARGV[a + 1]) > 0 then redis.call('HINCRBY', totals, 'spent', ARGV[a + 1]) end
      a = a + 2
    end
    local count = tonumber(ARGV[a])
    a = a + 1
    for _ = 1, count do
      local aid, at = ARGV[a], tonumber(ARGV[a + 1])
      a = a + 2
      for i = 0, nw - 1 do
        local zset, sum, w = KEYS[2 * i + 1], KEYS[2 * i + 2], tonumber(ARGV[a])
        if w > 0 and at > now - windows[i] then
          redis.call('ZADD', zset, at, aid .. ':' .. ARGV[a])
          redis.call('INCRBY', sum, ARGV[a])
          extend(zset, at + windows[i] - now + 1000)
          extend(sum, at + windows[i] - now + 1000)
        end
        a = a + 1
      end
      for j = 0, nb - 1 do
        local totals, holds = KEYS[bk + 2 * j + 1], KEYS[bk + 2 * j + 2]
        if tonumber(ARGV[a]) > 0 then
          redis.call('ZADD', holds, now + lease, aid .. ':' .. ARGV[a])
          redis.call('HINCRBY', totals, 'held', ARGV[a])
        end
        a = a + 1
      end
    end
    return {now}
  end

  -- settle: put the real weight in place of the estimate (or add an entry admitted elsewhere,
  -- e.g. locally while Redis was away, if it is still in its window); turn holds into spend.
  local S = 5  -- settle arguments per window
  for i = 0, nw - 1 do
    local a = 7 + S * i
    local window, old, new, at = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    local spacing = tonumber(ARGV[a + 4])
    local zset, sum = KEYS[2 * i + 1], KEYS[2 * i + 2]
    local score = spacing == 0 and redis.call('ZSCORE', zset, id .. ':' .. old)
    if spacing > 0 then
      -- admitted alone: it takes its place in the pace, as if Redis had let it in at `at`
      local prev = tonumber(redis.call('GET', zset) or '0')
      local tat = math.max(prev, at) + tonumber(new) * spacing
      if tat > now then
        redis.call('SET', zset, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
      end
    elseif spacing < 0 then
      -- a paced rate Redis decided: requests weigh what they were estimated at
    elseif score then
      if new ~= old then
        redis.call('ZREM', zset, id .. ':' .. old)
        redis.call('ZADD', zset, score, id .. ':' .. new)
        redis.call('INCRBY', sum, int(tonumber(new) - tonumber(old)))
      end
    elseif at > now - window and tonumber(new) > 0 then
      redis.call('ZADD', zset, at, id .. ':' .. new)
      redis.call('INCRBY', sum, new)
      extend(zset, at + window - now + 1000)
      extend(sum, at + window - now + 1000)
    end
  end
  local out = {now}
  for j = 0, nb - 1 do
    local a = 7 + S * nw + 3 * j
    local totals, holds = KEYS[bk + 2 * j + 1], KEYS[bk + 2 * j + 2]
    if tonumber(ARGV[a]) > 0 and redis.call('ZREM', holds, id .. ':' .. ARGV[a]) == 1 then
      redis.call('HINCRBY', totals, 'held', '-' .. ARGV[a])
    end
    if tonumber(ARGV[a + 1]) > 0 then redis.call('HINCRBY', totals, 'spent', ARGV[a + 1]) end
    redis.call('EXPIRE', totals, ARGV[a + 2])
    redis.call('EXPIRE', holds, ARGV[a + 2])
    local v = redis.call('HMGET', totals, 'spent', 'held')
    out[#out + 1] = tonumber(v[1] or '0') + tonumber(v[2] or '0')
  end
  return out
end

-- Each ARGV is one call, its arguments separated by spaces, led by where its keys start in
-- KEYS (0-based) and how many there are (calls on the same keys share them). The calls run
-- one after the other (each sees what the one before counted). The reply is one string: a
-- line per call, in order, its numbers separated by spaces.
local replies = {}
for c = 1, #ARGV do
  local args = {}
  for word in string.gmatch(ARGV[c], '%S+') do args[#args + 1] = word end
  local k, keys = tonumber(args[1]), {}
  for j = 1, tonumber(args[2]) do keys[j] = KEYS[k + j] end
  local out = run(keys, {unpack(args, 3)})
  for i = 1, #out do out[i] = int(out[i]) end
  replies[c] = table.concat(out, ' ')
end
return table.concat(replies, '\n')
