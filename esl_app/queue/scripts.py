"""The ACD's Redis Lua scripts: every change of live state, and the choice of (caller, agent), is one
atomic script, so any number of processes and hosts can run them without ever offering an agent or a
caller twice.

Keys are built inside the scripts from the prefix in ARGV[1] (the live state is one Redis, not a
cluster). Layout, ``P`` = prefix:

* ``P acd:agent:<id>`` hash: status (Available, On Break, Logged Out), state (Idle, Reserved, In call,
  Wrap-up), contact, skills ("skill=level,..."), idle_since, wrap_until, na_until (no-answer delay),
  na_count, caller (while Reserved/In call), lease_until (a dead offer frees the agent after it);
* ``P acd:agentq:<id>`` set: the agent's queues;
* ``P acd:q:<name>:conf`` hash (copied from Postgres), ``:tiers`` zset agent -> level*10000+position,
  ``:waiting`` zset caller -> (9-priority)*1e13 + join ms, ``:rr`` the last round-robin tier score,
  ``:stats`` hash of counters, ``:alive`` zset caller -> ms until which its process vouches for it
  (refreshed while it waits; a caller whose worker died keeps its place until then);
* ``P acd:caller:<id>`` hash: queue, priority, joined, skills, score, state (waiting, offered), agent
  (ring-all: every agent of the offer, ``a1,a2,a3``, until one answers);
* channel ``P acd:offers``: one message per chosen pair, ``caller|agent|contact|queue|t_event|kind|seq``
  (``seq``: ``P acd:offer_seq``, so a process that got an offer both directly and by message acts once).
  A ring-all offer names all its agents and their contacts, comma-separated, in tier order (neither
  an agent id nor a contact can hold a comma).

Times are Redis's own clock (``TIME``), so every host agrees. ``t_event`` is the wall time the event
happened in the process that caused it (for latency figures only).
"""

from __future__ import annotations

COMMON = r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function s(x) return string.format('%d', x) end
local function parse_skills(text)
  local out = {}
  if text then
    for name, level in string.gmatch(text, '([^,=]+)=(%d+)') do out[name] = tonumber(level) end
  end
  return out
end
local function skill_score(have, need)
  -- nil: a required skill is missing or too low; else the sum of the agent's levels on them
  local score = 0
  for name, level in pairs(need) do
    local got = have[name]
    if not got or got < level then return nil end
    score = score + got
  end
  return score
end
local function eligible(id, now)
  local a = redis.call('HMGET', P .. 'acd:agent:' .. id,
    'status', 'state', 'wrap_until', 'na_until', 'lease_until', 'idle_since', 'skills', 'contact')
  if a[1] ~= 'Available' or not a[8] then return nil end
  local state = a[2]
  if state == 'Reserved' or state == 'In call' then
    if tonumber(a[5] or '0') >= now then return nil end  -- else its offer died: the lease freed it
  elseif state == 'Wrap-up' then
    if tonumber(a[3] or '0') > now then return nil end
  elseif state ~= 'Idle' then
    return nil
  end
  if tonumber(a[4] or '0') > now then return nil end
  return {id = id, idle = tonumber(a[6] or '0'), skills = parse_skills(a[7]), contact = a[8]}
end
-- a caller whose process stopped vouching for it (its worker died and the call did not come back
-- within the lease) is not offered; the sweep's REAP removes it. No entry: alive.
local function live(qk, caller, now)
  local until_ms = redis.call('ZSCORE', qk .. ':alive', caller)
  return not until_ms or tonumber(until_ms) >= now
end
local function better(k, best)
  if not best then return true end
  if k[1] ~= best[1] then return k[1] < best[1] end
  return k[2] < best[2]
