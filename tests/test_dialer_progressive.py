"""Progressive dialing into a queue: a campaign paced by its queue's idle agents, answered calls that
find no agent in time abandoned (message, recorded, retried after 72 h), with real Postgres and Redis,
a fake outbound node, the ``callflows.progressive`` flow on an outbound server and a QueueService."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN, REDIS_URL
from dialer_fixtures import cluster_settings, counted_attempts, make_campaign, set_status, start_nodes, wait_for
from queue_fixtures import *  # noqa: F403
from queue_fixtures import simple_config

from esl_app.dialer import Dialer, DialerSettings, metrics
from esl_app.queue import QueueService
from esl_app.transport import OutboundServer

MESSAGE = "ivr/acme-sorry-we-will-call-back-02071234567.wav"


@pytest.fixture
def node() -> Iterator[Any]:
    (started,) = start_nodes(1)
    yield started
    started.stop()


@pytest.fixture
def progressive_dialer(pg_schema: str, redis_prefix: str, node: Any) -> Iterator[Callable[[], Dialer]]:
    """``make()``: the outbound pool (callflows.progressive on an OutboundServer) and a started dialer."""
    from callflows.progressive import app

    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    made: list[Dialer] = []

    def make() -> Dialer:
        settings = DialerSettings(name="prog", socket_port=server.address[1], lease=2, tick=0.02,
                                  status_refresh=0.1, reconcile_interval=0.2, queue_prefix=redis_prefix)  # fmt: skip
        d = Dialer(settings, cluster_settings([node]), PG_DSN, pg_schema, REDIS_URL, redis_prefix=redis_prefix)
        made.append(d)
        d.start()
        assert d.registry.wait_until(lambda: d.registry.pick("outbound") is not None, 10)
        return d

    yield make
    for d in made:
        d.stop()
    server.stop(deadline=2)


def live_calls(node: Any) -> int:
    return len(node.live_calls)


def test_two_idle_agents_at_ratio_one_never_more_than_two_calls(
    admin: Any, acd: Callable[..., QueueService], node: Any, progressive_dialer: Callable[[], Dialer]
) -> None:
    # wrap-up 1 s: an agent who served a call is not idle for a second, so the next pair waits for it
    service = acd(simple_config(agents=2, wrap_up_seconds=1))
    service.login("a1")
    service.login("a2")
    numbers = [f"+1555000110{i}" for i in range(4)]
    for number in numbers:
        node.set_outcome(number, "answer", ring_seconds=0.1)
    dialer = progressive_dialer()
    campaign_id = make_campaign(admin, "prog-ratio1", numbers=numbers, flow="progressive", queue="support",
                                dial_ratio=1.0, abandon_after=0.3, abandon_message=MESSAGE,
                                cps=50, max_concurrent=50)  # fmt: skip
    peak = 0

    def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, live_calls(node))
            gevent.sleep(0.002)

    sampler = gevent.spawn(sample)
    try:
        set_status(admin, "prog-ratio1", "running")
        wait_for(lambda: len([r for rows in counted_attempts(admin, campaign_id).values() for r in rows
                              if r["ended_at"] is not None]) == 4, 15)  # fmt: skip
    finally:
        sampler.kill()
    attempts = sorted((r for rows in counted_attempts(admin, campaign_id).values() for r in rows),
                      key=lambda r: r["created_at"])  # fmt: skip
    assert [r["outcome"] for r in attempts] == ["answered"] * 4
    assert peak == 2  # two agents, two calls: never more (cps 50 and max concurrent 50 would allow 4)
    # the second pair was dialled once the first pair's agents were idle again (their 1 s wrap-up)
    assert (attempts[2]["created_at"] - attempts[1]["created_at"]).total_seconds() > 0.8
    assert service.queue_status("support")["stats"]["offered"] == 4  # each call once, to an idle agent
    assert dialer.agents.pending("support") == 0


def seed_history(admin: Any, campaign_id: int, answered: int) -> None:
    """``answered`` answered calls an hour ago (another contact): the headroom a predictive ratio needs."""
    contact = admin.fetchval(
        "INSERT INTO contacts (campaign_id, number, state, attempts) VALUES ($1, '+15550009999', 'done', 1)"
        " RETURNING id", campaign_id,
    )  # fmt: skip
    admin.execute(
        "INSERT INTO attempts (campaign_id, contact_id, attempt_number, origination_uuid, dialer, outcome,"
        " created_at, answered_at, ended_at) SELECT $1, $2, 1, gen_random_uuid(), 'seed', 'answered',"
        " now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour' FROM generate_series(1, $3)",
        campaign_id, contact, answered,
    )  # fmt: skip


def test_answered_calls_beyond_the_free_agents_are_abandoned_with_the_message_and_retried_after_72_h(
    admin: Any, acd: Callable[..., QueueService], node: Any, pg_schema: str, progressive_dialer: Callable[[], Dialer],
    capsys: Any,
) -> None:  # fmt: skip
    service = acd(simple_config(agents=1, wrap_up_seconds=5))
    service.login("a1")
    numbers = ["+15550001201", "+15550001202"]
    for number in numbers:
        node.set_outcome(number, "answer", ring_seconds=0.1)
    dialer = progressive_dialer()
    campaign_id = make_campaign(admin, "prog-abandon", numbers=numbers, flow="progressive", queue="support",
                                dial_ratio=2.0, abandon_after=0.3, abandon_message=MESSAGE)  # fmt: skip
    seed_history(admin, campaign_id, 100)  # room for 3 extra calls within 3 %
    set_status(admin, "prog-abandon", "paused")
    plan = wait_for(lambda: dialer.progress.get(campaign_id), 15, 0.02)
    assert (plan.ratio, plan.extra, plan.at_cap) == (2.0, 3, False)
    set_status(admin, "prog-abandon", "running")
    # one agent, ratio 2: both contacts at once; one call gets the agent, the other none within 0.3 s
    abandoned = metrics.ABANDONED.labels("prog-abandon")
    wait_for(lambda: abandoned._value.get() == 1, 15, 0.02)
    attempts = counted_attempts(admin, campaign_id)
    outcomes = {n: [r["outcome"] for r in attempts[n]] for n in numbers}
    assert sorted(outcomes.values()) == [["abandoned"], ["answered"]]
    lost = next(n for n in numbers if outcomes[n] == ["abandoned"])
    row = attempts[lost][0]
    call = node.call(str(row["origination_uuid"]))
    # on the node: answered, then hung up once the 0.3 s window was over (a loaded machine may add a little)
    waited = (call.channel.profile.hangup_time - call.channel.profile.answered_time) / 1e6
    assert 0.3 <= waited < 3.0, waited
    record = call.socket_records[0]
    assert ("playback", MESSAGE) in record.executed and record.verbs[-1] == "playback"
    assert record.hung_up_by == "app" and "bridge" not in record.verbs
    contact = admin.fetch("SELECT * FROM contacts WHERE number = $1", lost)[0]
    assert contact["state"] == "pending" and contact["last_outcome"] == "abandoned"
    retry_in = contact["next_attempt_at"] - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=71) < retry_in <= dt.timedelta(hours=72)
    assert node.calls_to(lost) == 1 and service.queue_status("support")["stats"]["timeout"] == 1
    # 1 abandoned of 102 answered: under half the cap, the ratio stays; a third contact is not dialled
    plan = wait_for(lambda: (p := dialer.progress[campaign_id]).rate > 0 and p, 15, 0.02)
    assert plan.rate == pytest.approx(1 / 102) and plan.ratio == 2.0
    # its contact is due again: the campaign is not done (the abandon and the call's end are one step)
    assert admin.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id) == "running"
    assert metrics.ABANDON_RATE.labels("prog-abandon")._value.get() == pytest.approx(1 / 102)
    from esl_app.cli.dialer import cmd_status

    cmd_status(argparse.Namespace(dsn=PG_DSN, schema=pg_schema, name="prog-abandon", json=False, follow=False,
                                  interval=1.0))  # fmt: skip
    assert "abandoned  1  (0.98% of answered, last 24 h; cap 3%)" in capsys.readouterr().out


def test_campaign_create_with_a_queue_and_the_reservation_arithmetic(
    acd: Callable[..., QueueService], redis_client: Any, redis_prefix: str, admin: Any, pg_schema: str, capsys: Any
) -> None:
    from esl_app.dialer.pacing import AgentPacing

    service = acd(simple_config(agents=3))
    check_campaign_create_with_a_queue(admin, pg_schema, capsys)
    for agent in ("a1", "a2", "a3"):
        service.login(agent)
    pacing = AgentPacing(redis_client, redis_prefix)
    uuids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(6)]
    first = pacing.reserve("support", 1.5, 0, uuids, ttl=30)  # no extra allowed: one call per idle agent
    assert (first.granted, first.idle, first.pending) == (uuids[:3], 3, 0)
    assert pacing.reserve("support", 1.5, 0, uuids[3:], ttl=30).granted == []  # 3 calls pending already
    service.join(uuids[0], "support")  # answered, joins: offered to an agent, no longer pending
    service.join("inbound-caller", "support", priority=9)
    service.take_break("a3")
    service.join("inbound-2", "support")  # no idle agent left for it: waiting
    reading = pacing.reserve("support", 3.0, 5, uuids[3:], ttl=30)
    # idle 0 (a1, a2 reserved, a3 on break), 1 inbound caller waiting, 2 of ours pending: nothing
    assert (reading.granted, reading.idle, reading.waiting, reading.pending) == ([], 0, 1, 2)
    service.login("a3")  # takes the waiting inbound caller at once: still no idle agent
    assert pacing.reserve("support", 3.0, 5, uuids[3:], ttl=30).granted == []
    service.leave("inbound-2", "abandoned")  # a3 is idle again
    pacing.release("support", uuids[1], uuids[2])  # their calls failed
    assert pacing.pending("support") == 0
    reading = pacing.reserve("support", 3.0, 5, uuids[3:], ttl=30)  # ratio 3 x 1 idle agent
    assert (reading.granted, reading.idle) == (uuids[3:], 1)
    # another campaign into the same queue counts those 3 calls: min(3 x 1, 1 + 1) - 3
    assert pacing.reserve("support", 3.0, 1, uuids[:2], ttl=30).granted == []
    with pytest.raises(Exception, match="NOQUEUE"):
        pacing.reserve("nosuch", 1.0, 0, uuids, ttl=30)


def check_campaign_create_with_a_queue(admin: Any, pg_schema: str, capsys: Any) -> None:
    """``esl-app campaign create --queue``: the queue must exist, a message is required, limits are kept."""
    from esl_app.cli.dialer import cmd_create

    def create(name: str, **options: Any) -> int:
        fields: dict[str, Any] = dict(
            dsn=PG_DSN, schema=pg_schema, name=name, tenant="demo", caller_id="442071234567", caller_name="",
            gateway="sofia/gateway/carrier", flow="progressive", cps=1.0, max_concurrent=10, max_attempts=3,
            retry_busy=300.0, retry_no_answer=1800.0, retry_failed=600.0, ring_timeout=30, schedule="",
            queue="support", dial_ratio=1.0, abandon_message=MESSAGE, abandon_after=2.0, retry_abandoned=259200.0,
        )  # fmt: skip
        fields.update(options)
        return cmd_create(argparse.Namespace(**fields))

    assert create("c1", queue="nosuch") == 2 and "error: no queue named 'nosuch'" in capsys.readouterr().err
    assert create("c2", abandon_message=None) == 2 and "needs an abandon message" in capsys.readouterr().err
    assert create("c3", abandon_message="x.wav${system(id)}") == 2
    assert create("c4", abandon_after=2.5) == 2 and create("c5", dial_ratio=0.5) == 2
    assert create("c6", dial_ratio=1.5) == 0
    row = admin.fetch("SELECT queue, dial_ratio, abandon_after, abandon_message, retry_abandoned FROM campaigns")
    assert [tuple(r) for r in row] == [("support", 1.5, 2.0, MESSAGE, dt.timedelta(hours=72))]
