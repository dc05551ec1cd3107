"""Routing-data building blocks without servers: models, the data file, the cache, the embedded
facade, and the gevent/asyncio bridge."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

import gevent
import pytest
from pydantic import ValidationError

from esl_app.data import (
    BlockList,
    BusinessHours,
    DataSettings,
    Holiday,
    Limits,
    RoutingData,
    Span,
    Tenant,
    load_snapshot,
    snapshot_from_dict,
)
from esl_app.data.bridge import Bridge
from esl_app.data.cache import LocalCache
from esl_app.data.settings import DEFAULT_DATA_FILE

LONDON = ZoneInfo("Europe/London")
UTC = ZoneInfo("UTC")
OPEN = datetime(2026, 11, 25, 10, 30, tzinfo=LONDON)  # a Wednesday
NIGHT = datetime(2026, 11, 25, 21, 30, tzinfo=LONDON)
H = 3600


def weekdays(opens: int, closes: int) -> tuple[tuple[Span, ...], ...]:
    return tuple((Span(opens=opens, closes=closes),) if day < 5 else () for day in range(7))


# -- models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "rule"),
    [("666", "exact:666"), ("6660", None), ("900", "prefix:900"), ("9001234", "prefix:900"), ("90", None),
     ("+4420", "prefix:+44"), ("", None), ("1900", None)],
)  # fmt: skip
def test_blocklist_exact_and_prefixes(caller, rule):
    blocks = BlockList(exact=frozenset({"666"}), prefixes=frozenset({"900", "+44"}))
    assert blocks.match(caller) == rule


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 25, 8, 0, tzinfo=LONDON), True),
        (datetime(2026, 11, 25, 7, 59, 59, tzinfo=LONDON), False),
        (datetime(2026, 11, 25, 18, 0, tzinfo=LONDON), False),
        (datetime(2026, 11, 28, 12, 0, tzinfo=LONDON), False),  # Saturday
        (datetime(2026, 12, 25, 12, 0, tzinfo=LONDON), False),  # holiday, closed all day
        (datetime(2026, 12, 24, 11, 0, tzinfo=LONDON), True),  # half day
        (datetime(2026, 12, 24, 13, 0, tzinfo=LONDON), False),
        (datetime(2026, 7, 15, 7, 0, tzinfo=UTC), True),  # 08:00 BST
        (datetime(2026, 7, 15, 6, 59, tzinfo=UTC), False),
        (datetime(2026, 11, 30, 21, 0, tzinfo=ZoneInfo("Pacific/Auckland")), True),  # Monday 08:00 GMT
    ],
)
def test_business_hours_in_the_tenant_zone_with_holidays(moment, expected):
    hours = BusinessHours(
        timezone="Europe/London",
        weekly=weekdays(8 * H, 18 * H),
        holidays=(
            Holiday(day=date(2026, 12, 25)),
            Holiday(day=date(2026, 12, 24), span=Span(opens=8 * H, closes=12 * H)),
        ),
    )  # fmt: skip
    assert hours.is_open(moment) is expected


def test_business_hours_edge_cases():
    assert BusinessHours().is_open(NIGHT)  # no schedule: always open
    late = BusinessHours(weekly=tuple((Span(opens=20 * H, closes=24 * H),) for _ in range(7)))
    assert late.is_open(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC))
    assert not late.is_open(datetime(2026, 1, 2, 0, 0, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        late.is_open(datetime(2026, 1, 1, 12, 0))
    with pytest.raises(ValidationError):
        BusinessHours(timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        Span(opens=10 * H, closes=9 * H)
    with pytest.raises(ValidationError):
        BusinessHours(weekly=((),))


def test_models_are_frozen_and_round_trip_through_json():
    tenant = Tenant(id="t", hours=BusinessHours(timezone="Europe/London", weekly=weekdays(0, 24 * H)),
                    limits=Limits(max_concurrent=3), blocklist=BlockList(prefixes=frozenset({"9"})))  # fmt: skip
    with pytest.raises(ValidationError):
        tenant.id = "other"  # type: ignore[misc]
    again = Tenant.model_validate_json(tenant.model_dump_json())
    assert again == tenant
    assert again.blocklist.match("91") == "prefix:9"


# -- the data file ----------------------------------------------------------------------------------


def test_the_embedded_demo_file():
    snapshot = load_snapshot(DEFAULT_DATA_FILE)
    numbers = {n.did: n for n in snapshot.numbers}
    assert numbers["1000"].target == "menu" and numbers["1000"].respect_hours
    assert numbers["1234"].target == "user/1234" and not numbers["1234"].respect_hours
    assert len([d for d in numbers if d.startswith("1") and len(d) == 4]) == 901  # 1000 + 1100..1999
    assert snapshot.global_blocklist.match("9001") == "prefix:900"
    demo = next(t for t in snapshot.tenants if t.id == "demo")
    assert demo.hours.is_open(OPEN) and not demo.hours.is_open(NIGHT)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"numbers": [{"did": "1", "tenant": "nobody", "target": "x"}]}, "unknown tenants"),
        ({"tenants": [{"id": "a"}], "numbers": [{"did": "1", "tenant": "a", "target": "x"}] * 2}, "twice"),
        ({"tenants": [{"id": "a", "hours": {"monday": ["08:00-09:00"]}}]}, "unknown weekdays"),
        ({"tenants": [{"id": "a", "hours": {"mon": ["09:00-08:00"]}}]}, "open before"),
        ({"tenants": [{"id": "a", "hours": {"mon": ["9-10"]}}]}, "HH:MM"),
        ({"number_ranges": [{"first": "10", "last": "100", "tenant": "a", "target": "x"}]}, "same length"),
        ({"tenants": [{"id": "bad id"}]}, "pattern"),
    ],
)
def test_bad_data_files_are_refused(raw, error):
    with pytest.raises((ValueError, ValidationError), match=error):
        snapshot_from_dict(raw)


# -- the in-process cache ---------------------------------------------------------------------------


def test_cache_is_bounded_lru_and_keeps_the_highest_revision():
    cache = LocalCache(3)
    for i in range(3):
        cache.put(("number", str(i)), i, 1, 0.0, 1)
    cache.get(("number", "0"))  # most recently used now
    cache.put(("number", "3"), 3, 1, 0.0, 1)
    assert ("number", "1") not in cache and ("number", "0") in cache and len(cache) == 3
    assert cache.evictions == 1
    assert cache.put(("number", "0"), "new", 5, 0.0, 1)
    assert not cache.put(("number", "0"), "old", 4, 0.0, 1)
    assert cache.get(("number", "0")).value == "new"
    cache.expire(("number", "0"))
    assert cache.peek(("number", "0")).expired
    assert cache.unpin(1, 42.0) == 3
    assert all(cache.peek(k).epoch == 0 and cache.peek(k).stored == 42.0 for k in cache)


# -- the embedded facade ------------------------------------------------------------------------------


@pytest.fixture
def embedded() -> RoutingData:
    data = RoutingData(DataSettings(_env_file=None))  # type: ignore[call-arg]
    data.start()
    yield data
    data.stop()


@pytest.mark.parametrize(
    ("destination", "caller", "at", "outcome", "sip_code"),
    [
        ("1000", "1001", OPEN, "route", None),
        ("1000", "1001", NIGHT, "closed", None),
        ("1234", "1001", NIGHT, "route", None),  # extensions ignore hours
        ("1000", "666", OPEN, "blocked", 403),  # global exact
        ("4242", "9001", OPEN, "blocked", 403),  # global prefix, even for unknown numbers
        ("1000", "+442079460999", OPEN, "blocked", 403),  # the tenant's own list
        ("1234", "+442079460999", OPEN, "blocked", 403),
        ("4242", "1001", OPEN, "unknown", 404),
        ("1050", "1001", OPEN, "unknown", 404),
    ],
)
def test_embedded_decisions(embedded, destination, caller, at, outcome, sip_code):
    decision = embedded.decide(destination, caller, at=at)
    assert (decision.outcome, decision.sip_code) == (outcome, sip_code)
    assert decision.source in ("local", "embedded")
    assert decision.early_exit is (outcome != "route")


def test_embedded_facade_questions(embedded):
    assert embedded.number("1000").tenant_id == "demo"
    assert embedded.number("4242") is None
    assert embedded.is_blocked("666") == "exact:666"
    assert embedded.is_blocked("+442079460999") is None
    assert embedded.is_blocked("+442079460999", "demo") == "exact:+442079460999"
    assert embedded.is_open("demo", OPEN) and not embedded.is_open("demo", NIGHT)
    assert embedded.limits("pilot") == Limits(max_concurrent=1, calls_per_second=5)
    with pytest.raises(KeyError):
        embedded.limits("nobody")


def test_embedded_limits_are_enforced_in_process_and_released(embedded):
    first = embedded.decide("3000", "1", call_id="a", at=OPEN)
    assert first.outcome == "route" and first.lease == "a" and first.lease_where == "local"
    second = embedded.decide("3000", "2", call_id="b", at=OPEN)
    assert second.outcome == "over_limit" and second.sip_code == 503
    assert "concurrent-call limit (1/1)" in second.reason
    embedded.release(first)
    embedded.release(first)  # idempotent
    assert embedded.decide("3000", "3", call_id="c", at=OPEN).outcome == "route"


def test_embedded_hit_is_fast_and_never_waits(embedded):
    embedded.decide("1000", "1001", at=OPEN)
    samples = []
    for _ in range(2000):
        started = time.perf_counter()
        embedded.decide("1000", "1001", at=OPEN)
        samples.append((time.perf_counter() - started) * 1e6)
    assert statistics.median(samples) < 50, statistics.median(samples)
    assert embedded.stats()["pg_hot_queries"] == 0


# -- the bridge ---------------------------------------------------------------------------------------


def test_bridge_greenlets_keep_running_while_a_coroutine_waits():
    bridge = Bridge("test")
    bridge.start()
    try:
        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.005)) for _ in range(1000)])
        started = time.monotonic()
        assert bridge.run(asyncio.sleep(0.2, result="slept"), timeout=2) == "slept"
        assert time.monotonic() - started >= 0.19
        assert len(ticks) >= 15  # the hub ran the ticker the whole time
        with pytest.raises(TimeoutError):
            bridge.run(asyncio.sleep(1), timeout=0.05)

        async def fail() -> None:
            raise LookupError("boom")

        with pytest.raises(LookupError, match="boom"):
            bridge.run(fail(), timeout=1)
        late = []
        result = bridge.submit(asyncio.sleep(0.05, result=7), on_done=lambda v, e: late.append((v, e)))
        assert result.get(timeout=1) == 7 and late == [(7, None)]
        called = []
        bridge.loop.call_soon_threadsafe(bridge.to_gevent, called.append, "from asyncio")
        gevent.sleep(0.05)
        assert called == ["from asyncio"]
        ticker.kill()
    finally:
        bridge.stop()
    assert not bridge.running
