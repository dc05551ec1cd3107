"""Per-tenant limits: concurrent calls and calls per second, across every worker and host.

With Redis, one Lua script (``redis_tier.ACQUIRE``) checks and takes a slot atomically on Redis's own
clock: concurrency is a sorted set of call ids scored by lease expiry, calls per second a 1-second
sliding window. A maintenance greenlet per process renews held slots every ``lease / 3`` and puts back
any that Redis lost (a restart, a failover, an outage longer than the lease); when a worker dies its
slots stop being renewed and expire after ``lease`` seconds instead of leaking. The same greenlet keeps
this worker in Redis's worker registry, so every worker knows how many share the limits.

When Redis does not answer a check in time (down, slow, or this process too busy to read the answer),
``limits_without_redis`` decides, and a slow Redis never multiplies a tenant's limit:

- ``local``: this worker admits up to its share, ``limit // live workers``, counting every call of the
  tenant it holds (through Redis or not); and, while its last view of Redis's count is recent, only
  its share of the headroom that count left. Calls per second likewise.
- ``allow``: the call goes on unchecked (it is still recorded, see below).
- ``refuse``: every limited call is refused.

Nothing is forgotten: a check that timed out keeps running, and its late answer is reconciled (a slot
it took for a refused call is given back; one taken for an admitted call is kept), and the calls
admitted without Redis are written to Redis as soon as it answers again, so that it counts them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Literal

import gevent
from gevent.event import AsyncResult
from gevent.event import Event as Flag

from .models import Limits
from .redis_tier import RedisTier, RedisUnavailable

log = logging.getLogger("esl_app.data.limits")

Verdict = tuple[bool, str, Literal["redis", "local"] | None]  # (allowed, reason if not, where the slot is held)
WithoutRedis = Literal["local", "allow", "refuse"]

HEARTBEAT_INTERVAL = 1.0  # s between this worker's heartbeats in the registry (and syncs after an outage)
WORKER_TTL_MIN = 3.0  # s a worker stays counted without a heartbeat (at least; the lease if longer)
BATCH = 500  # slots per renewal script

# Told of limit events, for metrics: ``("slots_restored", "lost" | "unrecorded", n)`` when Redis was
# given back slots it had lost or never had, ``("without_redis", "admitted" | "refused", 1)`` for each
# decision taken without Redis. esl_app.metrics installs one; the data layer knows nothing of metrics.
_limits_hook: Callable[[str, str, int], None] | None = None


def set_limits_hook(hook: Callable[[str, str, int], None] | None) -> None:
    global _limits_hook
    _limits_hook = hook


def _tell(event: str, label: str, n: int = 1) -> None:
    if _limits_hook is not None:
        try:
            _limits_hook(event, label, n)
        except Exception:
            log.exception("limits hook failed")


def pool_workers() -> int:
    """How many worker processes on this host run the app: the pools' ``workers``, in a worker the
    supervisor started (it passes its settings in ``ESL_APP_WORKER_SPEC``); 1 otherwise."""
    raw = os.environ.get("ESL_APP_WORKER_SPEC")  # esl_app.pools.worker.SPEC_ENV (not imported: no cycle)
    if not raw:
        return 1
    try:
        pools = json.loads(raw)["settings"]["pools"]
        return max(1, sum(int(pool.get("workers", 0)) for pool in pools.values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return 1


class Slot:
    """A call this process admitted under a concurrency limit."""

    __slots__ = ("recorded", "tenant_id")

    def __init__(self, tenant_id: str, recorded: bool) -> None:
        self.tenant_id = tenant_id
        self.recorded = recorded  # Redis is known to hold it


class Limiter:
    def __init__(
        self,
        redis_tier: RedisTier | None,
        *,
        lease: float = 30.0,
        without_redis: WithoutRedis = "local",
        worker_id: str | None = None,
    ) -> None:
        self.redis = redis_tier
        self.lease = lease
        self.without_redis = without_redis
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held: dict[str, Slot] = {}  # call id -> its slot
        self.holding: Counter[str] = Counter()  # tenant -> calls held by this process
        self.unrecorded: Counter[str] = Counter()  # tenant -> of those, calls Redis does not know of yet
        self.recent: dict[str, deque[float]] = {}  # tenant -> admissions without Redis in the last second
        self.pending: set[str] = set()  # calls whose timed-out check has not answered yet
        self.to_release: dict[str, str] = {}  # call id -> tenant: slots to remove from Redis when it answers
        self.seen: dict[str, tuple[int, float]] = {}  # tenant -> (live slots in Redis, when we learnt it)
        self.unreachable_since: float | None = None  # since when checks go without Redis
        self.known_workers = 0  # live workers according to Redis (0: not known yet)
        self._pool_workers = pool_workers()
        self.refused = {"concurrent": 0, "rate": 0, "no_redis": 0}
        self.reconciled = {"late_kept": 0, "late_released": 0, "restored_lost": 0, "recorded_unrecorded": 0}
        self.local_decisions = 0
        self._maintainer: gevent.Greenlet | None = None
        self._wake = Flag()

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.redis is None or self._maintainer is not None:
            return
        self._heartbeat(timeout=1.0)  # the share is right from the first call
        self._maintainer = gevent.spawn(self._maintain_forever)

    def stop(self) -> None:
        if self._maintainer is None:
            return
        self._maintainer.kill(block=False)
        self._maintainer = None
        if self.redis is not None:
            with contextlib.suppress(RedisUnavailable):  # else they expire by themselves
                slots = [(tenant_id, call_id) for call_id, tenant_id in self.to_release.items()]
                self.redis.release_many(slots, timeout=0.5)
                self.to_release.clear()
            with contextlib.suppress(RedisUnavailable):  # else it drops out of the registry by itself
                self.redis.heartbeat(self.worker_id, 0, timeout=0.5)  # leaving: no longer counted

    def workers(self) -> int:
        """The workers sharing the limits: from Redis's registry (all hosts), at least this host's pools."""
        return max(self.known_workers, self._pool_workers, 1)

    # -- decisions -----------------------------------------------------------------------------
    def acquire(self, tenant_id: str, call_id: str, limits: Limits, timeout: float) -> Verdict:
        """Take a slot for ``call_id`` (and count it against the rate), or say why not."""
        if limits.unlimited:
            return True, "", None
        if self.redis is not None:
            try:
                answer = self.redis.start_acquire(
                    tenant_id, call_id, limits.max_concurrent, limits.calls_per_second, self.lease
                )
            except RedisUnavailable as exc:  # skipped: the breaker is open
                log.debug("limits for %s without Redis: %s", tenant_id, exc)
            else:
                wait = max(min(timeout, self.redis.timeout), 0.0005)
                try:
                    code, count, active = answer.get(timeout=wait)
                except gevent.Timeout:
                    # the script may still take the slot: reconcile its answer when it comes
                    self.redis.timed_out("ACQUIRE", wait)
                    self.pending.add(call_id)
                    limited = limits.max_concurrent is not None
                    answer.rawlink(lambda done: self._late_answer(tenant_id, call_id, limited, done))
                except RedisUnavailable as exc:
                    log.debug("limits for %s without Redis: %s", tenant_id, exc)
                else:
                    self.unreachable_since = None
                    self._saw(tenant_id, active)
                    if code == 1:
                        if limits.max_concurrent is None:
                            return True, "", None
                        self._hold(call_id, tenant_id, recorded=True)
                        return True, "", "redis"
                    return False, self._refusal(code, limits, count), None
        return self._without_redis(tenant_id, call_id, limits)

    def _without_redis(self, tenant_id: str, call_id: str, limits: Limits) -> Verdict:
        if self.redis is not None and self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
        if self.without_redis == "refuse":
            self.refused["no_redis"] += 1
            _tell("without_redis", "refused")
            return False, "limits cannot be checked (Redis unavailable)", None
        if self.without_redis == "allow":
            _tell("without_redis", "admitted")
            if limits.max_concurrent is None:
                return True, "", None
            self._hold(call_id, tenant_id, recorded=False)  # still a call up: Redis will count it
            return True, "", "local"
        self.local_decisions += 1
        allowed, why = self._within_share(tenant_id, limits)
        if self.redis is not None:  # (with no Redis configured, this is the normal way)
            _tell("without_redis", "admitted" if allowed else "refused")
        if not allowed:
            return False, why, None
        if limits.max_concurrent is None:
            return True, "", None
        self._hold(call_id, tenant_id, recorded=False)
        return True, "", "local"

    def _within_share(self, tenant_id: str, limits: Limits) -> tuple[bool, str]:
        """This worker's part of the limit while the others can't be asked: its share of the limit,
        and, while its view of Redis's count is recent, its share of the headroom that count left."""
        workers = self.workers()
        # one worker alone holds the whole limit; Redis configured but not answering is said so
        which = "the" if workers == 1 else "its share of the"
        without = " without Redis" if self.redis is not None else ""
        if limits.max_concurrent is not None:
            share = limits.max_concurrent // workers
            mine = self.holding[tenant_id]
            if mine >= share:
                self.refused["concurrent"] += 1
                spread = f" in this worker, {limits.max_concurrent} over {workers} workers" if workers > 1 else ""
                return False, f"over {which} concurrent-call limit{without} ({mine}/{share}{spread})"
            headroom = self._headroom(tenant_id, limits.max_concurrent, workers)
            if headroom is not None and self.unrecorded[tenant_id] >= headroom:
                self.refused["concurrent"] += 1
                return False, (f"over {which} concurrent-call limit{without} ({mine} held here, {headroom} more "
                               f"allowed by Redis's last count)")  # fmt: skip
        if limits.calls_per_second is not None:
            share = limits.calls_per_second // workers
            now = time.monotonic()
            window = self.recent.setdefault(tenant_id, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= share:
                self.refused["rate"] += 1
                spread = f" in this worker, {limits.calls_per_second} over {workers} workers" if workers > 1 else ""
                return False, f"over {which} call-rate limit{without} ({share} calls/s{spread})"
            window.append(now)
        return True, ""

    def _headroom(self, tenant_id: str, limit: int, workers: int) -> int | None:
        # Redis's count when this worker last saw it before Redis stopped answering: each worker may add
        # its share of the headroom that count left. When every worker's view is that recent, the total
        # stays within the limit even though Redis admitted unevenly (one worker may hold more than its
        # share). Older views are not trusted; neither are late answers seen since (they count slots
        # that reconciliation is about to give back).
        seen = self.seen.get(tenant_id)
        since = self.unreachable_since
        if seen is None or since is None or not since - self.lease <= seen[1] <= since:
            return None
        return max(0, (limit - seen[0]) // workers)

    def _saw(self, tenant_id: str, active: int) -> None:
        if active >= 0:
            self.seen[tenant_id] = (active, time.monotonic())

    def _refusal(self, code: int, limits: Limits, count: int) -> str:
        if code == -1:
            self.refused["concurrent"] += 1
            return f"over the concurrent-call limit ({count}/{limits.max_concurrent})"
        self.refused["rate"] += 1
        return f"over the call-rate limit ({limits.calls_per_second} calls/s)"

    # -- slots ---------------------------------------------------------------------------------
    def _hold(self, call_id: str, tenant_id: str, recorded: bool) -> None:
        if call_id in self.held:
            return
        self.held[call_id] = Slot(tenant_id, recorded)
        self.holding[tenant_id] += 1
        if not recorded:
            self.unrecorded[tenant_id] += 1
            self._wake.set()

    def _recorded(self, slot: Slot) -> None:
        if not slot.recorded:
            slot.recorded = True
            self.unrecorded[slot.tenant_id] -= 1

    def _drop(self, call_id: str) -> Slot | None:
        slot = self.held.pop(call_id, None)
        if slot is not None:
            self.holding[slot.tenant_id] -= 1
            if not slot.recorded:
                self.unrecorded[slot.tenant_id] -= 1
        return slot

    def release(self, tenant_id: str, call_id: str, where: str | None) -> None:
        """Give the call's slot back (at hangup)."""
        if where is None:
            return
        slot = self._drop(call_id)
        if self.redis is None or slot is None:
            return
        if not slot.recorded:
            # Redis never had it. A check still on its way is reconciled when it answers (it finds the
            # call gone), and a renewal on its way is checked when it returns.
            return
        if self.unreachable_since is not None:
            seen = self.seen.get(tenant_id)
            if seen is not None:  # one fewer of the slots Redis counted when this worker last saw it
                self.seen[tenant_id] = (max(0, seen[0] - 1), seen[1])
        try:
            self.redis.release(tenant_id, call_id, timeout=self.redis.timeout * 5)
        except RedisUnavailable as exc:
            log.info("releasing %s's slot for %s failed, retrying when Redis answers: %s", tenant_id, call_id, exc)
            self._release_later(tenant_id, call_id)

    # -- a static->async hand-off moves a call to a second connection, maybe in another process ------
    def hand_over(self, tenant_id: str, call_id: str, where: str | None) -> None:
        """Stop renewing ``call_id``'s slot here without giving it back: the call's next leg takes it
        over (``adopt``), or it expires after ``lease`` if that leg never comes. A slot counted only
        in this process (``local``) cannot move, so it is given back and the next leg counts it."""
        if where == "redis":
            self._drop(call_id)
        elif where == "local":
            self.release(tenant_id, call_id, where)

    def adopt(self, tenant_id: str, call_id: str, limits: Limits) -> Literal["redis", "local"] | None:
        """Take over the slot a hand-off's first leg kept (renewed here, released by this leg), without
        counting the call against the rate again; returns where it is held."""
        if limits.max_concurrent is None:
            return None
        # with Redis, the first leg kept the slot there: renewed from now on by this process (a renewal
        # puts it back if Redis lost it meanwhile); without, it is counted in this process
        self._hold(call_id, tenant_id, recorded=self.redis is not None)
        return "redis" if self.redis is not None else "local"

    def _release_later(self, tenant_id: str, call_id: str) -> None:
        self.to_release[call_id] = tenant_id
        self._wake.set()

    def _late_answer(self, tenant_id: str, call_id: str, limited: bool, answer: AsyncResult) -> None:
        """The answer of a check whose caller stopped waiting: the decision was taken without it."""
        self.pending.discard(call_id)
        if not limited:
            return  # only the rate window was involved: nothing is held
        slot = self.held.get(call_id)
        if answer.successful():
            code, _count, active = answer.value
            self._saw(tenant_id, active)
            if code != 1:
                return  # not taken: an admitted call is still to be recorded by the next sync
            if slot is not None:
                self._recorded(slot)  # admitted meanwhile: keep the slot Redis gave it
                self.reconciled["late_kept"] += 1
            else:
                self._release_later(tenant_id, call_id)  # refused, or already ended: give it back
                self.reconciled["late_released"] += 1
        elif slot is None:
            self._release_later(tenant_id, call_id)  # unknown whether it took one: removing is harmless

    # -- upkeep --------------------------------------------------------------------------------
    def _maintain_forever(self) -> None:
        interval = min(self.lease / 3, HEARTBEAT_INTERVAL)
        next_renewal = time.monotonic() + self.lease / 3
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            gevent.sleep(0.001)  # let a burst of admissions gather before writing them in one go
            now = time.monotonic()
            try:
                # Redis forgot this worker: it lost its data, slots included; put them back now rather
                # than at the next renewal
                renew_all = self._heartbeat(timeout=1.0) or now >= next_renewal
                self.sync(renew_all=renew_all)
            except Exception:  # a bug here must not stop the renewals: every slot would expire
                log.exception("limits upkeep failed; retrying")
                continue
            if renew_all:
                next_renewal = now + self.lease / 3

    def _heartbeat(self, timeout: float) -> bool:
        """Renew this worker's registration; True when Redis had lost it (restart, failover)."""
        assert self.redis is not None
        first = self.known_workers == 0
        try:
            self.known_workers, added = self.redis.heartbeat(self.worker_id, max(self.lease, WORKER_TTL_MIN), timeout)
        except RedisUnavailable as exc:
            log.debug("worker heartbeat failed: %s", exc)
            return False
        return added and not first

    def sync(self, renew_all: bool = True) -> None:
        """Give back the slots waiting to be released, and write held slots to Redis with a new lease:
        all of them (``renew_all``), or only those Redis does not know of yet. Slots Redis lost are put
        back, and said so in the log and the metrics."""
        redis_tier = self.redis
        if redis_tier is None or not redis_tier.available():
            return
        if self.to_release:
            batch = list(self.to_release.items())
            try:
                redis_tier.release_many([(tenant_id, call_id) for call_id, tenant_id in batch], timeout=1.0)
            except RedisUnavailable as exc:
                log.warning("giving back %d call slots failed: %s", len(batch), exc)
                return
            for call_id, _ in batch:
                self.to_release.pop(call_id, None)
        if not renew_all and not any(self.unrecorded.values()):
            return  # the common tick: nothing to write
        todo = [(call_id, slot.tenant_id) for call_id, slot in self.held.items() if renew_all or not slot.recorded]
        for start in range(0, len(todo), BATCH):
            if not self._renew(todo[start : start + BATCH]):
                return

    def _renew(self, batch: list[tuple[str, str]]) -> bool:
        assert self.redis is not None
        was_recorded = [slot.recorded if (slot := self.held.get(call_id)) else True for call_id, _ in batch]
        try:
            added, totals = self.redis.renew([(tenant_id, call_id) for call_id, tenant_id in batch], self.lease, 1.0)
        except RedisUnavailable as exc:
            log.warning("renewing %d call slots failed: %s", len(batch), exc)
            return False
        self.unreachable_since = None
        lost = unrecorded = 0
        for (call_id, tenant_id), recorded, was_added, total in zip(batch, was_recorded, added, totals, strict=True):
            self._saw(tenant_id, total)
            slot = self.held.get(call_id)
            if slot is None:
                self._release_later(tenant_id, call_id)  # ended while the renewal was on its way
                continue
            if was_added:
                if recorded:
                    lost += 1
                else:
                    unrecorded += 1
            self._recorded(slot)
        if lost:
            self.reconciled["restored_lost"] += lost
            log.warning("Redis had lost %d of this worker's %d call slots (restart, failover, or an outage "
                        "longer than the %.0f s lease): restored them", lost, len(batch), self.lease)  # fmt: skip
            _tell("slots_restored", "lost", lost)
        if unrecorded:
            self.reconciled["recorded_unrecorded"] += unrecorded
            log.warning("recorded in Redis %d calls admitted while it could not be asked", unrecorded)
            _tell("slots_restored", "unrecorded", unrecorded)
        return True
