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
from gevent.event import AsyncResult
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("esl_app.data.redis")

SOCKET_BACKSTOP = 5.0  # s; operations have their own, shorter, gevent timeouts
LATE_ANSWER_WAIT = 2.0  # s an acquire's answer is still awaited after its caller stopped waiting

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
# Returns {code, count, active}: code 1 = taken (or already held), -1 = over the concurrent limit (count =
# active), -2 = over the rate (count = calls in the last second); active = the tenant's live slots (-1:
# no concurrency limit). Time is Redis's own clock, so every host agrees. A slot whose lease was not
# renewed (its worker died) is dropped before counting.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local call, max_conc, cps, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local active = -1
if max_conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  active = redis.call('ZCARD', KEYS[1])
  if redis.call('ZSCORE', KEYS[1], call) then return {1, active, active} end
  if active >= max_conc then return {-1, active, active} end
end
if cps >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 1000)
  local recent = redis.call('ZCARD', KEYS[2])
  if recent >= cps then return {-2, recent, active} end
  redis.call('ZADD', KEYS[2], now, call .. '@' .. t[2])
  redis.call('PEXPIRE', KEYS[2], 2000)
end
if max_conc >= 0 then
  redis.call('ZADD', KEYS[1], now + lease, call)
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  active = active + 1
end
return {1, active, active}
"""

# KEYS: concurrency zsets; ARGV: lease ms, then one call id per key. Every call this process holds is
# written with a new expiry, whether or not its slot is still there: a slot that vanished (Redis
# restarted or was failed over, or an outage outlasted the lease) is put back, and so is a call admitted
# while Redis could not be reached. Returns {added flags, one per call (1 = it was not in Redis),
# live slots per key after the renewal (in KEYS order)}.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local added, totals, live = {}, {}, {}
for i, key in ipairs(KEYS) do
  added[i] = redis.call('ZADD', key, now + lease, ARGV[i + 1])
  live[key] = true
end
for key in pairs(live) do
  redis.call('PEXPIRE', key, lease * 2)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  live[key] = redis.call('ZCARD', key)
end
for i, key in ipairs(KEYS) do
  totals[i] = live[key]
end
return {added, totals}
"""

