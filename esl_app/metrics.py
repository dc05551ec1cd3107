"""Prometheus metrics, per pool, in prometheus-client's multiprocess mode when served by the supervisor.

Every worker process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (the supervisor sets
it before a worker starts, so before prometheus_client is imported there); the supervisor serves
``/metrics`` by summing them, and marks a worker's files dead when it exits, so the active-calls gauge
of a killed worker disappears at once. Without that variable (tests, ``serve --single``) the same
objects are ordinary in-process metrics in ``PoolMetrics.registry``.

| metric | type | labels |
|---|---|---|
| ``esl_app_calls_active`` | gauge (live sum) | pool |
| ``esl_app_calls_accepted_total`` | counter | pool |
| ``esl_app_calls_refused_total`` | counter | pool, reason (capacity, rate, draining) |
| ``esl_app_call_setup_seconds`` | histogram | pool: accept -> the first call-control command written |
| ``esl_app_refusal_seconds`` | histogram | pool: accept -> the refusal written |
| ``esl_app_connections_denied_total`` | counter | pool: closed at accept, peer not in ``allow_from`` |
| ``esl_app_verb_seconds`` | histogram | pool, verb, outcome (ok, hangup, timeout, error) |
| ``esl_app_esl_errors_total`` | counter | pool, kind |
| ``esl_app_data_cache_requests_total`` | counter | pool, tier, result (hit, miss); hit ratio in PromQL |
| ``esl_app_data_limit_slots_restored_total`` | counter | pool, reason (lost, unrecorded): slots written back |
| ``esl_app_data_limit_decisions_without_redis_total`` | counter | pool, outcome (admitted, refused) |
| ``esl_app_calls_resumed_total`` | counter | pool, checkpoint: calls brought back after their worker died |
| ``esl_app_calls_restarted_total`` | counter | pool, reason (invalid, route, empty): came back, started over |

The supervisor adds ``esl_app_workers``, ``esl_app_worker_restarts_total``, ``esl_app_calls_lost_total``,
``esl_app_pool_capacity``, ``esl_app_pool_cps_limit`` and ``esl_app_ready`` (see ``esl_app.pools.supervisor``).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SETUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REFUSAL_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
VERB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class PoolMetrics:
    """The metrics of one pool in this process; also the app's ``SessionObserver``."""

    def __init__(self, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.pool = pool
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._active = Gauge(
            "esl_app_calls_active", "Calls being handled", ["pool"], registry=r, multiprocess_mode="livesum"
        )
        self._accepted = Counter("esl_app_calls_accepted", "Calls admitted at the door", ["pool"], registry=r)
        self._refused = Counter(
            "esl_app_calls_refused", "Calls refused at the door, by reason", ["pool", "reason"], registry=r
        )
        self._denied = Counter(
            "esl_app_connections_denied", "Connections closed at accept: the peer is not in allow_from", ["pool"],
            registry=r,
        )  # fmt: skip
        self._setup = Histogram(
            "esl_app_call_setup_seconds",
            "Accept to the first call-control command written",
            ["pool"],
            buckets=SETUP_BUCKETS,
            registry=r,
        )
        self._refusal = Histogram(
            "esl_app_refusal_seconds", "Accept to the refusal written", ["pool"], buckets=REFUSAL_BUCKETS, registry=r
        )
        self._verb = Histogram(
            "esl_app_verb_seconds",
            "Call-control command (execute) latency, by application and outcome",
            ["pool", "verb", "outcome"],
            buckets=VERB_BUCKETS,
            registry=r,
        )
        self._errors = Counter("esl_app_esl_errors", "Event Socket protocol errors", ["pool", "kind"], registry=r)
        self._cache = Counter(
            "esl_app_data_cache_requests", "Data-layer lookups by tier and result", ["pool", "tier", "result"],
            registry=r,
        )  # fmt: skip
        self._slots_restored = Counter(
            "esl_app_data_limit_slots_restored", "Tenant-limit slots written back to Redis, by reason",
            ["pool", "reason"], registry=r,
        )  # fmt: skip
        self._without_redis = Counter(
            "esl_app_data_limit_decisions_without_redis", "Tenant-limit decisions taken without Redis's answer",
            ["pool", "outcome"], registry=r,
        )  # fmt: skip
        self._resumed = Counter(
            "esl_app_calls_resumed", "Calls resumed after their worker died, by the last checkpoint passed",
            ["pool", "checkpoint"], registry=r,
        )  # fmt: skip
        self._restarted = Counter(
            "esl_app_calls_restarted",
            "Calls that came back after their worker died with no checkpoint to resume from: started over",
            ["pool", "reason"], registry=r,
        )  # fmt: skip
        # children resolved once: the hot path never formats labels
        self.active = self._active.labels(pool)
        self.accepted = self._accepted.labels(pool)
        self.denied = self._denied.labels(pool)
        self.setup = self._setup.labels(pool)
        self.refusal = self._refusal.labels(pool)
        self._refused_by: dict[str, Any] = {}
        self._verb_by: dict[tuple[str, str], Any] = {}

    # -- the door --------------------------------------------------------------------------------
    def refused(self, reason: str, seconds: float) -> None:
        child = self._refused_by.get(reason)
        if child is None:
            child = self._refused_by[reason] = self._refused.labels(self.pool, reason)
        child.inc()
        self.refusal.observe(seconds)

    def peer_denied(self, host: str) -> None:
        self.denied.inc()

    # -- SessionObserver -------------------------------------------------------------------------
    def execute_done(self, app: str, seconds: float, outcome: str) -> None:
        key = (app, outcome)
        child = self._verb_by.get(key)
        if child is None:
            child = self._verb_by[key] = self._verb.labels(self.pool, app, outcome)
        child.observe(seconds)

    # -- session recovery (esl_app.recovery) -----------------------------------------------------
    def call_resumed(self, checkpoint: str) -> None:
        self._resumed.labels(self.pool, checkpoint).inc()

    def call_restarted(self, reason: str) -> None:
        self._restarted.labels(self.pool, reason).inc()

    def protocol_error(self, error: Exception) -> None:
        self._errors.labels(self.pool, type(error).__name__).inc()

    # -- the data layer --------------------------------------------------------------------------
    def cache_lookup(self, tier: str, hit: bool) -> None:
        self._cache.labels(self.pool, tier, "hit" if hit else "miss").inc()

    def limit_event(self, event: str, label: str, n: int) -> None:
        if event == "slots_restored":
            self._slots_restored.labels(self.pool, label).inc(n)
        elif event == "without_redis":
            self._without_redis.labels(self.pool, label).inc(n)


_current: PoolMetrics | None = None


def install(metrics: PoolMetrics | None) -> None:
    """Make ``metrics`` the process's metrics (a worker serves one pool), data-layer lookups included."""
    global _current
    _current = metrics
    from .data import facade, limits

    facade.set_decision_hook(_count_decision if metrics is not None else None)
    limits.set_limits_hook(metrics.limit_event if metrics is not None else None)


def _count_decision(source: str) -> None:
    # a hit: answered from this process's memory (the local cache or the embedded data file)
    record_cache_lookup(source, source in ("local", "embedded"))


def current() -> PoolMetrics | None:
    return _current


def record_cache_lookup(tier: str, hit: bool) -> None:
    """For ``esl_app.data``: count a lookup in a cache tier (``process``, ``redis``...). Cheap no-op
    when no metrics are installed."""
    if _current is not None:
        _current.cache_lookup(tier, hit)