end
-- one offer: the agents (one, or every agent of a ring-all) reserved for the caller, and published
local function reserve(q, caller, agents, now, lease, t_event, kind, out)
  local qk = P .. 'acd:q:' .. q
  local ids, contacts = {}, {}
  for i, a in ipairs(agents) do
    ids[i], contacts[i] = a.id, a.contact
    redis.call('HSET', P .. 'acd:agent:' .. a.id, 'state', 'Reserved', 'caller', caller,
      'lease_until', s(now + lease), 'last_offer', s(now))
  end
  local agent_ids = table.concat(ids, ',')
  redis.call('ZREM', qk .. ':waiting', caller)
  redis.call('HSET', P .. 'acd:caller:' .. caller, 'state', 'offered', 'agent', agent_ids)
  redis.call('HINCRBY', qk .. ':stats', 'offered', 1)
  local seq = redis.call('INCR', P .. 'acd:offer_seq')
  local msg = table.concat({caller, agent_ids, table.concat(contacts, ','), q, t_event, kind, seq}, '|')
  redis.call('PUBLISH', P .. 'acd:offers', msg)
  out[#out + 1] = msg
end
-- ring-all: the callers in order, each rung on every free agent its skills allow, all at once
local function ring_all(q, waiting, free, now, lease, t_event, kind, out)
  for _, caller in ipairs(waiting) do
    if #free == 0 then return end
    local need = parse_skills(redis.call('HGET', P .. 'acd:caller:' .. caller, 'skills'))
    local ring, rest = {}, {}
    for _, a in ipairs(free) do
      if skill_score(a.skills, need) then ring[#ring + 1] = a else rest[#rest + 1] = a end
    end
    if #ring > 0 then
      free = rest
      reserve(q, caller, ring, now, lease, t_event, kind, out)
    end
  end
end
-- choose pairs for one queue until no waiting caller can be served; appends to out
local function dispatch(q, now, t_event, kind, out)
  local qk = P .. 'acd:q:' .. q
  local conf = redis.call('HMGET', qk .. ':conf', 'strategy', 'lease_ms')
  local strategy = conf[1]
  if not strategy then return end
  local waiting = redis.call('ZRANGE', qk .. ':waiting', 0, 99)
  if #waiting == 0 then return end
  local tiers = redis.call('ZRANGE', qk .. ':tiers', 0, -1, 'WITHSCORES')
  local free = {}
  for i = 1, #tiers, 2 do
    local a = eligible(tiers[i], now)
    if a then a.tier = tonumber(tiers[i + 1]); free[#free + 1] = a end
  end
  if #free == 0 then return end
  local lease = tonumber(conf[2] or '60000')
  if strategy == 'ring-all' then return ring_all(q, waiting, free, now, lease, t_event, kind, out) end
  local rr = tonumber(redis.call('GET', qk .. ':rr') or '-1')
  for _, caller in ipairs(waiting) do
    if #free == 0 then break end
    local need = parse_skills(redis.call('HGET', P .. 'acd:caller:' .. caller, 'skills'))
    local best, best_i, best_key = nil, nil, nil
    for i, a in ipairs(live(qk, caller, now) and free or {}) do
      local score = skill_score(a.skills, need)
      if score then
        local k
        if strategy == 'top-down' then k = {a.tier, 0}
        elseif strategy == 'round-robin' then k = {a.tier > rr and 0 or 1, a.tier}
        elseif strategy == 'skills-based' then k = {-score, a.idle}
        else k = {a.idle, a.tier} end  -- longest-idle-agent
        if better(k, best_key) then best, best_i, best_key = a, i, k end
      end
    end
    if best then
      table.remove(free, best_i)
      redis.call('SET', qk .. ':rr', s(best.tier))
      reserve(q, caller, {best}, now, lease, t_event, kind, out)
    end
  end
end
local function dispatch_agent(agent, now, t_event, kind, out)
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'acd:agentq:' .. agent)) do dispatch(q, now, t_event, kind, out) end
end
-- agents freed together (a ring-all's): each of their queues dispatched once
local function dispatch_agents(agents, now, t_event, kind, out)
  local seen, queues = {}, {}
  for _, agent in ipairs(agents) do
    for _, q in ipairs(redis.call('SMEMBERS', P .. 'acd:agentq:' .. agent)) do
      if not seen[q] then seen[q] = true; queues[#queues + 1] = q end
    end
  end
  table.sort(queues)
  for _, q in ipairs(queues) do dispatch(q, now, t_event, kind, out) end
end
-- the offer's agents ("a1" or a ring-all's "a1,a2") still reserved for the caller, each set Idle
local function release(caller, agents)
  local freed = {}
  for id in string.gmatch(agents or '', '[^,]+') do
    local ak = P .. 'acd:agent:' .. id
    if redis.call('HGET', ak, 'caller') == caller then
      redis.call('HSET', ak, 'state', 'Idle', 'caller', '')
      freed[#freed + 1] = id
    end
  end
  return freed
end
-- no answer, busy or rejected: the no-answer delay, and On Break after max no-answer in a row
local function penalise(agent, na_delay_ms, max_na, now)
  local ak = P .. 'acd:agent:' .. agent
  local count = redis.call('HINCRBY', ak, 'na_count', 1)
  redis.call('HSET', ak, 'state', 'Idle', 'caller', '', 'na_until', s(now + na_delay_ms))
  if max_na > 0 and count >= max_na then redis.call('HSET', ak, 'status', 'On Break') end
end
"""

# ARGV: prefix, caller, queue, priority (0-9, 9 first), skills, t_event, ttl ms, alive lease ms.
# Returns {position (1-based; 0 = offered already), joined ms, now ms, offer seq before this join,
# offers...}. A caller already known (its worker died and FreeSWITCH reconnected it) keeps its place
# and join time; an offer made to it before (seq <= the one returned) is void.
JOIN = COMMON + r"""
local caller, q, prio = ARGV[2], ARGV[3], tonumber(ARGV[4])
local qk = P .. 'acd:q:' .. q
if redis.call('EXISTS', qk .. ':conf') == 0 then return redis.error_reply('NOQUEUE ' .. q) end
local now = now_ms()
local ck = P .. 'acd:caller:' .. caller
local old = redis.call('HMGET', ck, 'queue', 'score', 'joined', 'state', 'agent')
local score, joined
if old[1] == q and old[2] then
  score, joined = old[2], tonumber(old[3])
  if old[4] == 'offered' and old[5] then  -- its offer died with the worker: its agents are freed
    release(caller, old[5])
  end
  redis.call('HINCRBY', qk .. ':stats', 'rejoined', 1)
else
  joined = now
  score = s((9 - prio) * 10000000000000 + now)
  redis.call('HSET', ck, 'queue', q, 'priority', s(prio), 'joined', s(joined), 'skills', ARGV[5], 'score', score)
  redis.call('HINCRBY', qk .. ':stats', 'joined', 1)
end
redis.call('HSET', ck, 'state', 'waiting', 'agent', '')
redis.call('PEXPIRE', ck, tonumber(ARGV[7]))
redis.call('ZADD', qk .. ':waiting', score, caller)
redis.call('ZADD', qk .. ':alive', now + tonumber(ARGV[8]), caller)
local seq = tonumber(redis.call('GET', P .. 'acd:offer_seq') or '0')
local out = {}
dispatch(q, now, ARGV[6], 'join', out)
local rank = redis.call('ZRANK', qk .. ':waiting', caller)
local result = {rank and rank + 1 or 0, joined, now, seq}
for _, m in ipairs(out) do result[#result + 1] = m end
return result
"""

# ARGV: prefix, caller, reason (abandoned, timeout, exit), t_event. The caller is gone for good: removed
# whatever its state; an agent reserved for it is freed and offered the next caller at once.
# Returns {1 if the caller was known, offers...}.
LEAVE = COMMON + r"""
local caller, reason = ARGV[2], ARGV[3]
local ck = P .. 'acd:caller:' .. caller
local c = redis.call('HMGET', ck, 'queue', 'state', 'agent')
if not c[1] then return {0} end
local now = now_ms()
local qk = P .. 'acd:q:' .. c[1]
redis.call('ZREM', qk .. ':waiting', caller)
redis.call('ZREM', qk .. ':alive', caller)
redis.call('DEL', ck)
redis.call('HINCRBY', qk .. ':stats', reason, 1)
local out = {}
if c[2] == 'offered' and c[3] ~= '' then
  dispatch_agents(release(caller, c[3]), now, ARGV[4], 'free', out)
end
local result = {1}
for _, m in ipairs(out) do result[#result + 1] = m end
return result
"""

# ARGV: prefix, caller, agent, outcome, t_event, answered_within_sl (0/1).
# outcome 'connected': the bridge is up (agent In call, lease renewed). 'ended': the answered call is
#   over: the agent goes to wrap-up (or straight to Idle), the caller is done.
# 'no_answer': the agent gets the no-answer delay (On Break after max no-answer) and the caller goes
#   back to its own place in the queue (the head, as it waited longest).
# 'renew': extend the lease of a live offer. Returns {wrap_until ms or 0, offers...}; {-1} when the
# agent no longer holds this caller. Optional ARGV 7-9: an answered call's handle time (seconds), the
# samples kept and its queue: recorded for the estimated wait in the same round trip, whatever the rest.
OFFER = COMMON + r"""
local caller, agent, outcome = ARGV[2], ARGV[3], ARGV[4]
if ARGV[7] and ARGV[7] ~= '' then
  local hk = P .. 'acd:q:' .. ARGV[9] .. ':handle'
  redis.call('LPUSH', hk, ARGV[7])
  redis.call('LTRIM', hk, 0, tonumber(ARGV[8]) - 1)
end
local ak = P .. 'acd:agent:' .. agent
local ck = P .. 'acd:caller:' .. caller
if redis.call('HGET', ak, 'caller') ~= caller then return {-1} end
local now = now_ms()
local q = redis.call('HGET', ck, 'queue')
local conf = {}
if q then conf = redis.call('HMGET', P .. 'acd:q:' .. q .. ':conf', 'wrap_ms', 'na_delay_ms', 'max_na', 'lease_ms') end
local lease = tonumber(conf[4] or '60000')
local out = {}
if outcome == 'renew' or outcome == 'connected' then
  redis.call('HSET', ak, 'lease_until', s(now + lease))
  if outcome == 'connected' then
    redis.call('HSET', ak, 'state', 'In call')
    if q then redis.call('HINCRBY', P .. 'acd:q:' .. q .. ':stats', 'answered', 1) end
    if q and ARGV[6] == '1' then redis.call('HINCRBY', P .. 'acd:q:' .. q .. ':stats', 'answered_in_sl', 1) end
    if q then redis.call('HSET', ck, 'state', 'bridged') end  -- served: never queued again
  end
  return {0}
end
if outcome == 'ended' then
  redis.call('DEL', ck)
  local wrap = tonumber(conf[1] or '0')
  redis.call('HSET', ak, 'caller', '', 'na_count', '0', 'idle_since', s(now + wrap))
  if wrap > 0 then
    redis.call('HSET', ak, 'state', 'Wrap-up', 'wrap_until', s(now + wrap))
    return {now + wrap}
  end
  redis.call('HSET', ak, 'state', 'Idle')
  dispatch_agent(agent, now, ARGV[5], 'free', out)
  local result = {0}
  for _, m in ipairs(out) do result[#result + 1] = m end
  return result
end
-- no answer, busy, rejected
penalise(agent, tonumber(conf[2] or '0'), tonumber(conf[3] or '0'), now)
if q and redis.call('HGET', ck, 'state') == 'offered' then
  redis.call('HSET', ck, 'state', 'waiting', 'agent', '')
  redis.call('ZADD', P .. 'acd:q:' .. q .. ':waiting', redis.call('HGET', ck, 'score'), caller)
  dispatch(q, now, ARGV[5], 'requeue', out)
end
local result = {0}
for _, m in ipairs(out) do result[#result + 1] = m end
return result
"""

# A ring-all offer's outcome. ARGV: prefix, caller, outcome, winner, t_event, answered_within_sl (0/1),
# penalised agents, the offer's agents (both comma-separated). Only agents still reserved for this
# caller are touched (a lease that ran out may have given one to another caller meanwhile).
# 'connected': the winner is In call; every other agent is Idle at once with no penalty (its leg was
#   cancelled: LOSE_RACE), except the penalised ones, whose own leg failed (busy, rejected) first.
# 'no_answer': nobody answered: every agent gets the no-answer handling, the caller goes back to its
#   place. 'renew': extend the leases while ringing.
# Returns {0 (or -1 when the winner was no longer reserved for this caller), offers...}.
RING = COMMON + r"""
local caller, outcome, winner = ARGV[2], ARGV[3], ARGV[4]
local ck = P .. 'acd:caller:' .. caller
local now = now_ms()
local q = redis.call('HGET', ck, 'queue')
local conf = {}
if q then conf = redis.call('HMGET', P .. 'acd:q:' .. q .. ':conf', 'na_delay_ms', 'max_na', 'lease_ms') end
local na_delay, max_na, lease = tonumber(conf[1] or '0'), tonumber(conf[2] or '0'), tonumber(conf[3] or '60000')
local held = {}
for id in string.gmatch(ARGV[8], '[^,]+') do
  if redis.call('HGET', P .. 'acd:agent:' .. id, 'caller') == caller then held[#held + 1] = id end
end
local out = {}
if outcome == 'renew' then
  for _, id in ipairs(held) do redis.call('HSET', P .. 'acd:agent:' .. id, 'lease_until', s(now + lease)) end
  return {0}
end
local penalised = {}
for id in string.gmatch(ARGV[7], '[^,]+') do penalised[id] = true end
local first = 0
if outcome == 'connected' then
  local freed = {}
  first = -1
  for _, id in ipairs(held) do
    if id == winner then
      redis.call('HSET', P .. 'acd:agent:' .. id, 'state', 'In call', 'lease_until', s(now + lease))
      first = 0
    elseif penalised[id] then
      penalise(id, na_delay, max_na, now)
    else
      redis.call('HSET', P .. 'acd:agent:' .. id, 'state', 'Idle', 'caller', '')
      freed[#freed + 1] = id
    end
  end
  if q then
    local qk = P .. 'acd:q:' .. q
    redis.call('HSET', ck, 'state', 'bridged', 'agent', winner)  -- served: never queued again
    redis.call('HINCRBY', qk .. ':stats', 'answered', 1)
    if ARGV[6] == '1' then redis.call('HINCRBY', qk .. ':stats', 'answered_in_sl', 1) end
  end
  dispatch_agents(freed, now, ARGV[5], 'free', out)
else
  for _, id in ipairs(held) do penalise(id, na_delay, max_na, now) end
  if q and redis.call('HGET', ck, 'state') == 'offered' then
    redis.call('HSET', ck, 'state', 'waiting', 'agent', '')
    redis.call('ZADD', P .. 'acd:q:' .. q .. ':waiting', redis.call('HGET', ck, 'score'), caller)
    dispatch(q, now, ARGV[5], 'requeue', out)
  end
end
local result = {first}
for _, m in ipairs(out) do result[#result + 1] = m end
return result
"""

# ARGV: prefix, agent, status (Available, On Break, Logged Out), t_event. Returns {offers...}; an error
# for an unknown agent.
AGENT_STATUS = COMMON + r"""
local agent, status = ARGV[2], ARGV[3]
local ak = P .. 'acd:agent:' .. agent
if redis.call('HEXISTS', ak, 'contact') == 0 then return redis.error_reply('NOAGENT ' .. agent) end
local now = now_ms()
local was = redis.call('HGET', ak, 'status')
redis.call('HSET', ak, 'status', status)
if not redis.call('HGET', ak, 'state') then redis.call('HSET', ak, 'state', 'Idle') end
local out = {}
if status == 'Available' then
  if was ~= 'Available' then redis.call('HSET', ak, 'na_count', '0', 'na_until', '0', 'idle_since', s(now)) end
  dispatch_agent(agent, now, ARGV[4], 'free', out)
end
return out
"""

# ARGV: prefix, t_event, queue names... Offer what can be offered now: an agent's wrap-up ended, a
# no-answer delay or a dead offer's lease ran out. Returns {offers...}.
WAKE = COMMON + r"""
local now = now_ms()
local out = {}
for i = 3, #ARGV do dispatch(ARGV[i], now, ARGV[2], 'free', out) end
return out
"""

# ARGV: prefix, lease ms, then (queue, caller) pairs: the callers this process holds are alive for one
# more lease. Returns the callers that have no entry any more (reaped: their process stalled for longer
# than a lease); they join again.
ALIVE = COMMON + r"""
local now = now_ms()
local until_ms = now + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local key = P .. 'acd:q:' .. ARGV[i] .. ':alive'
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, until_ms, ARGV[i + 1])
  else
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return lost
"""

# ARGV: prefix, queue names... Callers whose lease ran out: a waiting one is removed (its worker died
# and the call never came back: it hung up meanwhile, or had no next ``socket``) and counted
# ``expired``; one being offered or bridged is left to its agent's lease. Returns how many were removed.
REAP = COMMON + r"""
local now = now_ms()
local removed = 0
for i = 2, #ARGV do
  local qk = P .. 'acd:q:' .. ARGV[i]
  for _, caller in ipairs(redis.call('ZRANGEBYSCORE', qk .. ':alive', '-inf', '(' .. s(now), 'LIMIT', 0, 500)) do
    redis.call('ZREM', qk .. ':alive', caller)
    if redis.call('ZREM', qk .. ':waiting', caller) == 1 then
      redis.call('DEL', P .. 'acd:caller:' .. caller)
      redis.call('HINCRBY', qk .. ':stats', 'expired', 1)
      removed = removed + 1
    end
  end
end
return removed
"""
