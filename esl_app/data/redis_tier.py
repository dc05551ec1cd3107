"""The shared tier: Redis, from greenlets, without blocking the hub.

redis-py's sync client over a gevent socket (``GeventConnection``): while a command waits for Redis,
other greenlets run. The process is not monkey-patched, so the socket is made cooperative here, and
redis-py's own retries (which sleep with ``time.sleep``) are off. Every operation runs under a
``gevent.Timeout`` of at most the call's remaining budget; redis-py drops a connection interrupted
mid-command, so the next one starts clean. A failure opens a breaker: Redis is skipped for
``retry_interval`` seconds, then tried again (it comes back by itself).

Values are ``"<rev>|<json>"`` (``"<rev>|"`` = known not to exist); a Lua script stores a value only
when its revision is not lower than the one there, so processes racing after a change cannot put an
older copy back.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable
from typing import Any

import gevent
import gevent.socket
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("esl_app.data.redis")

SET_IF_NEWER = """
local ok = 0
for i, key in ipairs(KEYS) do
  local rev = tonumber(ARGV[3 * i - 2])
  local current = redis.call('GET', key)
  local current_rev = current and tonumber(string.match(current, '^(%d+)|')) or -1
  if rev >= current_rev then
    redis.call('SET', key, ARGV[3 * i - 2] .. '|' .. ARGV[3 * i - 1], 'PX', ARGV[3 * i])
    ok = ok + 1
  end
end
return ok
"""

# KEYS: concurrency zset, rate zset. ARGV: call id, max concurrent (-1: none), calls/s (-1: none), lease ms.
# Time is Redis's own clock, so every host agrees. A slot whose lease was not renewed (its worker died)
# is dropped before counting.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local call, max_conc, cps, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local active = 0
if max_conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZSCORE', KEYS[1], call) then return {1, redis.call('ZCARD', KEYS[1])} end
  active = redis.call('ZCARD', KEYS[1])
  if active >= max_conc then return {-1, active} end
end
if cps >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 1000)
  local recent = redis.call('ZCARD', KEYS[2])
  if recent >= cps then return {-2, recent} end
  redis.call('ZADD', KEYS[2], now, call .. '@' .. t[2])
  redis.call('PEXPIRE', KEYS[2], 2000)
end
if max_conc >= 0 then
  redis.call('ZADD', KEYS[1], now + lease, call)
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  active = active + 1
end
return {1, active}
"""

# KEYS: concurrency zsets; ARGV: lease ms, then one call id per key. Only slots still held are renewed.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local renewed = 0
for i, key in ipairs(KEYS) do
  renewed = renewed + redis.call('ZADD', key, 'XX', 'CH', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease * 2)
end
return renewed
"""


class GeventConnection(redis.Connection):
    """A redis-py connection whose socket is gevent's: waiting for Redis yields to the hub."""

    def _connect(self) -> Any:
        sock = gevent.socket.create_connection((self.host, self.port), timeout=self.socket_connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.socket_timeout)
        return sock


class RedisUnavailable(Exception):
    pass


