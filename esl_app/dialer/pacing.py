"""Calls per second per campaign, shared by every dialer instance: a token bucket in Redis.

One Lua script refills the bucket from Redis's own clock (``TIME``: every instance, one clock) and
takes up to N tokens atomically; tokens a dialer could not use (fewer contacts due than granted) are
given back, so pacing follows the rate rather than the instances' polling.
"""

from __future__ import annotations

import redis

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