# KEYS: the worker registry (a sorted set of worker ids scored by expiry). ARGV: this worker's id, ttl
# ms (0: leaving). Returns {live workers (this one included unless it is leaving), 1 if this worker
# was not registered (its first heartbeat, or Redis lost its data: a restart or a failover)}.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = 0
if ttl > 0 then
  added = redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return {redis.call('ZCARD', KEYS[1]), added}
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
            # a backstop only: every operation is bounded by its own gevent.Timeout, and an acquire's
            # late answer is still read after its caller stopped waiting (see ``start_acquire``)
            socket_timeout=max(timeout, SOCKET_BACKSTOP),
            socket_connect_timeout=max(timeout, SOCKET_BACKSTOP),
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            health_check_interval=0,
            client_name=f"esl-app {prefix}"[:64].replace(" ", "_"),
        )
        self.client = redis.Redis(connection_pool=self.pool)
        self._set_if_newer = self.client.register_script(SET_IF_NEWER)
        self._acquire = self.client.register_script(ACQUIRE)
        self._renew = self.client.register_script(RENEW)
        self._heartbeat = self.client.register_script(HEARTBEAT)
        self.down_until = 0.0
        self.errors = 0
        self.timeouts_in_a_row = 0
        self.down_since: float | None = None

    def warm(self, connections: int = 16) -> None:
        """Load the scripts and open connections ahead, so a burst of calls doesn't pay for them."""
        def connect_all() -> None:
            for script in (self._set_if_newer, self._acquire, self._renew, self._heartbeat):
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

    def _failed(self, what: str, detail: str, timeout: bool = False) -> None:
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
            log.warning("Redis unavailable (%s: %s): skipping it for %.1f s at a time",
                        what, detail, self.retry_interval)  # fmt: skip

    def _ok(self, took: float = 0.0) -> None:
        if took <= self.timeout:  # a slow success (a long operation, a generous timeout) proves little
            self.timeouts_in_a_row = 0
        if self.down_since is not None:
            log.warning("Redis is back after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None

    def run(self, what: str, fn: Any, timeout: float | None = None) -> Any:
        """Run ``fn()`` (redis-py calls) within ``timeout`` (default: the per-operation timeout); any
        failure opens the breaker."""
        if not self.available():
            raise RedisUnavailable("Redis skipped (breaker open)")
        started = time.monotonic()
        result = self._call(what, fn, self.timeout if timeout is None else timeout, count_timeout=True)
        self._ok(time.monotonic() - started)
        return result

    def _call(self, what: str, fn: Any, timeout: float, count_timeout: bool) -> Any:
        limit = max(0.0005, timeout)
        deadline = time.monotonic() + limit
        timer = gevent.Timeout(limit)
        timer.start()
        try:
            try:
                return fn()
            except redis.ConnectionError:
                # a pooled connection the server dropped (restart, CLIENT KILL): one retry on a new
                # one, within the budget; redis-py has already discarded the dead connection
                if time.monotonic() >= deadline:
                    raise
                return fn()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if count_timeout:
                self.timed_out(what, limit)
            raise RedisUnavailable(f"Redis {what} timed out after {limit * 1000:.1f} ms") from None
        except (redis.RedisError, OSError) as exc:
            self._failed(what, f"{type(exc).__name__}: {exc}")
            raise RedisUnavailable(f"Redis {what}: {exc}") from exc
        finally:
            timer.close()

    def timed_out(self, what: str, waited: float) -> None:
        """Nobody waited longer for ``what``: Redis is slow, if the wait was a whole per-operation
        timeout. A shorter wait (the call's budget was spent elsewhere, e.g. on Postgres) says
        nothing about Redis, and must not open the breaker for every other call."""
        if waited >= self.timeout * 0.999:
            self._failed(what, f"no answer within {waited * 1000:.1f} ms", timeout=True)

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

    def start_acquire(
        self, tenant_id: str, call_id: str, max_concurrent: int | None, cps: int | None, lease: float,
        answer_within: float = LATE_ANSWER_WAIT,
    ) -> AsyncResult:  # fmt: skip
        """Send ACQUIRE from a greenlet of its own and return at once. The caller waits on the result
        as long as its budget allows; when it stops waiting, the script goes on and its answer is still
        delivered (``rawlink``): it may have taken the slot, which must then be kept or given back.
        The result is ``(code, count, active)`` or a ``RedisUnavailable`` exception."""
        if not self.available():
            raise RedisUnavailable("Redis skipped (breaker open)")
        keys = self.limit_keys(tenant_id)
        args = [call_id, -1 if max_concurrent is None else max_concurrent, -1 if cps is None else cps,
                int(lease * 1000)]  # fmt: skip
        result = AsyncResult()

        def send() -> None:
            started = time.monotonic()
            try:
                code, count, active = self._call(
                    "ACQUIRE", lambda: self._acquire(keys=keys, args=args), answer_within, count_timeout=False
                )
            except RedisUnavailable as exc:
                result.set_exception(exc)
                return
            self._ok(time.monotonic() - started)  # a late answer was already counted by its caller
            result.set((int(code), int(count), int(active)))

        gevent.spawn(send)
        return result

    def acquire(
        self, tenant_id: str, call_id: str, max_concurrent: int | None, cps: int | None, lease: float,
        timeout: float | None = None,
    ) -> tuple[int, int, int]:  # fmt: skip
        """ACQUIRE, waiting for the answer (tools and tests; calls use ``start_acquire``)."""
        wait = self.timeout if timeout is None else timeout
        pending = self.start_acquire(tenant_id, call_id, max_concurrent, cps, lease)
        try:
            return pending.get(timeout=wait)
        except gevent.Timeout:
            self.timed_out("ACQUIRE", wait)
            raise RedisUnavailable(f"Redis ACQUIRE timed out after {wait * 1000:.1f} ms") from None

    def release(self, tenant_id: str, call_id: str, timeout: float | None = None) -> None:
        key = self.limit_keys(tenant_id)[0]
        self.run("ZREM", lambda: self.client.zrem(key, call_id), timeout)

    def release_many(self, slots: list[tuple[str, str]], timeout: float | None = None) -> None:
        """Give back ``(tenant id, call id)`` slots in one round trip."""
        def remove_all() -> None:
            pipe = self.client.pipeline(transaction=False)
            for tenant_id, call_id in slots:
                pipe.zrem(self.limit_keys(tenant_id)[0], call_id)
            pipe.execute()

        if slots:
            self.run("ZREM", remove_all, timeout)

    def renew(
        self, held: list[tuple[str, str]], lease: float, timeout: float | None = None
    ) -> tuple[list[bool], list[int]]:
        """Write every held slot with a new expiry, putting back those Redis lost. Returns, per slot,
        whether it had to be added, and its tenant's live slots afterwards."""
        if not held:
            return [], []
        keys = [self.limit_keys(tenant_id)[0] for tenant_id, _ in held]
        args = [int(lease * 1000), *(call_id for _, call_id in held)]
        added, totals = self.run("RENEW", lambda: self._renew(keys=keys, args=args), timeout)
        return [bool(flag) for flag in added], [int(total) for total in totals]

    def heartbeat(self, worker_id: str, ttl: float, timeout: float | None = None) -> tuple[int, bool]:
        """Say this worker is alive for ``ttl`` s more (0: leaving). Returns how many workers are, and
        whether Redis did not know of this one (first heartbeat, or Redis lost its data)."""
        keys, args = [f"{self.prefix}workers"], [worker_id, int(ttl * 1000)]
        count, added = self.run("HEARTBEAT", lambda: self._heartbeat(keys=keys, args=args), timeout)
        return int(count), bool(added)

    def active(self, tenant_id: str) -> int:
        key = self.limit_keys(tenant_id)[0]

        def count() -> int:
            now_s, now_us = self.client.time()
            return self.client.zcount(key, now_s * 1000 + now_us // 1000, "+inf")

        return int(self.run("ZCOUNT", count, timeout=1))

    def close(self) -> None:
        self.pool.disconnect()
