"""Per-tenant limits in Redis, shared by every process: concurrency, calls per second, leases that
expire when a worker dies, renewal for long calls, and what happens when Redis is down."""

from __future__ import annotations

import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import pytest
from data_fixtures import *  # noqa: F403
from data_fixtures import REDIS_URL, Admin, TcpProxy, wait_until

from esl_app.data import Limits
from esl_app.data.limits import Limiter, pool_workers
from esl_app.data.redis_tier import RedisTier, RedisUnavailable

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


REDIS_PORT = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])


def race(one, two, calls: int = 60) -> list[str]:
    """``calls`` greenlets, alternately in each "process", decide at the same instant."""
    jobs = [gevent.spawn((one, two)[i % 2].decide, "3000", str(i), call_id=f"race-{i}", at=OPEN) for i in range(calls)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    outcomes = [job.value.outcome for job in jobs]
    print(f"routed {outcomes.count('route')} for a limit of 10 ({outcomes.count('over_limit')} refused)")
    return outcomes


def redis_slots(redis_client, data, tenant: str = "pilot") -> set[str]:
    return {member.decode() for member in redis_client.zrange(data.redis.limit_keys(tenant)[0], 0, -1)}


def settled(data) -> bool:
    """No answer awaited, nothing left to give back or to record: the worker's books match Redis."""
    return not data.limiter.pending and not data.limiter.to_release and not +data.limiter.unrecorded


@pytest.mark.usefixtures("busy_cpu")
@pytest.mark.parametrize("latency", [0.0, 0.05], ids=["direct", "50ms-latency"])
def test_racing_greenlets_in_two_processes_get_exactly_the_limit(make_data, admin: Admin, redis_client, latency):
    """Default budgets, the CPU loaded by busy processes; with or without 50 ms of latency injected
    between the workers and Redis. Whatever mix of checks Redis answers in time (all, some, or none:
    with 50 ms each way, every check times out at 20 ms), exactly 10 calls go through: each worker
    falls back to its share (10 / 2 workers), counting what it holds. The late answers are then
    reconciled and the calls admitted without Redis recorded, so Redis holds exactly the calls that are
    up."""
    admin.execute("UPDATE tenant_limits SET max_concurrent = 10, calls_per_second = NULL WHERE tenant_id = 'pilot'")
    proxy = TcpProxy("127.0.0.1", REDIS_PORT)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0" if latency else REDIS_URL
        one, two = make_data(redis_url=url), make_data(redis_url=url)
        wait_until(lambda: one.limits("pilot").max_concurrent == 10 and two.limits("pilot").max_concurrent == 10)
        wait_until(lambda: one.limiter.workers() == two.limiter.workers() == 2)  # each knows of the other
        proxy.delay = latency
        outcomes = race(one, two)
        assert outcomes.count("route") == 10 and outcomes.count("over_limit") == 50
        routed = {f"race-{i}" for i, outcome in enumerate(outcomes) if outcome == "route"}
        wait_until(lambda: redis_slots(redis_client, one) == routed and settled(one) and settled(two), timeout=10)
        if latency:
            # every late script that took a slot was kept (its call was admitted) or given back (and
            # then maybe taken by a later one); every admitted call whose script did not take one
            # was recorded
            kept = sum(data.limiter.reconciled["late_kept"] for data in (one, two))
            released = sum(data.limiter.reconciled["late_released"] for data in (one, two))
            recorded = sum(data.limiter.reconciled["recorded_unrecorded"] for data in (one, two))
            assert kept + recorded == 10 and kept + released >= 10, (kept, released, recorded)
    finally:
        proxy.close()


def test_the_check_and_take_is_atomic_across_processes(make_data, admin: Admin):
    """Budgets generous enough that Redis answers every check: the Lua script alone decides."""
    admin.execute("UPDATE tenant_limits SET max_concurrent = 10, calls_per_second = NULL WHERE tenant_id = 'pilot'")
    one, two = (make_data(budget_ms=5000, redis_timeout_ms=2000) for _ in range(2))
    wait_until(lambda: one.limits("pilot").max_concurrent == 10 and two.limits("pilot").max_concurrent == 10)
    outcomes = race(one, two)
    assert outcomes.count("route") == 10 and outcomes.count("over_limit") == 50
    assert one.redis.active("pilot") == 10
    assert one.limiter.local_decisions == two.limiter.local_decisions == 0


def test_an_uneven_split_is_not_exceeded_when_redis_goes(make_data, admin: Admin):
    """Redis gave 7 slots to one worker and 3 to the other, then went away. A plain share (5 each)
    would let the second admit 2 more; its last view of Redis (10 of 10 taken) leaves it no headroom."""
    admin.execute("UPDATE tenant_limits SET max_concurrent = 10, calls_per_second = NULL WHERE tenant_id = 'pilot'")
    proxy = TcpProxy("127.0.0.1", REDIS_PORT)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        one, two = make_data(redis_url=url), make_data(redis_url=url)
        wait_until(lambda: one.limits("pilot").max_concurrent == 10 and two.limits("pilot").max_concurrent == 10)
        wait_until(lambda: one.limiter.workers() == two.limiter.workers() == 2)
        first = [one.decide("3000", str(i), call_id=f"one-{i}", at=OPEN) for i in range(7)]
        second = [two.decide("3000", str(i), call_id=f"two-{i}", at=OPEN) for i in range(3)]
        assert {d.lease_where for d in first + second} == {"redis"}
        proxy.cut()
        later = [data.decide("3000", "9", call_id=f"cut-{i}", at=OPEN) for i in range(6) for data in (one, two)]
        assert [d.outcome for d in later] == ["over_limit"] * 12
        assert "over its share of the concurrent-call limit without Redis" in later[1].reason
        one.release(first[0])  # a call ends: this worker may use its slot again, the other still not
        assert one.decide("3000", "9", call_id="after-0", at=OPEN).outcome == "over_limit"  # 6 held > share
        for decision in first[1:3]:
            one.release(decision)
        assert one.decide("3000", "9", call_id="after-1", at=OPEN).outcome == "route"  # 4 held, 1 freed
    finally:
        proxy.close()


def test_renewal_restores_slots_redis_lost(make_data, redis_client, caplog):
    """Issue 15: max_concurrent = 1, A admitted, B refused; Redis loses the slot (a restart, a failover,
    an outage longer than the lease). Renewal puts A's slot back, logs it and counts it, so C is
    refused while A is still up."""
    from esl_app import metrics

    pool_metrics = metrics.PoolMetrics("limits-test")
    metrics.install(pool_metrics)
    try:
        one, two = make_data(lease_seconds=0.6), make_data(lease_seconds=0.6)
        a = one.decide("3000", "1", call_id="call-a", at=OPEN)
        assert (a.outcome, a.lease_where) == ("route", "redis")
        assert two.decide("3000", "2", call_id="call-b", at=OPEN).outcome == "over_limit"
        redis_client.delete(one.redis.limit_keys("pilot")[0])  # what a restart leaves
        restored = lambda: redis_slots(redis_client, one) == {"call-a"} and one.limiter.reconciled["restored_lost"]  # noqa: E731
        wait_until(restored, timeout=5)
        c = two.decide("3000", "3", call_id="call-c", at=OPEN)
        assert (c.outcome, c.reason) == ("over_limit", "tenant pilot over the concurrent-call limit (1/1)")
        assert one.limiter.reconciled["restored_lost"] == 1  # once, and said so:
        assert any("Redis had lost 1 of this worker's 1 call slots" in r.getMessage() for r in caplog.records)
        sample = pool_metrics.registry.get_sample_value(
            "esl_app_data_limit_slots_restored_total", {"pool": "limits-test", "reason": "lost"}
        )
        assert sample == 1
        one.release(a)
        assert two.decide("3000", "4", call_id="call-d", at=OPEN).outcome == "route"
    finally:
        metrics.install(None)


def test_a_redis_that_lost_everything_gets_the_slots_back_within_a_heartbeat(make_data, redis_client):
    """A restart empties the worker registry too: the next heartbeat (1 s) sees it, and the slots are
    put back then, not at the next renewal (every lease / 3: 10 s by default)."""
    one = make_data(lease_seconds=30)
    a = one.decide("3000", "1", call_id="call-a", at=OPEN)
    assert a.lease_where == "redis"
    for key in redis_client.scan_iter(match=one.redis.prefix + "*"):  # everything under the prefix
        redis_client.delete(key)
    started = time.monotonic()
    wait_until(lambda: redis_slots(redis_client, one) == {"call-a"}, timeout=5)
    assert time.monotonic() - started < 3


def test_calls_admitted_without_redis_are_recorded_when_it_returns(make_data, redis_client):
    proxy = TcpProxy("127.0.0.1", REDIS_PORT)
    try:
        data = make_data(redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        proxy.cut()
        local = data.decide("3000", "1", call_id="while-down", at=OPEN)
        assert (local.outcome, local.lease_where) == ("route", "local")
        proxy.restore()
        wait_until(lambda: redis_slots(redis_client, data) == {"while-down"} and settled(data), timeout=10)
        assert data.limiter.reconciled["recorded_unrecorded"] == 1
        other = make_data()  # another worker, Redis reachable: the call recorded counts against it
        assert other.decide("3000", "2", call_id="other", at=OPEN).outcome == "over_limit"
        data.release(local)
        assert redis_slots(redis_client, data) == set()
    finally:
        proxy.close()


def test_a_check_cut_short_by_the_budget_does_not_open_the_breaker(redis_prefix):
    """Only a wait of a whole per-operation timeout says Redis is slow. When the decision's budget was
    spent elsewhere (e.g. queued Postgres lookups) and little is left, a timeout says nothing about
    Redis, and must not make every other call skip it."""
    proxy = TcpProxy("127.0.0.1", REDIS_PORT, delay=0.05)
    tier = RedisTier(f"redis://127.0.0.1:{proxy.port}/0", redis_prefix, timeout=0.02, retry_interval=30)
    try:
        for i in range(5):
            with pytest.raises(RedisUnavailable):
                tier.acquire("pilot", f"short-{i}", 1, None, 1.0, timeout=0.002)
        assert tier.available()
        for i in range(3):
            with pytest.raises(RedisUnavailable):
                tier.acquire("pilot", f"full-{i}", 1, None, 1.0, timeout=tier.timeout)
        assert not tier.available()
    finally:
        tier.close()
        proxy.close()


def test_the_share_counts_the_workers_of_the_pools(monkeypatch):
    """Without Redis's registry, a worker started by the supervisor knows its host's pools: 4 workers
    share a limit of 8, so each admits 2."""
    spec = {"settings": {"pools": {"inbound": {"workers": 3}, "outbound": {"workers": 1}}}}
    monkeypatch.setenv("ESL_APP_WORKER_SPEC", json.dumps(spec))
    assert pool_workers() == 4
    limiter = Limiter(None)
    eight = Limits(max_concurrent=8)
    verdicts = [limiter.acquire("t", f"c{i}", eight, 0.05) for i in range(3)]
    assert [allowed for allowed, _, _ in verdicts] == [True, True, False]
    assert verdicts[2][1] == "over its share of the concurrent-call limit (2/2 in this worker, 8 over 4 workers)"
    monkeypatch.delenv("ESL_APP_WORKER_SPEC")
    assert pool_workers() == 1


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
    proxy = TcpProxy("127.0.0.1", REDIS_PORT)
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
