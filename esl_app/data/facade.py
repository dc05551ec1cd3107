"""``RoutingData``: the one object guards and flows ask about numbers, callers, hours and limits.

```python
data = RoutingData()                     # settings from ESL_APP_DATA_*; nothing set = the embedded file
app.on_startup(data.start)
app.on_shutdown(data.stop)

@app.guard
def early_exit(call):
    decision = data.decide(call.destination, call.caller_id_number, call_id=call.uuid)
    ...
```

Tiers, fastest first: this process's cache → Redis (shared by every process and host) → Postgres (the
truth, via the asyncio thread of ``bridge.py``). Everything is loaded at start and kept current by
Postgres notifications, so a warm process answers from memory. A decision never waits longer than
``budget_ms`` in all: a tier that fails is skipped for ``retry_interval``; when nothing answers, the
last known data is served (up to ``stale_max_age`` old, counted and logged), and without any, the
configured fallback decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import gevent
from gevent._hub_local import get_hub_if_exists  # no public way to ask without creating one
from gevent.event import AsyncResult
from gevent.event import Event as Flag
from gevent.pool import Group

from ..hubthread import home_hub
from .bridge import Bridge
from .cache import Key, LocalCache
from .limits import Limiter
from .models import BlockList, Decision, Limits, Number, Snapshot, Source, Tenant
from .pg import Item, PostgresStore
from .redis_tier import RedisTier, RedisUnavailable
from .settings import DataSettings
from .snapshot import load_snapshot

log = logging.getLogger("esl_app.data")

_MODELS: dict[str, type[Any]] = {"number": Number, "tenant": Tenant, "global": BlockList}
_RANK = {"local": 0, "embedded": 1, "redis": 2, "postgres": 3, "stale": 4, "fallback": 5}
EMBEDDED_EPOCH = -1
GLOBAL: Key = ("global", "*")

# Told which tier answered each decision (``local``, ``embedded``, ``redis``, ``postgres``, ``stale``,
# ``fallback``); esl_app.metrics installs one to count the cache hit ratio. The data layer itself
# knows nothing of metrics.
_decision_hook: Callable[[str], None] | None = None


def set_decision_hook(hook: Callable[[str], None] | None) -> None:
    global _decision_hook
    _decision_hook = hook


def _on_home_hub(method: Callable[..., Any]) -> Callable[..., Any]:
    """Inside FreeSWITCH (mod_python3, ``esl_app.hubthread``) calls arrive on many plain OS threads,
    while this object's greenlets (Redis, the asyncpg bridge, limits) belong to one hub: a call from
    another thread runs on the hub thread and waits for it. In the socket server no hub thread is
    installed and this is one global read."""

    def run(self: RoutingData, *args: Any, **kwargs: Any) -> Any:
        hub = home_hub()
        # the thread that started it (its greenlets are there) calls directly; so does a gevent
        # thread (one with a hub of its own, like the socket server's) using it first: it becomes
        # the owner. A plain thread (a FreeSWITCH call thread has no hub) hands the call over.
        if (
            hub is None
            or hub.on_hub()
            or threading.get_ident() == self._owner
            or (self._owner is None and get_hub_if_exists() is not None)
        ):
            return method(self, *args, **kwargs)
        return hub.call(method, self, *args, **kwargs)

    run.__name__ = method.__name__
    run.__qualname__ = method.__qualname__
    run.__doc__ = method.__doc__
    return run


class DataUnavailable(Exception):
    """No tier could answer within the budget and no usable stale copy exists."""


ChangeHook = Callable[[str, str, Any, int], None]


class RoutingData:
    def __init__(self, settings: DataSettings | None = None, *, snapshot: Snapshot | None = None) -> None:
        self.settings = s = settings or DataSettings()
        self.cache = LocalCache(s.cache_size)
        self.redis = (
            RedisTier(s.redis_url, s.redis_prefix, timeout=s.redis_timeout_ms / 1000, retry_interval=s.retry_interval)
            if s.redis_url
            else None
        )
        self.pg = (
            PostgresStore(s.postgres_dsn, s.postgres_schema, pool_size=s.pool_size,
                          connect_timeout=s.connect_timeout, health_interval=s.listen_health_interval)
            if s.postgres_dsn
            else None
        )  # fmt: skip
        self.bridge = Bridge() if self.pg is not None else None
        self.limiter = Limiter(self.redis, lease=s.lease_seconds, without_redis=s.limits_without_redis)
        self._snapshot = snapshot
        self._owner: int | None = None  # the thread start() ran on: its hub owns this object's greenlets
        self._index: dict[Key, Any] = {}
        self.epoch = 0  # bumped at every (re)connection of the Postgres listener
        self.listening = False
        self.loaded = Flag()
        self.started = False
        self._inflight: dict[Key, AsyncResult] = {}
        self._pg_down_until = 0.0
        self._pg_timeouts = 0
        self._warned: dict[str, float] = {}
        self.change_hooks: list[ChangeHook] = []
        self._writers = Group()  # Redis write-backs in flight (killed at stop)
        self.counts: dict[str, int] = dict.fromkeys(
            ["local", "embedded", "redis", "postgres", "stale", "fallback", "negative",
             "pg_hot_queries", "pg_errors", "pg_timeouts", "redis_errors", "changes", "decisions"], 0
        )  # fmt: skip

    @classmethod
    def from_env(cls) -> RoutingData:
        return cls(DataSettings())

    @property
    def embedded(self) -> bool:
        return self.pg is None

    # -- life ----------------------------------------------------------------------------------
    @_on_home_hub
    def start(self, wait: float | None = None) -> None:
        """Load what calls will need (so the first call is a hit) and start following changes.
        Never fails because a server is down: the data then comes from Redis or later."""
        if self.started:
            return
        self.started = True
        self._owner = threading.get_ident()
        if self.pg is None:
            snapshot = self._snapshot or load_snapshot(self.settings.data_source)
            self._index = _index(snapshot)
            now = time.monotonic()
            for key, value in self._index.items():
                self.cache.put(key, value, 0, now, EMBEDDED_EPOCH)
            self.epoch = EMBEDDED_EPOCH
            self.listening = True
            self.loaded.set()
            log.info("routing data: embedded, %d objects from %s", len(self._index), self.settings.data_source)
        else:
            assert self.bridge is not None
            self.bridge.start()
            self.bridge.run(self._open_pg(), timeout=self.settings.connect_timeout + 1)
            wait = self.settings.connect_timeout * 2 if wait is None else wait
            if not self.loaded.wait(wait):
                log.warning("routing data: Postgres not loaded within %.1f s; warming from Redis", wait)
                self._warm_from_redis()
        if self.redis is not None:
            self.redis.warm()
        self.limiter.start()

    async def _open_pg(self) -> None:
        assert self.pg is not None and self.bridge is not None
        await self.pg.open()
        bridge = self.bridge
        self.pg.start_listening(
            on_change=lambda kind, key, value, rev: bridge.to_gevent(self._on_change, kind, key, value, rev),
            on_up=lambda items: bridge.to_gevent(self._on_up, items),
            on_down=lambda: bridge.to_gevent(self._on_down),
            on_lost=lambda kind, key: bridge.to_gevent(self._on_lost, kind, key),
        )

    @_on_home_hub
    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self.limiter.stop()
        self._writers.kill(block=True, timeout=1)
        if self.pg is not None and self.bridge is not None and self.bridge.running:
            try:
                self.bridge.run(self.pg.close(), timeout=3)
            except Exception as exc:
                log.warning("closing Postgres: %s", exc)
            self.bridge.stop()
        if self.redis is not None:
            self.redis.close()
        self.listening = False

    # -- decisions -----------------------------------------------------------------------------
    @_on_home_hub
    def decide(
        self, destination: str, caller: str, *, call_id: str | None = None, at: datetime | None = None
    ) -> Decision:
        """Decide a call before answer. With ``call_id``, a concurrency slot is taken for calls that go
        on (``route``/``closed``); give it back with ``release(decision)`` when the call ends."""
        started = time.perf_counter()
        if not self.started:
            self.start()
        self.counts["decisions"] += 1
        deadline = time.monotonic() + self.settings.budget_ms / 1000
        worst = 0
        try:
            blocks, source = self._get(GLOBAL, deadline)
            worst = max(worst, _RANK[source])
            rule = blocks.match(caller) if blocks is not None else None
            if rule is not None:
                return self._done(Decision(outcome="blocked", rule="global " + rule, reason="blocked caller",
                                           sip_code=403, cause="CALL_REJECTED"), worst, started)  # fmt: skip
            number, source = self._get(("number", destination), deadline)
            worst = max(worst, _RANK[source])
            if number is None or not number.enabled:
                return self._done(Decision(outcome="unknown", number=number, reason="unknown number",
                                           sip_code=404, cause="UNALLOCATED_NUMBER"), worst, started)  # fmt: skip
            tenant, source = self._get(("tenant", number.tenant_id), deadline)
            worst = max(worst, _RANK[source])
        except DataUnavailable as exc:
            return self._fallback(str(exc), started)
        if tenant is None or not tenant.enabled:
            return self._done(Decision(outcome="unknown", number=number, tenant=tenant, reason="tenant disabled",
                                       sip_code=404, cause="UNALLOCATED_NUMBER"), worst, started)  # fmt: skip
        rule = tenant.blocklist.match(caller)
        if rule is not None:
            decision = Decision(outcome="blocked", number=number, tenant=tenant, rule=f"{tenant.id} {rule}",
                                reason="blocked caller", sip_code=403, cause="CALL_REJECTED")  # fmt: skip
            return self._done(decision, worst, started)
        is_open = tenant.hours.is_open(at or datetime.now(UTC))
        lease = where = None
        if call_id is not None and not tenant.limits.unlimited:
            remaining = max(deadline - time.monotonic(), 0.001)
            allowed, why, where = self.limiter.acquire(tenant.id, call_id, tenant.limits, remaining)
            if not allowed:
                return self._done(Decision(outcome="over_limit", number=number, tenant=tenant, is_open=is_open,
                                           reason=f"tenant {tenant.id} {why}", sip_code=503,
                                           cause="NORMAL_TEMPORARY_FAILURE"), worst, started)  # fmt: skip
            lease = call_id if where is not None else None
        outcome = "closed" if (number.respect_hours and not is_open) else "route"
        decision = Decision(outcome=outcome, number=number, tenant=tenant, is_open=is_open, target=number.target,
                            reason="" if outcome == "route" else "closed", lease=lease, lease_where=where)  # fmt: skip
        return self._done(decision, worst, started)

    def _done(self, decision: Decision, worst: int, started: float) -> Decision:
        decision.source = _source(worst)
        decision.stale = worst == _RANK["stale"]
        decision.elapsed_us = (time.perf_counter() - started) * 1e6
        if _decision_hook is not None:
            _decision_hook(decision.source)
        return decision

    def _fallback(self, why: str, started: float) -> Decision:
        self.counts["fallback"] += 1
        self._warn("fallback", f"routing data unavailable, using the fallback decision: {why}")
        s = self.settings
        if s.fallback == "route":
            decision = Decision(outcome="route", target=s.fallback_target, reason=f"fallback: {why}")
        else:
            decision = Decision(outcome="fallback", reason=f"routing data unavailable: {why}",
                                sip_code=s.fallback_code, cause="NORMAL_TEMPORARY_FAILURE")  # fmt: skip
        return self._done(decision, _RANK["fallback"], started)

    @_on_home_hub
    def release(self, decision: Decision) -> None:
        """Give back the concurrency slot a ``route``/``closed`` decision took (idempotent)."""
        if decision.lease is not None and decision.tenant is not None:
            lease, decision.lease = decision.lease, None
            self.limiter.release(decision.tenant.id, lease, decision.lease_where)

    @_on_home_hub
    def hand_over(self, decision: Decision) -> None:
        """The call is being handed off to another connection (``App.hand_off_to_async``): keep its
        concurrency slot for the next leg to ``adopt`` instead of giving it back (idempotent)."""
        if decision.lease is not None and decision.tenant is not None:
            lease, decision.lease = decision.lease, None
            self.limiter.hand_over(decision.tenant.id, lease, decision.lease_where)

    @_on_home_hub
    def adopt(self, decision: Decision, call_id: str) -> None:
        """On a handed-off call's second leg (``App.on_resume``), with ``decision`` looked up again
        without a ``call_id``: take over the slot the first leg kept, without counting the call again.
        Give it back with ``release(decision)`` when the call ends."""
        if decision.outcome not in ("route", "closed") or decision.tenant is None:
            return
        where = self.limiter.adopt(decision.tenant.id, call_id, decision.tenant.limits)
        if where is not None:
            decision.lease, decision.lease_where = call_id, where

    # -- single questions ----------------------------------------------------------------------
    @_on_home_hub
    def number(self, did: str) -> Number | None:
        return self._get(("number", did), self._deadline())[0]

    @_on_home_hub
    def tenant(self, tenant_id: str) -> Tenant | None:
        return self._get(("tenant", tenant_id), self._deadline())[0]

    @_on_home_hub
    def is_blocked(self, caller: str, tenant_id: str | None = None) -> str | None:
        """The rule blocking ``caller`` (global, then the tenant's), or None."""
        deadline = self._deadline()
        blocks = self._get(GLOBAL, deadline)[0]
        rule = blocks.match(caller) if blocks is not None else None
        if rule is not None or tenant_id is None:
            return rule
        tenant = self._get(("tenant", tenant_id), deadline)[0]
        return tenant.blocklist.match(caller) if tenant is not None else None

    @_on_home_hub
    def is_open(self, tenant_id: str, at: datetime | None = None) -> bool:
        tenant = self.tenant(tenant_id)
        if tenant is None:
            raise KeyError(f"no tenant {tenant_id!r}")
        return tenant.hours.is_open(at or datetime.now(UTC))

    @_on_home_hub
    def limits(self, tenant_id: str) -> Limits:
        tenant = self.tenant(tenant_id)
        if tenant is None:
            raise KeyError(f"no tenant {tenant_id!r}")
        return tenant.limits

    def _deadline(self) -> float:
        if not self.started:
            self.start()
        return time.monotonic() + self.settings.budget_ms / 1000

    # -- the tiers -----------------------------------------------------------------------------
    def _get(self, key: Key, deadline: float) -> tuple[Any, Source]:
        entry = self.cache.get(key)
        now = time.monotonic()
        if entry is not None and not entry.expired:
            if entry.value is None:
                if now - entry.stored < self.settings.negative_ttl or entry.epoch == EMBEDDED_EPOCH:
                    self.counts["negative"] += 1
                    self.counts["local"] += 1
                    return None, "local"
            elif (entry.epoch == self.epoch and self.listening) or now - entry.stored < self.settings.cache_ttl:
                self.counts["local"] += 1
                return entry.value, "local"
        if self.pg is None:  # embedded: the file is the truth, already in memory
            value = self._index.get(key)
            self.cache.put(key, value, 0, now, EMBEDDED_EPOCH if value is not None else 0)
            self.counts["embedded"] += 1
            return value, "embedded"
        redis_tier = self.redis
        if redis_tier is not None and redis_tier.available():
            try:
                got = redis_tier.get(key[0], key[1], timeout=min(deadline - now, redis_tier.timeout))
            except RedisUnavailable:
                self.counts["redis_errors"] += 1
            else:
                if got is not None:
                    rev, payload = got
                    value = _MODELS[key[0]].model_validate_json(payload) if payload is not None else None
                    if entry is None or rev >= entry.rev:
                        self.cache.put(key, value, rev, time.monotonic(), self.epoch if self.listening else 0)
                        self.counts["redis"] += 1
                        return value, "redis"
        found = self._from_postgres(key, deadline)
        if found is not None:
            return found[0], "postgres"
        if entry is not None and now - entry.stored <= self.settings.stale_max_age:
            self.counts["stale"] += 1
            self._warn("stale", f"serving stale routing data ({key[0]} {key[1]}, {now - entry.stored:.1f} s old)")
            return entry.value, "stale"
        raise DataUnavailable(f"no {key[0]} {key[1]!r} from any tier within the budget")

    def _from_postgres(self, key: Key, deadline: float) -> tuple[Any] | None:
        assert self.pg is not None and self.bridge is not None
        now = time.monotonic()
        if now < self._pg_down_until or not self.bridge.running or deadline - now <= 0:
            return None
        pending = self._inflight.get(key)
        if pending is None:  # one query per key however many calls are waiting for it
            self.counts["pg_hot_queries"] += 1
            epoch = self.epoch if self.listening else 0
            pending = self.bridge.submit(self.pg.load(*key), on_done=lambda v, e: self._loaded(key, v, e, epoch))
            self._inflight[key] = pending
        wait = deadline - now
        try:
            value, _rev = pending.get(timeout=wait)
        except gevent.Timeout:
            self.counts["pg_timeouts"] += 1
            # only a wait of half the budget or more says Postgres is slow; a shorter one (the budget
            # was spent before, e.g. by a slow Redis) says nothing about it
            if wait >= self.settings.budget_ms / 2000:
                self._pg_timeouts += 1
            if self._pg_timeouts >= 3:  # a hung server, not one slow query: stop waiting on it for a while
                self._pg_down_until = time.monotonic() + self.settings.retry_interval
            return None
        except Exception as exc:
            self.counts["pg_errors"] += 1
            self._pg_down_until = time.monotonic() + self.settings.retry_interval
            self._warn("pg", f"Postgres unavailable: {type(exc).__name__}: {exc}")
            return None
        self._pg_timeouts = 0
        self.counts["postgres"] += 1
        return (value,)

    def _loaded(self, key: Key, result: tuple[Any, int] | None, error: BaseException | None, epoch: int) -> None:
        """A Postgres answer arrived (in time or late): it fills the caches either way."""
        self._inflight.pop(key, None)
        if error is not None or result is None:
            return
        value, rev = result
        if epoch != self.epoch:
            epoch = 0
        self.cache.put(key, value, rev, time.monotonic(), epoch)
        self._push_redis([(key[0], key[1], value, rev)])

    # -- invalidation (all of these run in the gevent hub, called from the asyncio thread) ------
    def _on_up(self, items: list[Item], everything: bool = False) -> None:
        """A full load: at every (re)connection of the listener, and after a TRUNCATE (``everything``)."""
        if not everything:
            self.epoch = max(self.epoch, 0) + 1
            self.listening = True
        now = time.monotonic()
        seen = set()
        epoch = self.epoch if self.listening else 0
        for kind, key, value, rev in items:
            seen.add((kind, key))
            if value is not None or (kind, key) in self.cache:  # tombstones only for what we hold
                self.cache.put((kind, key), value, rev, now, epoch)
        gone: list[Item] = []
        if everything:  # rows a TRUNCATE removed left no tombstone: whatever is not in the load is gone
            for cached in list(self.cache):
                entry = self.cache.peek(cached)
                if cached not in seen and entry is not None and entry.value is not None:
                    self.cache.put(cached, None, entry.rev + 1, now, epoch)
                    gone.append((cached[0], cached[1], None, entry.rev + 1))
        self._push_redis(items + gone)
        self.loaded.set()
        log.info("routing data: %d objects loaded from Postgres (epoch %d)", len(items), self.epoch)

    def _on_down(self) -> None:
        self.listening = False
        unpinned = self.cache.unpin(self.epoch, time.monotonic())
        self._warn("listener", f"Postgres invalidations stopped; {unpinned} cached objects now expire by TTL")

    def _on_change(self, kind: str, key: str, value: Any, rev: int) -> None:
        if kind == "all":
            self._on_up(value, everything=True)
            return
        self.counts["changes"] += 1
        self.cache.put((kind, key), value, rev, time.monotonic(), self.epoch if self.listening else 0)
        self._push_redis([(kind, key, value, rev)])
        for hook in self.change_hooks:
            try:
                hook(kind, key, value, rev)
            except Exception:
                log.exception("change hook failed")

    def _on_lost(self, kind: str, key: str) -> None:
        """A change was notified but could not be read: stop trusting every copy of it."""
        self.cache.expire((kind, key))
        if self.redis is not None:
            redis_tier = self.redis
            self._writers.spawn(_quietly, lambda: redis_tier.run("DEL", lambda: redis_tier.client.delete(
                redis_tier.key(kind, key))))  # fmt: skip

    def _push_redis(self, items: list[Item]) -> None:
        if self.redis is None or not items:
            return
        s = self.settings
        payload = [
            (kind, key, value.model_dump_json() if value is not None else None, rev,
             s.redis_ttl if value is not None else s.negative_ttl)
            for kind, key, value, rev in items
        ]  # fmt: skip
        redis_tier = self.redis
        self._writers.spawn(_quietly, lambda: redis_tier.put_many(payload, timeout=max(1.0, len(payload) / 5000)))

    def _warm_from_redis(self) -> None:
        """Postgres is down at start: take what Redis has, so calls are still decided from data."""
        if self.redis is None:
            return
        redis_tier = self.redis

        def scan() -> int:
            count = 0
            keys = list(redis_tier.client.scan_iter(match=redis_tier.prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for raw_key, raw in zip(chunk, redis_tier.client.mget(chunk), strict=True):
                    kind, _, key = raw_key.decode()[len(redis_tier.prefix) :].partition(":")
                    if raw is None or kind not in _MODELS:
                        continue
                    rev, _, payload = raw.partition(b"|")
                    value = _MODELS[kind].model_validate_json(payload) if payload else None
                    self.cache.put((kind, key), value, int(rev), time.monotonic(), 0)
                    count += 1
            return count

        try:
            count = redis_tier.run("SCAN", scan, timeout=5)
            log.info("routing data: %d objects warmed from Redis", count)
        except RedisUnavailable as exc:
            log.warning("routing data: could not warm from Redis either: %s", exc)

    # -- observability -------------------------------------------------------------------------
    def _warn(self, what: str, message: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(what, -1e9) >= 10.0:
            self._warned[what] = now
            log.warning(message)

    @_on_home_hub
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        out.update(
            cache_entries=len(self.cache),
            listening=self.listening,
            epoch=self.epoch,
            pg_queries_total=self.pg.queries if self.pg is not None else 0,
            pg_notifications=self.pg.notifications if self.pg is not None else 0,
            redis_available=self.redis.available() if self.redis is not None else None,
            held_slots=len(self.limiter.held),
            limits_refused=dict(self.limiter.refused),
            limits_reconciled=dict(self.limiter.reconciled),
            limits_workers=self.limiter.workers(),
        )
        return out


def _index(snapshot: Snapshot) -> dict[Key, Any]:
    index: dict[Key, Any] = {GLOBAL: snapshot.global_blocklist}
    index.update({("tenant", t.id): t for t in snapshot.tenants})
    index.update({("number", n.did): n for n in snapshot.numbers})
    return index


def _source(rank: int) -> Source:
    for name, value in _RANK.items():
        if value == rank:
            return name  # type: ignore[return-value]
    return "fallback"


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except RedisUnavailable as exc:
        log.debug("Redis update skipped: %s", exc)
    except Exception:
        log.exception("Redis update failed")
