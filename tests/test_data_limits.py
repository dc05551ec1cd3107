"""Per-tenant limits in Redis, shared by every process: concurrency, calls per second, leases that
expire when a worker dies, renewal for long calls, and what happens when Redis is down."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import pytest
from data_fixtures import *  # noqa: F403
from data_fixtures import REDIS_URL, Admin, TcpProxy, wait_until

LONDON = ZoneInfo("Europe/London")
OPEN = datetime(2026, 11, 25, 10, 30, tzinfo=LONDON)


def test_concurrency_holds_across_processes(make_data):
    one, two = make_data(), make_data()
    first = one.decide("3000", "1", call_id="call-a", at=OPEN)
    assert (first.outcome, first.lease, first.lease_where) == ("route", "call-a", "redis")
    refused = two.decide("3000", "2", call_id="call-b", at=OPEN)
    assert (refused.outcome, refused.sip_code, refused.cause) == ("over_limit", 503, "NORMAL_TEMPORARY_FAILURE")
    assert refused.reason == "tenant pilot over the concurrent-call limit (1/1)"
    assert one.redis.active("pilot") == 1
    one.release(first)
    assert one.redis.active("pilot") == 0
    assert two.decide("3000", "3", call_id="call-c", at=OPEN).outcome == "route"


def test_racing_greenlets_in_two_processes_get_exactly_the_limit(make_data, admin: Admin):
    admin.execute("UPDATE tenant_limits SET max_concurrent = 10, calls_per_second = NULL WHERE tenant_id = 'pilot'")
    one, two = make_data(), make_data()
    wait_until(lambda: one.limits("pilot").max_concurrent == 10 and two.limits("pilot").max_concurrent == 10)
    jobs = [gevent.spawn((one, two)[i % 2].decide, "3000", str(i), call_id=f"race-{i}", at=OPEN) for i in range(60)]
    gevent.joinall(jobs, timeout=5)
    outcomes = [job.value.outcome for job in jobs]
    assert outcomes.count("route") == 10 and outcomes.count("over_limit") == 50
    assert one.redis.active("pilot") == 10


def test_calls_per_second_is_a_sliding_window(make_data, admin: Admin):
    admin.execute("UPDATE tenant_limits SET max_concurrent = NULL, calls_per_second = 5 WHERE tenant_id = 'pilot'")
    one, two = make_data(), make_data()
    wait_until(lambda: one.limits("pilot").max_concurrent is None and two.limits("pilot").max_concurrent is None)
    outcomes = [(one, two)[i % 2].decide("3000", str(i), call_id=f"rate-{i}", at=OPEN) for i in range(7)]
    assert [d.outcome for d in outcomes] == ["route"] * 5 + ["over_limit"] * 2
    assert outcomes[-1].reason == "tenant pilot over the call-rate limit (5 calls/s)"
    assert outcomes[0].lease is None  # no concurrency limit: nothing to give back
    time.sleep(1.05)
    assert one.decide("3000", "8", call_id="rate-8", at=OPEN).outcome == "route"


def test_a_crashed_workers_slots_expire(make_data):
    crashed = make_data(lease_seconds=0.3)
    survivor = make_data(lease_seconds=0.3)
    assert crashed.decide("3000", "1", call_id="orphan", at=OPEN).outcome == "route"
    crashed.limiter.stop()  # the worker dies: nobody renews or releases its slot
    assert survivor.decide("3000", "2", call_id="x", at=OPEN).outcome == "over_limit"
    time.sleep(0.35)
    assert survivor.decide("3000", "3", call_id="y", at=OPEN).outcome == "route"


def test_a_live_call_keeps_its_slot_by_renewal(make_data):
    worker = make_data(lease_seconds=0.3)
    other = make_data(lease_seconds=0.3)
    held = worker.decide("3000", "1", call_id="long-call", at=OPEN)
    assert held.outcome == "route"
    gevent.sleep(0.8)  # well past the lease: renewed every 0.1 s
    assert other.decide("3000", "2", call_id="z", at=OPEN).outcome == "over_limit"
    worker.release(held)
    assert other.decide("3000", "3", call_id="w", at=OPEN).outcome == "route"


@pytest.mark.parametrize(
    ("mode", "outcomes"),
    [("local", ["route", "over_limit"]), ("allow", ["route", "route"]), ("refuse", ["over_limit", "over_limit"])],
)
def test_limits_without_redis(make_data, mode, outcomes):
    proxy = TcpProxy("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    try:
        data = make_data(redis_url=f"redis://127.0.0.1:{proxy.port}/0", limits_without_redis=mode)
        proxy.cut()
        decisions = [data.decide("3000", str(i), call_id=f"nr-{i}", at=OPEN) for i in range(2)]
        assert [d.outcome for d in decisions] == outcomes
        if mode == "local":
            assert decisions[0].lease_where == "local"
            data.release(decisions[0])
            assert data.decide("3000", "9", call_id="nr-9", at=OPEN).outcome == "route"
        if mode == "refuse":
            assert decisions[0].reason == "tenant pilot limits cannot be checked (Redis unavailable)"
    finally:
        proxy.close()
