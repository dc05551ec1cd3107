"""Calls per second per campaign, shared by every dialer instance: a token bucket in Redis.

One Lua script refills the bucket from Redis's own clock (``TIME``: every instance, one clock) and
takes up to N tokens atomically; tokens a dialer could not use (fewer contacts due than granted) are
given back, so pacing follows the rate rather than the instances' polling.

``AgentPacing`` limits a campaign dialling into an ACD queue by the queue's idle agents (one Lua
script over the queue's live state, every pacing round).
"""

from __future__ import annotations

import redis
from pydantic import BaseModel

from ..queue.scripts import COMMON as QUEUE_COMMON

# KEYS[1] bucket; ARGV: rate (tokens/s), burst (capacity), wanted (negative: give back)
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = 0
if wanted < 0 then
  tokens = math.min(burst, tokens - wanted)
else
  granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return granted
"""


class TokenBucket:
    """``take(key, rate, n)``: how many of ``n`` calls may start now (0..n) at ``rate`` per second."""

    def __init__(self, client: redis.Redis, prefix: str = "esl:dialer:") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_TAKE)

    def _burst(self, rate: float) -> float:
        # a tenth of a second of calls (at least one): smooth over 10 s windows, no start-up flood
        return max(1.0, rate * 0.1)

    def take(self, key: str, rate: float, wanted: int) -> int:
        if wanted <= 0:
            return 0
        return int(self._script(keys=[self.prefix + key], args=[rate, self._burst(rate), wanted]))

    def give_back(self, key: str, rate: float, count: int) -> None:
        if count > 0:
            self._script(keys=[self.prefix + key], args=[rate, self._burst(rate), -count])


# The queue's live state (esl_app/queue/scripts.py layout, ``eligible`` reused so "idle" means what
# the offers mean) and the dialler's calls heading for it, in one atomic read-and-reserve.
# ARGV: queue prefix, queue, ratio, extra, ttl ms, uuids to reserve...
# ``P acd:q:<queue>:dialing`` zset uuid -> expiry ms: the calls every campaign dialled into the queue,
# ringing, or answered and not yet offered to an agent. An entry leaves when its caller is offered (the
# agent is then not idle any more), at the call's hangup (the dialer), or at its expiry (a dialer died).
# Returns {granted, idle agents, callers waiting that are not dialled ones, dialled calls pending}.
_RESERVE = (
    QUEUE_COMMON
    + r"""
local q = ARGV[2]
local ratio, extra, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local qk = P .. 'acd:q:' .. q
if redis.call('EXISTS', qk .. ':conf') == 0 then return redis.error_reply('NOQUEUE ' .. q) end
local pk = qk .. ':dialing'
local now = now_ms()
local idle = 0
for _, id in ipairs(redis.call('ZRANGE', qk .. ':tiers', 0, -1)) do
  if eligible(id, now) then idle = idle + 1 end
end
redis.call('ZREMRANGEBYSCORE', pk, '-inf', now)
local pending, ours_waiting = 0, 0
for _, uuid in ipairs(redis.call('ZRANGE', pk, 0, -1)) do
  local state = redis.call('HGET', P .. 'acd:caller:' .. uuid, 'state')
  if state == 'offered' or state == 'bridged' then
    redis.call('ZREM', pk, uuid)
  else
    pending = pending + 1
    if state == 'waiting' then ours_waiting = ours_waiting + 1 end
  end
end
local others = redis.call('ZCARD', qk .. ':waiting') - ours_waiting
local limit = math.min(math.floor(ratio * idle + 1e-9), idle + extra) - others
local granted = math.max(0, math.min(#ARGV - 5, limit - pending))
for i = 1, granted do redis.call('ZADD', pk, now + ttl, ARGV[5 + i]) end
if granted > 0 then redis.call('PEXPIRE', pk, ttl) end
return {granted, idle, others, pending}
"""
)


class AgentReading(BaseModel):
    granted: list[str]  # the uuids reserved: claim contacts for these only
    idle: int
    waiting: int  # callers waiting in the queue that the dialer did not call
    pending: int  # dialled calls (every campaign's) ringing or answered without an agent, before this round


class AgentPacing:
    """The in-flight limit of a campaign dialling into a queue, from the queue's live state in Redis.

    ``reserve`` grants at most ``min(floor(ratio x idle), idle + extra) - waiting - pending`` of the
    given origination UUIDs, atomically (every dialer instance shares one count): ``idle`` agents
    eligible for an offer now (Available; Idle or past their wrap-up; not reserved; not in a no-answer
    delay), ``waiting`` the queue's other callers, ``pending`` the calls dialled into the queue (by
    every campaign) not yet offered to an agent.
    """

    def __init__(self, client: redis.Redis, prefix: str = "esl-app:") -> None:
        self.client = client
        self.prefix = prefix  # the queue service's prefix (QueueService, ``esl-app queue --prefix``)
        self._script = client.register_script(_RESERVE)

    def pending_key(self, queue: str) -> str:
        return f"{self.prefix}acd:q:{queue}:dialing"

    def reserve(self, queue: str, ratio: float, extra: int, uuids: list[str], ttl: float) -> AgentReading:
        args = [self.prefix, queue, f"{ratio:.6f}", extra, int(ttl * 1000), *uuids]
        granted, idle, waiting, pending = self._script(args=args)
        return AgentReading(granted=uuids[: int(granted)], idle=int(idle), waiting=int(waiting), pending=int(pending))

    def release(self, queue: str, *uuids: str) -> None:
        """The calls ended, failed, or were never claimed: they no longer wait for an agent."""
        if uuids:
            self.client.zrem(self.pending_key(queue), *uuids)

    def pending(self, queue: str) -> int:
        return int(self.client.zcard(self.pending_key(queue)))


def abandoned_key(prefix: str, call_uuid: str) -> str:
    """Set by the flow (``dialer.flow.into_queue``) before the abandon message: read at the hangup."""
    return f"{prefix}acd:dialer:abandoned:{call_uuid}"
