"""``esl-app bench-data``: decision latency per tier and invalidation propagation, measured.

Runs against the configured Postgres and Redis in a scratch schema and key prefix (removed after):

- in-process hit: ``decide()`` for a warm number, everything from this process's cache;
- Redis hit: the number's local entry dropped before each decision, so it comes from Redis;
- Postgres miss: a never-seen number each time (Redis has nothing, Postgres answers "unknown");
- limits: one Redis Lua round trip for a tenant with a concurrency limit (take + release);
- propagation: an UPDATE in Postgres until two running instances ("processes") and Redis have it;
- Postgres queries on the hot path once warm (counted, must be 0).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import gevent

from .bridge import Bridge
from .facade import RoutingData
from .migrate import migrate, seed
from .settings import DEFAULT_DATA_FILE, DataSettings
from .snapshot import load_snapshot

OPEN = datetime(2026, 11, 25, 10, 30, tzinfo=ZoneInfo("Europe/London"))


def percentiles(samples_us: list[float]) -> dict[str, float]:
    ordered = sorted(samples_us)
    return {
        "n": len(ordered),
        "p50_us": round(statistics.median(ordered), 2),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_us": round(ordered[-1], 2),
    }


def _time(fn: Callable[[], Any], n: int, before: Callable[[int], None] | None = None) -> list[float]:
    samples = []
    for i in range(n):
        if before is not None:
            before(i)
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e6)
        if i % 200 == 0:
            gevent.sleep(0)  # let the hub run (Redis write-backs, notifications)
    return samples


def run(dsn: str, redis_url: str, *, iterations: int = 5000, changes: int = 30) -> dict[str, Any]:
    schema = f"esl_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"esl-bench-{uuid.uuid4().hex[:10]}:"
    bridge = Bridge("bench-admin")
    bridge.start()
    admin: Any = None

    async def create() -> Any:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await migrate(conn)
        await seed(conn, load_snapshot(DEFAULT_DATA_FILE))
        return conn

    admin = bridge.run(create(), timeout=60)
    settings = DataSettings(_env_file=None, postgres_dsn=dsn, postgres_schema=schema,  # type: ignore[call-arg]
                            redis_url=redis_url, redis_prefix=prefix)  # fmt: skip
    one, two = RoutingData(settings), RoutingData(settings)
    results: dict[str, Any] = {}
    try:
        one.start()
        two.start()
        redis_tier = one.redis
        assert redis_tier is not None and one.pg is not None
        gevent.sleep(0.5)  # the bulk load's write-back to Redis
        for _ in range(200):  # warm-up
            one.decide("1000", "1001", at=OPEN)
        queries_before, hot_before = one.pg.queries, one.counts["pg_hot_queries"]
        dids = [str(1100 + i % 900) for i in range(iterations)]
        results["in_process_hit"] = percentiles(
            _time(lambda: one.decide("1000", "1001", at=OPEN), iterations)
        )
        results["in_process_hit_any_number"] = percentiles(
            _time(lambda: [one.decide(d, "1001", at=OPEN) for d in dids[:1]], iterations)
        )
        results["pg_queries_when_warm"] = one.pg.queries - queries_before
        results["pg_hot_path_queries_when_warm"] = one.counts["pg_hot_queries"] - hot_before

        current = {"did": ""}

        def drop_local(i: int) -> None:
            current["did"] = dids[i]
            one.cache._entries.pop(("number", dids[i]), None)

        redis_before = one.counts["redis"]
        results["redis_hit"] = percentiles(
            _time(lambda: one.decide(current["did"], "1001", at=OPEN), min(iterations, 3000), drop_local)
        )
        results["redis_hits_counted"] = one.counts["redis"] - redis_before

        def fresh_unknown(i: int) -> None:
            current["did"] = f"77{i:08d}"

        pg_before = one.counts["pg_hot_queries"]
        results["postgres_miss"] = percentiles(
            _time(lambda: one.decide(current["did"], "1001", at=OPEN), min(iterations, 1000), fresh_unknown)
        )
        results["postgres_miss_queries"] = one.counts["pg_hot_queries"] - pg_before

        def take_and_release(i: int) -> None:
            current["did"] = f"bench-{i}"

        def limited() -> None:
            decision = one.decide("3000", "1001", call_id=current["did"], at=OPEN)
            one.release(decision)

        results["limits_redis_roundtrip"] = percentiles(
            _time(limited, min(iterations, 2000), take_and_release)
        )

        # propagation: statement issued → both instances' caches changed, and Redis
        seen: dict[str, dict[int, float]] = {"one": {}, "two": {}}
        one.change_hooks.append(lambda k, key, v, rev: seen["one"].setdefault(rev, time.perf_counter()))
        two.change_hooks.append(lambda k, key, v, rev: seen["two"].setdefault(rev, time.perf_counter()))
        local_ms, both_ms, redis_ms = [], [], []
        for i in range(changes):
            target = f"user/{5000 + i}"
            started = time.perf_counter()
            bridge.run(admin.execute("UPDATE numbers SET target = $1 WHERE did = '1234'", target), timeout=5)
            deadline = time.monotonic() + 2
            while not (one.decide("1234", "1001", at=OPEN).target == target
                       and two.decide("1234", "1001", at=OPEN).target == target):  # fmt: skip
                if time.monotonic() > deadline:
                    raise RuntimeError("a change did not propagate within 2 s")
                gevent.sleep(0.0002)
            both_ms.append((time.perf_counter() - started) * 1000)
            rev = max(seen["one"])
            local_ms.append((seen["one"][rev] - started) * 1000)
            while target.encode() not in (redis_tier.client.get(redis_tier.key("number", "1234")) or b""):
                if time.monotonic() > deadline:
                    raise RuntimeError("Redis did not get the change within 2 s")
                gevent.sleep(0.0002)
            redis_ms.append((time.perf_counter() - started) * 1000)
            gevent.sleep(0.01)
        results["propagation_ms"] = {
            "one_process_p50": round(statistics.median(local_ms), 2),
            "one_process_max": round(max(local_ms), 2),
            "two_processes_p50": round(statistics.median(both_ms), 2),
            "two_processes_max": round(max(both_ms), 2),
            "redis_p50": round(statistics.median(redis_ms), 2),
            "redis_max": round(max(redis_ms), 2),
            "changes": changes,
        }
    finally:
        one.stop()
        two.stop()
        if one.redis is not None:
            with contextlib.suppress(Exception):
                one.redis.delete_prefix()

        async def drop() -> None:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()

        bridge.run(drop(), timeout=60)
        bridge.stop()
    return results


def report(results: dict[str, Any]) -> str:
    lines = ["routing-data decision latency (µs):", f"  {'tier':<28}{'p50':>10}{'p99':>10}{'max':>10}{'n':>8}"]
    for name in ("in_process_hit", "in_process_hit_any_number", "redis_hit", "postgres_miss", "limits_redis_roundtrip"):
        r = results[name]
        lines.append(f"  {name:<28}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['max_us']:>10.1f}{r['n']:>8}")
    p = results["propagation_ms"]
    lines += [
        f"Postgres queries on the hot path once warm: {results['pg_hot_path_queries_when_warm']}"
        f" (all queries meanwhile: {results['pg_queries_when_warm']})",
        f"Redis hits counted: {results['redis_hits_counted']}; Postgres queries for misses: "
        f"{results['postgres_miss_queries']}",
        f"invalidation propagation over {p['changes']} changes (ms, from issuing the UPDATE):",
        f"  to one process's cache: p50 {p['one_process_p50']}, max {p['one_process_max']}",
        f"  to two processes' caches: p50 {p['two_processes_p50']}, max {p['two_processes_max']}",
        f"  to Redis: p50 {p['redis_p50']}, max {p['redis_max']}",
    ]
    return "\n".join(lines)


def main(dsn: str, redis_url: str, iterations: int, changes: int, as_json: bool) -> int:
    results = run(dsn, redis_url, iterations=iterations, changes=changes)
    print(json.dumps(results, indent=2) if as_json else report(results))
    return 0