class RedisTier:
    def __init__(self, url: str, prefix: str, *, timeout: float, retry_interval: float, max_connections: int = 512):
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.pool = redis.ConnectionPool.from_url(
            url,
            connection_class=GeventConnection,
            socket_timeout=max(timeout, 0.001),
            socket_connect_timeout=max(timeout, 0.001),
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            health_check_interval=0,
            client_name=f"esl-app {prefix}"[:64].replace(" ", "_"),
        )
        self.client = redis.Redis(connection_pool=self.pool)
        self._set_if_newer = self.client.register_script(SET_IF_NEWER)
        self._acquire = self.client.register_script(ACQUIRE)
        self._renew = self.client.register_script(RENEW)
        self.down_until = 0.0
        self.errors = 0
        self.timeouts_in_a_row = 0
        self.down_since: float | None = None

    def warm(self, connections: int = 16) -> None:
        """Load the scripts and open connections ahead, so a burst of calls doesn't pay for them."""
        def connect_all() -> None:
            for script in (self._set_if_newer, self._acquire, self._renew):
                script.sha = self.client.script_load(script.script)
            held = [self.pool.get_connection() for _ in range(connections)]
            for connection in held:
                self.pool.release(connection)

        try:
            self.run("warm-up", connect_all, timeout=2)
        except RedisUnavailable as exc:
            log.info("Redis not warmed (%s); connections will be made on demand", exc)

    # -- breaker -------------------------------------------------------------------------------
    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def _failed(self, what: str, exc: BaseException, timeout: bool = False) -> None:
        self.errors += 1
        if timeout:
            # one slow answer may be a burst on a busy machine, not a dead server: open the breaker
            # after three in a row (an error such as a refused connection opens it at once)
            self.timeouts_in_a_row += 1
            if self.timeouts_in_a_row < 3:
                return
        self.down_until = time.monotonic() + self.retry_interval
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("Redis unavailable (%s: %s: %s): skipping it for %.1f s at a time",
                        what, type(exc).__name__, exc, self.retry_interval)  # fmt: skip

    def _ok(self) -> None:
        self.timeouts_in_a_row = 0
        if self.down_since is not None:
            log.warning("Redis is back after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None

    def run(self, what: str, fn: Any, timeout: float | None = None) -> Any:
        """Run ``fn()`` (redis-py calls) within ``timeout`` (default: the per-operation timeout); any
        failure opens the breaker."""
        if not self.available():
            raise RedisUnavailable("Redis skipped (breaker open)")
        limit = self.timeout if timeout is None else max(0.0005, timeout)
        deadline = time.monotonic() + limit
        timer = gevent.Timeout(limit)
        timer.start()
        try:
            try:
                result = fn()
            except redis.ConnectionError:
                # a pooled connection the server dropped (restart, CLIENT KILL): one retry on a new
                # one, within the budget; redis-py has already discarded the dead connection
                if time.monotonic() >= deadline:
                    raise
                result = fn()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self._failed(what, exc, timeout=True)
            raise RedisUnavailable(f"Redis {what} timed out after {limit * 1000:.1f} ms") from None
        except (redis.RedisError, OSError) as exc:
            self._failed(what, exc)
            raise RedisUnavailable(f"Redis {what}: {exc}") from exc
        finally:
            timer.close()
        self._ok()
        return result

    # -- cache ---------------------------------------------------------------------------------
    def key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    def get(self, kind: str, key: str, timeout: float | None = None) -> tuple[int, str | None] | None:
        """``(rev, json or None)``, or None when Redis has no copy. Raises ``RedisUnavailable``."""
        raw = self.run("GET", lambda: self.client.get(self.key(kind, key)), timeout)
        if raw is None:
            return None
        rev, _, payload = raw.partition(b"|")
        return int(rev), (payload.decode() if payload else None)

    def put_many(self, items: Iterable[tuple[str, str, str | None, int, float]], timeout: float | None = None) -> int:
        """Store ``(kind, key, json or None, rev, ttl seconds)`` items where they are not older; batched."""
        stored = 0
        batch: list[tuple[str, str, str | None, int, float]] = []
        for item in items:
            batch.append(item)
            if len(batch) >= 500:
                stored += self._put_batch(batch, timeout)
                batch = []
        if batch:
            stored += self._put_batch(batch, timeout)
        return stored

    def _put_batch(self, batch: list[tuple[str, str, str | None, int, float]], timeout: float | None) -> int:
        keys = [self.key(kind, key) for kind, key, _, _, _ in batch]
        args: list[Any] = []
        for _, _, payload, rev, ttl in batch:
            args += [rev, payload or "", int(ttl * 1000)]
        return int(self.run("SET", lambda: self._set_if_newer(keys=keys, args=args), timeout))

    def delete_prefix(self) -> int:
        """Remove every key under this prefix (tests and tools)."""
        def scan_and_delete() -> int:
            count = 0
            for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
                count += self.client.delete(key)
            return count

        return int(self.run("DEL", scan_and_delete, timeout=10))

    # -- limits --------------------------------------------------------------------------------
    def limit_keys(self, tenant_id: str) -> list[str]:
        return [f"{self.prefix}{{{tenant_id}}}:active", f"{self.prefix}{{{tenant_id}}}:rate"]

    def acquire(
        self, tenant_id: str, call_id: str, max_concurrent: int | None, cps: int | None, lease: float,
        timeout: float | None = None,
    ) -> tuple[int, int]:  # fmt: skip
        args = [call_id, -1 if max_concurrent is None else max_concurrent, -1 if cps is None else cps,
                int(lease * 1000)]
        code, count = self.run("ACQUIRE", lambda: self._acquire(keys=self.limit_keys(tenant_id), args=args), timeout)
        return int(code), int(count)

    def release(self, tenant_id: str, call_id: str, timeout: float | None = None) -> None:
        key = self.limit_keys(tenant_id)[0]
        self.run("ZREM", lambda: self.client.zrem(key, call_id), timeout)

    def renew(self, held: list[tuple[str, str]], lease: float, timeout: float | None = None) -> int:
        if not held:
            return 0
        keys = [self.limit_keys(tenant_id)[0] for tenant_id, _ in held]
        args = [int(lease * 1000), *(call_id for _, call_id in held)]
        return int(self.run("RENEW", lambda: self._renew(keys=keys, args=args), timeout))

    def active(self, tenant_id: str) -> int:
        key = self.limit_keys(tenant_id)[0]

        def count() -> int:
            now_s, now_us = self.client.time()
            return self.client.zcount(key, now_s * 1000 + now_us // 1000, "+inf")

        return int(self.run("ZCOUNT", count, timeout=1))

    def close(self) -> None:
        self.pool.disconnect()
