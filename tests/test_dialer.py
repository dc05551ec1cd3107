"""The dialer against fake outbound nodes, real Postgres and Redis: DNC, retries by cause, the calling
window, pause and resume (one in-process instance)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
import redis
from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN, REDIS_URL
from dialer_fixtures import (
    Holder,
    cluster_settings,
    counted_attempts,
    holder,  # noqa: F401
    make_campaign,
    set_status,
    start_nodes,
    wait_for,
)

from esl_app.dialer import Dialer, DialerSettings
from esl_app.dialer import store as dstore


@pytest.fixture
def nodes() -> Iterator[list[Any]]:
    started = start_nodes(2)
    yield started
    for node in started:
        node.stop()


@pytest.fixture
def dialer(pg_schema: str, redis_client: redis.Redis, redis_prefix: str, nodes: list[Any],
           holder: Holder) -> Iterator[Dialer]:  # noqa: F811
    settings = DialerSettings(name="t1", socket_port=holder.port, lease=2, tick=0.02, status_refresh=0.1,
                              reconcile_interval=0.3)  # fmt: skip
    d = Dialer(settings, cluster_settings(nodes), PG_DSN, pg_schema, REDIS_URL, redis_prefix=redis_prefix)
    d.start()
    assert d.registry.wait_until(lambda: all(d.registry.state(n.name).value == "up" for n in nodes), 10)
    yield d
    d.stop()


def total_calls(nodes: list[Any], number: str) -> int:
    return sum(node.calls_to(number) for node in nodes)


def campaign_status(admin: Any, campaign_id: int) -> str:
    return admin.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)


def test_retries_follow_the_cause_and_dnc_numbers_are_never_called(admin: Any, nodes: list[Any],
                                                                   dialer: Dialer) -> None:
    outcomes = {"+15550000001": "answer", "+15550000002": "busy", "+15550000003": "no_answer",
                "+15550000004": "reject", "+15550000005": "fail:NORMAL_TEMPORARY_FAILURE",
                "+15550000006": "unroutable", "+15550000007": "answer", "+15550000008": "answer"}  # fmt: skip
    for node in nodes:
        for number, outcome in outcomes.items():
            node.set_outcome(number, outcome, ring_seconds=0.05, hangup_after=0.2)
    admin.bridge.run(dstore.add_dnc(admin.conn, ["+15550000007"], None), timeout=5)  # global
    admin.bridge.run(dstore.add_dnc(admin.conn, ["+15550000008"], "demo"), timeout=5)  # this tenant
    campaign_id = make_campaign(admin, numbers=list(outcomes), max_attempts=3)
    set_status(admin, "spring", "running")
    wait_for(lambda: campaign_status(admin, campaign_id) == "done", 30)
    attempts = counted_attempts(admin, campaign_id)
    expected = {"+15550000001": ["answered"], "+15550000002": ["busy"] * 3, "+15550000003": ["no_answer"] * 3,
                "+15550000004": ["failed"] * 3, "+15550000005": ["failed"] * 3, "+15550000006": ["final"]}  # fmt: skip
    assert {n: [a["outcome"] for a in rows] for n, rows in attempts.items()} == expected
    for number in outcomes:
        assert total_calls(nodes, number) == len(expected.get(number, [])), number
    states = dict(admin.fetch("SELECT number, state FROM contacts WHERE campaign_id = $1", campaign_id))
    assert states["+15550000007"] == states["+15550000008"] == "dnc"
    assert states["+15550000001"] == "done" and states["+15550000002"] == "exhausted"
    rows = attempts["+15550000002"]
    assert [a["attempt_number"] for a in rows] == [1, 2, 3]
    assert all(a["hangup_cause"] == "USER_BUSY" and a["node"] in ("fs1", "fs2") for a in rows)
    # the retry delay (0.3 s) was kept between attempts
    assert all((b["created_at"] - a["ended_at"]).total_seconds() >= 0.29 for a, b in itertools.pairwise(rows))
    answered = attempts["+15550000001"][0]
    wait_for(lambda: admin.fetchval("SELECT ended_at FROM attempts WHERE id = $1", answered["id"]), 10)
    call = next(c for node in nodes for c in node.calls if c.destination == "+15550000001")
    variables = call.request.variables
    assert variables["esl_app_campaign"] == str(campaign_id)
    assert variables["esl_app_attempt"] == str(answered["id"])
    assert variables["esl_app_contact"] == str(answered["contact_id"])
    assert variables["esl_app_flow"] == "survey" and variables["esl_app_var_name"] == "c0"
    assert call.request.app is not None and "socket" in str(call.request.app)


def test_nothing_is_called_outside_the_window_and_pause_takes_effect_within_a_second(
    admin: Any, nodes: list[Any], dialer: Dialer
) -> None:
    numbers = [f"+1555100{i:04d}" for i in range(200)]
    for node in nodes:
        node.default_outcome = node.default_outcome.model_copy(update={"hangup_after": 0.05})
    # the tenant (demo) is in Europe/London; a window that excludes now on every weekday
    from zoneinfo import ZoneInfo

    local = dt.datetime.now(ZoneInfo("Europe/London"))
    closed_from = (local + dt.timedelta(hours=2)).time().replace(microsecond=0, second=0)
    spans = [dstore.Span(weekday=d, opens=dt.time(0, 0), closes=dt.time(0, 1)) for d in range(7)]
    if local.time() < dt.time(0, 2):
        spans = [dstore.Span(weekday=d, opens=closed_from, closes=dt.time(23, 59)) for d in range(7)]
    campaign_id = make_campaign(admin, numbers=numbers, cps=20, schedule=spans)
    set_status(admin, "spring", "running")
    gevent.sleep(1.5)
    assert admin.fetchval("SELECT count(*) FROM attempts WHERE campaign_id = $1", campaign_id) == 0
    assert sum(len(node.calls) for node in nodes) == 0
    # open the window now: calls start
    admin.execute("UPDATE campaign_hours SET opens = '00:00', closes = '23:59:59' WHERE campaign_id = $1", campaign_id)
    wait_for(lambda: admin.fetchval("SELECT count(*) FROM attempts WHERE campaign_id = $1", campaign_id) >= 20, 15)
    set_status(admin, "spring", "paused")
    paused_at = admin.fetchval("SELECT now()")
    gevent.sleep(2.0)
    late = admin.fetchval(
        "SELECT count(*) FROM attempts WHERE campaign_id = $1 AND created_at > $2::timestamptz + interval '1 second'",
        campaign_id, paused_at,
    )  # fmt: skip
    assert late == 0
    before = admin.fetchval("SELECT count(*) FROM attempts WHERE campaign_id = $1", campaign_id)
    assert before < len(numbers)
    set_status(admin, "spring", "running")
    wait_for(lambda: admin.fetchval("SELECT count(*) FROM attempts WHERE campaign_id = $1", campaign_id) > before, 5)


def attempts_between(admin: Any, campaign_id: int, start: Any, seconds: float) -> int:
    return admin.fetchval(
        "SELECT count(*) FROM attempts WHERE campaign_id = $1 AND outcome IS DISTINCT FROM 'not_originated'"
        " AND created_at >= $2::timestamptz AND created_at < $2::timestamptz + make_interval(secs => $3)",
        campaign_id, start, seconds,
    )  # fmt: skip


def test_the_tenant_limits_from_the_routing_data_bind_the_campaign(admin: Any, nodes: list[Any],
                                                                 dialer: Dialer) -> None:
    # tenant "demo": 500 concurrent, no rate; limit it to 3 calls at once and 4 calls per second
    admin.execute("UPDATE tenant_limits SET max_concurrent = 3, calls_per_second = 4 WHERE tenant_id = 'demo'")
    for node in nodes:
        node.default_outcome = node.default_outcome.model_copy(update={"hangup_after": 0.5})
    campaign_id = make_campaign(admin, numbers=[f"+1555300{i:04d}" for i in range(100)], cps=50, max_concurrent=50)
    set_status(admin, "spring", "running")
    start = wait_for(lambda: admin.fetchval("SELECT min(created_at) FROM attempts WHERE campaign_id = $1",
                                            campaign_id), 10)  # fmt: skip
    peak = 0
    for _ in range(30):
        peak = max(peak, sum(len(node.live_calls) for node in nodes))
        gevent.sleep(0.1)
    assert 1 <= peak <= 3
    # 3 s: at most 3 calls at once lasting 0.5 s (<= 6/s), and at most 4/s (+ the 1-token burst)
    assert attempts_between(admin, campaign_id, start, 3.0) <= 4 * 3 + 1


def test_each_node_takes_its_share_of_calls_per_second(admin: Any, nodes: list[Any], dialer: Dialer) -> None:
    for node in nodes:
        node.default_outcome = node.default_outcome.model_copy(update={"hangup_after": 0.05})
    dialer.paced._node_cps = 3.0  # two nodes of weight 1: 6 calls per second in all
    campaign_id = make_campaign(admin, numbers=[f"+1555400{i:04d}" for i in range(200)], cps=100, max_concurrent=100)
    set_status(admin, "spring", "running")
    start = wait_for(lambda: admin.fetchval("SELECT min(created_at) FROM attempts WHERE campaign_id = $1",
                                            campaign_id), 10)  # fmt: skip
    gevent.sleep(3.5)
    counted = attempts_between(admin, campaign_id, start, 3.0)
    assert 6 <= counted <= 3 * 6 + 2, counted  # the campaign alone would have placed ~300
    assert all(node.calls for node in nodes)
    # contacts are claimed only as fast as the nodes take calls: few claims end "not originated"
    wasted = admin.fetchval("SELECT count(*) FROM attempts WHERE campaign_id = $1 AND outcome = 'not_originated'",
                            campaign_id)  # fmt: skip
    assert wasted <= counted // 2, (wasted, counted)


def test_an_answered_call_runs_the_outbound_flow_which_reads_its_campaign_and_contact(
    admin: Any, pg_schema: str, redis_prefix: str, nodes: list[Any]
) -> None:
    from esl_app import App, Call
    from esl_app.dialer.flow import campaign_call
    from esl_app.session import SessionSettings
    from esl_app.transport import OutboundServer

    app = App("dialer-test", SessionSettings(hangup_wait=0.2))
    seen: list[tuple[Any, str | None]] = []

    @app.route(variables={"esl_app_flow": "survey"}, pool="outbound")
    def survey(call: Call) -> None:
        who = campaign_call(call)
        seen.append((who, who.variable(call, "name") if who else None))
        call.answer()
        call.hangup()

    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    settings = DialerSettings(name="flow", socket_port=server.address[1], lease=2, tick=0.02, status_refresh=0.1,
                              reconcile_interval=0.3)  # fmt: skip
    d = Dialer(settings, cluster_settings(nodes), PG_DSN, pg_schema, REDIS_URL, redis_prefix=redis_prefix)
    try:
        d.start()
        assert d.registry.wait_until(lambda: d.registry.pick("outbound") is not None, 10)
        campaign_id = make_campaign(admin, numbers=["+15550009001"])
        set_status(admin, "spring", "running")
        wait_for(lambda: seen, 15)
        rows = wait_for(lambda: admin.fetch("SELECT * FROM attempts WHERE campaign_id = $1 AND ended_at"
                                            " IS NOT NULL", campaign_id), 10)  # fmt: skip
        attempt = rows[0]
    finally:
        d.stop()
        server.stop(deadline=2)
    who, name = seen[0]
    assert who is not None and name == "c0"
    assert (who.campaign_id, who.contact_id, who.attempt_id, who.flow) == (
        campaign_id, attempt["contact_id"], attempt["id"], "survey")  # fmt: skip
    assert attempt["outcome"] == "answered" and attempt["hangup_cause"] == "NORMAL_CLEARING"


def test_an_answered_call_whose_hangup_was_missed_stops_counting_once_its_node_says_it_is_gone(
    admin: Any, dialer: Dialer
) -> None:
    campaign_id = make_campaign(admin, numbers=["+15550009101"])
    contact_id = admin.fetchval("SELECT id FROM contacts WHERE campaign_id = $1", campaign_id)
    gone = "0b7c6c1e-7d0e-4a43-9d7b-2a3f0e0c9a01"
    admin.execute(
        "INSERT INTO attempts (campaign_id, contact_id, attempt_number, origination_uuid, dialer, node, outcome,"
        " answered_at) VALUES ($1, $2, 1, $3, 'dead', 'fs1', 'answered', now() - interval '1 hour')",
        campaign_id, contact_id, gone,
    )  # fmt: skip
    dialer.settings.unseen_end_after = 60.0
    set_status(admin, "spring", "paused")  # watched (reconciled), no new calls
    cause = wait_for(lambda: admin.fetchval("SELECT hangup_cause FROM attempts WHERE origination_uuid = $1", gone), 10)
    assert cause == "END_NOT_SEEN"
