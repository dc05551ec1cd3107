"""Per-tenant limits: concurrent calls and calls per second, across every worker and host.

With Redis, one Lua script (``redis_tier.ACQUIRE``) checks and takes a slot atomically on Redis's own
clock: concurrency is a sorted set of call ids scored by lease expiry, calls per second a 1-second
sliding window. Held slots are renewed every ``lease / 3`` by one greenlet per process; when a worker
dies its slots stop being renewed and expire after ``lease`` seconds instead of leaking.

Without Redis (not configured, or down) the limits are enforced per process (``limits_without_redis =
"local"``), or not at all (``"allow"``), or every limited call is refused (``"refuse"``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Literal

import gevent

from .models import Limits
from .redis_tier import RedisTier, RedisUnavailable

log = logging.getLogger("esl_app.data.limits")

Verdict = tuple[bool, str, Literal["redis", "local"] | None]  # (allowed, reason if not, where the slot is held)


class LocalLimits:
    """One process's view: exact for one process, and the fallback when Redis can't be reached."""

    def __init__(self) -> None:
        self.active: dict[str, set[str]] = {}
        self.recent: dict[str, deque[float]] = {}

    def acquire(self, tenant_id: str, call_id: str, limits: Limits) -> tuple[int, int]:
        now = time.monotonic()
        held = self.active.setdefault(tenant_id, set())
        if call_id in held:
            return 1, len(held)
        if limits.max_concurrent is not None and len(held) >= limits.max_concurrent:
            return -1, len(held)
        if limits.calls_per_second is not None:
            window = self.recent.setdefault(tenant_id, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limits.calls_per_second:
                return -2, len(window)
            window.append(now)
        if limits.max_concurrent is not None:
            held.add(call_id)
        return 1, len(held)

    def release(self, tenant_id: str, call_id: str) -> None:
        held = self.active.get(tenant_id)
        if held is not None:
            held.discard(call_id)


class Limiter:
    def __init__(
        self,
        redis_tier: RedisTier | None,
        *,
        lease: float = 30.0,
        without_redis: Literal["local", "allow", "refuse"] = "local",
    ) -> None:
        self.redis = redis_tier
        self.lease = lease
        self.without_redis = without_redis
        self.local = LocalLimits()
        self.held: dict[str, str] = {}  # call id -> tenant id, slots held in Redis by this process
        self.refused = {"concurrent": 0, "rate": 0, "no_redis": 0}
        self.local_decisions = 0
        self._renewer: gevent.Greenlet | None = None

    def start(self) -> None:
        if self.redis is not None and self._renewer is None:
            self._renewer = gevent.spawn(self._renew_forever)

    def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.kill(block=False)
            self._renewer = None

    def acquire(self, tenant_id: str, call_id: str, limits: Limits, timeout: float) -> Verdict:
        """Take a slot for ``call_id`` (and count it against the rate), or say why not."""
        if limits.unlimited:
            return True, "", None
        if self.redis is not None:
            try:
                code, count = self.redis.acquire(
                    tenant_id, call_id, limits.max_concurrent, limits.calls_per_second, self.lease,
                    timeout=min(timeout, self.redis.timeout),
                )  # fmt: skip
            except RedisUnavailable as exc:
                log.debug("limits for %s without Redis: %s", tenant_id, exc)
            else:
                if code == 1:
                    if limits.max_concurrent is not None:
                        self.held[call_id] = tenant_id
                    return True, "", "redis" if limits.max_concurrent is not None else None
                return False, self._refusal(code, limits, count), None
        # no Redis: configured behaviour
        if self.without_redis == "allow":
            return True, "", None
        if self.without_redis == "refuse":
            self.refused["no_redis"] += 1
            return False, "limits cannot be checked (Redis unavailable)", None
        self.local_decisions += 1
        code, count = self.local.acquire(tenant_id, call_id, limits)
        if code == 1:
            return True, "", "local" if limits.max_concurrent is not None else None
        return False, self._refusal(code, limits, count), None

    def _refusal(self, code: int, limits: Limits, count: int) -> str:
        if code == -1:
            self.refused["concurrent"] += 1
            return f"over the concurrent-call limit ({count}/{limits.max_concurrent})"
        self.refused["rate"] += 1
        return f"over the call-rate limit ({limits.calls_per_second} calls/s)"

    def release(self, tenant_id: str, call_id: str, where: str | None) -> None:
        if where == "local":
            self.local.release(tenant_id, call_id)
            return
        if where != "redis":
            return
        self.held.pop(call_id, None)
        if self.redis is None:
            return
        try:
            self.redis.release(tenant_id, call_id, timeout=self.redis.timeout * 5)
        except RedisUnavailable as exc:
            # the slot expires by itself after the lease, since nobody renews it any more
            log.info("releasing %s's slot for %s failed (it expires within %.0f s): %s",
                     tenant_id, call_id, self.lease, exc)  # fmt: skip

    # -- a static->async hand-off moves a call to a second connection, maybe in another process ------
    def hand_over(self, tenant_id: str, call_id: str, where: str | None) -> None:
        """Stop renewing ``call_id``'s slot here without giving it back: the call's next leg takes it
        over (``adopt``), or it expires after ``lease`` if that leg never comes. A slot counted only
        in this process (``local``) cannot move, so it is given back and the next leg counts it."""
        if where == "redis":
            self.held.pop(call_id, None)
        elif where == "local":
            self.local.release(tenant_id, call_id)

    def adopt(self, tenant_id: str, call_id: str, limits: Limits) -> Literal["redis", "local"] | None:
        """Take over the slot a hand-off's first leg kept (renewed here, released by this leg), without
        counting the call against the rate again; returns where it is held."""
        if limits.max_concurrent is None:
            return None
        if self.redis is not None:
            self.held[call_id] = tenant_id
            return "redis"
        if self.without_redis == "local":
            self.local.active.setdefault(tenant_id, set()).add(call_id)
            return "local"
        return None

    def _renew_forever(self) -> None:
        assert self.redis is not None
        while True:
            gevent.sleep(self.lease / 3)
            held = [(tenant_id, call_id) for call_id, tenant_id in self.held.items()]
            if not held:
                continue
            try:
                for start in range(0, len(held), 500):
                    self.redis.renew(held[start : start + 500], self.lease, timeout=1.0)
            except RedisUnavailable as exc:
                log.warning("renewing %d call slots failed: %s", len(held), exc)
