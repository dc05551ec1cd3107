"""Inbound queues (ACD) with the fake FreeSWITCH, real Redis and Postgres."""

from __future__ import annotations

import time

import asyncpg
import gevent
import pytest
from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN, REDIS_URL, wait_until
from queue_fixtures import *  # noqa: F403
from queue_fixtures import configure, simple_config

from esl_app.app import App
from esl_app.queue import AcdConfig, AgentConfig, QueueConfig, QueueError, Tier
from esl_app.queue.service import Waiter
from esl_app.testing.simulate import simulate_call


def queue_app(**options):
    app = App("queue")
    outcomes = []

    @app.route("1000")
    def support(call):
        call.answer()
        outcome = call.enqueue("support", **options)
        outcomes.append(outcome)
        if outcome.outcome in ("timeout", "exit"):
            call.transfer("vm-support")  # the flow's own fallback

    return app, outcomes


def spawn_call(app, **fields):
    return gevent.spawn(simulate_call, app, timeout=60, **fields)


# -- configuration -----------------------------------------------------------------------------------


def test_config_round_trips_through_postgres(bridge, pg_schema):
    config = AcdConfig(
        queues=[
            QueueConfig(name="sales", strategy="top-down", max_wait_seconds=60, wrap_up_seconds=5,
                        no_answer_delay_seconds=10, max_no_answer=2, music="local_stream://moh",
                        announcement="ivr/welcome.wav")
        ],
        agents=[AgentConfig(id="1001", contact="user/1001", skills={"english": 7, "billing": 3})],
        tiers=[Tier(queue="sales", agent="1001", level=2, position=3)],
    )
    assert configure(bridge, pg_schema, config) == config

    async def bad_contact() -> None:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
        try:
            await conn.execute("INSERT INTO acd_agents (id, contact) VALUES ('x', 'user/${system(id)}')")
        finally:
            await conn.close()

    with pytest.raises(asyncpg.CheckViolationError):
        bridge.run(bad_contact(), timeout=10)
    with pytest.raises(ValueError):
        AgentConfig(id="x", contact="user/1,user/2")


def test_unknown_queue_and_agent_are_named_errors(acd):
    service = acd(simple_config())
    with pytest.raises(QueueError, match="unknown queue"):
        service.join("c1", "nope")
    with pytest.raises(QueueError, match="unknown agent"):
        service.login("nobody")
    with pytest.raises(QueueError, match="priority"):
        service.join("c1", "support", priority=12)


# -- offers: strategies, skills, priority (the dispatch script, callers held by waiters) ----------------


def offered(service, *callers: str, timeout: float = 5.0) -> dict[str, str]:
    """caller -> agent for offers that reached the given callers' waiters."""
    waiters = {c: service.waiters[c] for c in callers}
    wait_until(lambda: all(w.offer for w in waiters.values()), timeout)
    return {c: w.offer.agent for c, w in waiters.items()}


def hold(service, caller: str) -> Waiter:
    return service.register(caller)


def test_longest_idle_agent_first(acd):
    service = acd(simple_config(agents=3))
    for agent in ("a3", "a1", "a2"):
        service.login(agent)
        time.sleep(0.005)  # distinct idle times (Redis clock, ms)
    for caller in ("c1", "c2"):
        hold(service, caller)
        service.join(caller, "support")
    assert offered(service, "c1", "c2") == {"c1": "a3", "c2": "a1"}
    assert service.agent("a3")["state"] == "Reserved" and service.agent("a2")["state"] == "Idle"


def test_top_down_follows_tier_level_then_position(acd):
    config = simple_config("top-down", agents=3)
    config.tiers = [Tier(queue="support", agent="a1", level=2, position=1),
                    Tier(queue="support", agent="a2", level=1, position=2),
                    Tier(queue="support", agent="a3", level=1, position=1)]  # fmt: skip
    service = acd(config)
    for agent in ("a1", "a2", "a3"):
        service.login(agent)
    for caller in ("c1", "c2", "c3"):
        hold(service, caller)
        service.join(caller, "support")
    assert offered(service, "c1", "c2", "c3") == {"c1": "a3", "c2": "a2", "c3": "a1"}


def test_round_robin_continues_after_the_last_agent_offered(acd):
    service = acd(simple_config("round-robin", agents=3))
    for agent in ("a1", "a2", "a3"):
        service.login(agent)
    got = []
    for i in range(5):
        caller = f"c{i}"
        waiter = hold(service, caller)
        service.join(caller, "support")
        offer = offered(service, caller)[caller]
        got.append(offer)
        assert service.offer_outcome(waiter.offer, "connected")
        assert service.offer_outcome(waiter.offer, "ended")  # wrap-up 0: free again at once
    assert got == ["a1", "a2", "a3", "a1", "a2"]


def test_skills_every_required_skill_best_level_first(acd):
    config = simple_config("skills-based", agents=3)
    config.agents = [AgentConfig(id="a1", contact="user/a1", skills={"english": 3, "billing": 9}),
                     AgentConfig(id="a2", contact="user/a2", skills={"english": 9}),
                     AgentConfig(id="a3", contact="user/a3", skills={"english": 6, "billing": 5})]  # fmt: skip
    service = acd(config)
    for agent in ("a1", "a2", "a3"):
        service.login(agent)
    hold(service, "needs-both")
    service.join("needs-both", "support", skills={"english": 5, "billing": 4})
    assert offered(service, "needs-both") == {"needs-both": "a3"}  # a1's english too low, a2 lacks billing
    hold(service, "english")
    service.join("english", "support", skills={"english": 2})
    assert offered(service, "english") == {"english": "a2"}  # 9 beats 3
    hold(service, "french")
    service.join("french", "support", skills={"french": 1})
    gevent.sleep(0.3)
    assert service.waiters["french"].offer is None  # nobody speaks French: it waits
    assert service.queue_status("support")["callers"] == ["french"]


def test_priority_then_join_time(acd):
    service = acd(simple_config(agents=1))
    for caller, priority in (("early", 0), ("late-vip", 5), ("later", 0)):
        hold(service, caller)
        service.join(caller, "support", priority=priority)
        time.sleep(0.005)
    assert service.queue_status("support")["callers"] == ["late-vip", "early", "later"]
    service.login("a1")
    assert offered(service, "late-vip") == {"late-vip": "a1"}
    assert service.waiters["early"].offer is None


def test_dead_offer_frees_the_agent_within_its_lease(acd):
    service = acd(simple_config(agents=1), lease_seconds=0.5, sweep_interval=0.2)
    service.login("a1")
    hold(service, "ghost")
    service.join("ghost", "support")
    assert offered(service, "ghost") == {"ghost": "a1"}
    # the ghost's worker died: nobody renews the lease. A new caller gets a1 once the lease runs out
    hold(service, "next")
    service.join("next", "support")
    started = time.monotonic()
    assert offered(service, "next", timeout=5) == {"next": "a1"}
    assert time.monotonic() - started >= 0.3


# -- callers with the fake FreeSWITCH --------------------------------------------------------------------


def test_caller_joins_with_idle_agent_and_is_bridged(acd):
    service = acd(simple_config(agents=1, wrap_up_seconds=30))
    service.login("a1")
    app, outcomes = queue_app()
    result = simulate_call(app, destination="1000")
    assert result.verbs[:1] == ["answer"] and "bridge" in result.verbs
    assert "playback" not in result.verbs  # an idle agent: no music at all
    assert result.args("bridge") == ["user/a1"]
    assert outcomes[0].outcome == "answered" and outcomes[0].agent == "a1"
    agent = service.agent("a1")
    assert agent["state"] == "Wrap-up" and agent["caller"] == ""
    status = service.queue_status("support")
    assert status["stats"]["offered"] == 1 and status["stats"]["answered"] == 1
    assert status["agents"]["a1"] == {"status": "Available", "state": "Wrap-up"}
    # its handle time (talk + the 30 s wrap-up) went with the end of the offer, for the estimated wait
    handles = service.client.lrange(service._qkey("support", "handle"), 0, -1)
    assert len(handles) == 1 and 30.0 <= float(handles[0]) < 40.0


def test_agent_login_breaks_the_music_and_bridges(acd):
    service = acd(simple_config(agents=1))
    app, outcomes = queue_app()
    call = spawn_call(app, destination="1000", app_seconds={"playback": 30})
    wait_until(lambda: service.queue_status("support")["waiting"] == 1, 10)
    gevent.sleep(0.1)  # the music is playing
    started = time.monotonic()
    service.login("a1")
    result = call.get(timeout=20)
    assert time.monotonic() - started < 10  # not the 30 s of the music
    assert any(c.startswith("uuid_break") for c in result.record.api_commands)
    assert result.verbs[-1] == "bridge" and outcomes[0].outcome == "answered"


def test_no_answer_penalises_the_agent_and_the_caller_keeps_its_place(acd):
    service = acd(simple_config(agents=2, no_answer_delay_seconds=60, max_no_answer=1))
    service.login("a1")
    time.sleep(0.005)
    service.login("a2")
    app, outcomes = queue_app()
    result = simulate_call(app, destination="1000", bridge={"user/a1": "no_answer", "user/a2": "answer"})
    assert result.args("bridge") == ["user/a1", "user/a2"]
    assert outcomes[0].outcome == "answered" and outcomes[0].agent == "a2" and outcomes[0].offers == 2
    a1 = service.agent("a1")
    assert a1["status"] == "On Break" and a1["na_count"] == "1" and a1["state"] == "Idle"


def test_exit_digit_leaves_the_queue(acd):
    service = acd(simple_config(agents=1))
    app, outcomes = queue_app(exit_digits="*")
    result = simulate_call(app, destination="1000", app_seconds={"playback": 0.1}, dtmf_events={3: "*"})
    assert outcomes[0].outcome == "exit" and outcomes[0].digit == "*"
    assert result.record.transferred_to == "vm-support XML"
    assert service.queue_status("support")["waiting"] == 0
    assert service.queue_status("support")["stats"]["exit"] == 1


def test_max_wait_goes_to_the_flows_fallback(acd):
    service = acd(simple_config(agents=1))
    app, outcomes = queue_app(max_wait=0.5)
    started = time.monotonic()
    result = simulate_call(app, destination="1000", app_seconds={"playback": 30})
    assert 0.4 < time.monotonic() - started < 10
    assert outcomes[0].outcome == "timeout"
    assert result.record.transferred_to == "vm-support XML" and "bridge" not in result.verbs
    assert service.queue_status("support")["stats"]["timeout"] == 1


def test_abandoned_caller_is_removed_at_once_and_never_offered(acd):
    service = acd(simple_config(agents=1))
    app, outcomes = queue_app()
    result = simulate_call(app, destination="1000", app_seconds={"playback": 0.2}, hangup_at=3)
    assert result.hangup_cause == "NORMAL_CLEARING" and outcomes[0].outcome == "abandoned"
    status = service.queue_status("support")
    assert status["waiting"] == 0 and status["stats"]["abandoned"] == 1
    service.login("a1")
    gevent.sleep(0.3)
    assert service.agent("a1")["state"] == "Idle"  # nobody was offered
    assert service.queue_status("support")["stats"].get("offered", 0) == 0


def test_wrap_up_end_offers_the_next_caller(acd):
    service = acd(simple_config(agents=1, wrap_up_seconds=1), sweep_interval=30)  # no sweep: the timer does it
    service.login("a1")
    app, outcomes = queue_app()
    first = spawn_call(app, destination="1000", app_seconds={"bridge": 0.2})
    wait_until(lambda: service.agent("a1")["state"] == "In call", 10)
    second = spawn_call(app, destination="1000", app_seconds={"playback": 30})
    first.get(timeout=20)
    ended = time.monotonic()
    second.get(timeout=20)
    assert time.monotonic() - ended >= 0.9  # not before the wrap-up's end
    assert [o.outcome for o in outcomes] == ["answered", "answered"]


def test_two_services_share_the_queue_through_redis(acd):
    """A caller waiting in one process is offered by an agent login in another, via pub/sub."""
    mine = acd(simple_config(agents=1))
    other = acd(install=False)
    app, outcomes = queue_app(service=mine)
    call = spawn_call(app, destination="1000", app_seconds={"playback": 30})
    wait_until(lambda: mine.queue_status("support")["waiting"] == 1, 10)
    other.login("a1")
    result = call.get(timeout=20)
    assert outcomes[0].outcome == "answered" and result.args("bridge") == ["user/a1"]
    assert mine.offers_seen == 1


def test_agent_feature_codes_log_in_and_out(acd):
    from callflows.agent_codes import app as codes

    service = acd(simple_config(agents=1))
    result = simulate_call(codes, destination="*50", caller_id_number="a1")
    assert result.args("playback") == ["ivr/ivr-thank_you.wav"]
    assert service.agent("a1")["status"] == "Available"
    simulate_call(codes, destination="*52", caller_id_number="a1")
    assert service.agent("a1")["status"] == "On Break"
    result = simulate_call(codes, destination="*51", caller_id_number="stranger")
    assert result.args("playback") == ["ivr/ivr-you_have_dialed_an_invalid_extension.wav"]


def test_reconnected_caller_keeps_its_place(acd):
    """A worker was SIGKILLed with callers waiting: their places are in Redis; FreeSWITCH's next
    ``socket`` brings the same channel (uuid) back and it waits in the same position."""
    service = acd(simple_config(agents=1))
    for caller in ("first", "second"):
        hold(service, caller)
        service.join(caller, "support")
        time.sleep(0.005)
    service.unregister("first")  # its process died: nothing left here, everything in Redis
    again = service.join("first", "support")
    assert again.position == 1
    assert service.queue_status("support")["callers"] == ["first", "second"]


def test_cli_agent_and_queue_status(acd, redis_prefix, capsys):
    from esl_app.cli import main

    acd(simple_config(agents=1))
    assert main(["agent", "login", "a1", "--redis", REDIS_URL, "--prefix", redis_prefix]) == 0
    assert '"status": "Available"' in capsys.readouterr().out
    assert main(["queue", "status", "support", "--redis", REDIS_URL, "--prefix", redis_prefix]) == 0
    out = capsys.readouterr().out
    assert '"waiting": 0' in out and '"a1"' in out
    with pytest.raises(SystemExit, match="unknown agent"):
        main(["agent", "break", "nobody", "--redis", REDIS_URL, "--prefix", redis_prefix])


def test_prometheus_figures_per_queue(acd):
    from prometheus_client import CollectorRegistry, generate_latest

    from esl_app.queue.metrics import QueueCollector

    service = acd(simple_config(agents=2))
    service.login("a1")
    app, _ = queue_app()
    simulate_call(app, destination="1000")
    hold(service, "waiting-one")
    service.join("waiting-one", "support", skills={"french": 1})
    registry = CollectorRegistry()
    registry.register(QueueCollector(service))
    text = generate_latest(registry).decode()
    assert 'esl_app_queue_waiting{queue="support"} 1.0' in text
    assert 'esl_app_queue_callers_total{outcome="answered",queue="support"} 1.0' in text
    assert 'esl_app_queue_service_level_ratio{queue="support"} 1.0' in text
    assert 'esl_app_queue_agents{queue="support",state="Idle",status="Available"} 1.0' in text
    assert 'esl_app_queue_agents{queue="support",state="Idle",status="Logged Out"} 1.0' in text


def test_enqueue_on_a_static_socket_is_a_named_error_and_the_call_ends(acd):
    acd(simple_config(agents=1))
    app, outcomes = queue_app()
    result = simulate_call(app, destination="1000", mode="static")
    assert outcomes == [] and "bridge" not in result.verbs and "playback" not in result.verbs


def test_an_offer_delivered_twice_is_acted_on_once(acd):
    service = acd(simple_config(agents=2, no_answer_delay_seconds=60))
    service.login("a1")
    app, outcomes = queue_app(exit_digits="*")
    # a1 does not answer: the caller must not ring a1 again from the copy of the offer that came by
    # message after the direct one (the second agent is not logged in: the caller waits, then leaves)
    result = simulate_call(app, destination="1000", bridge={"user/a1": "no_answer"}, app_seconds={"playback": 0.1},
                           dtmf_events={6: "*"})  # fmt: skip
    assert result.args("bridge") == ["user/a1"]
    assert outcomes[0].offers == 1


def test_waiter_acts_once_on_an_offer_that_comes_directly_and_by_message():
    from esl_app.queue import Offer

    waiter = Waiter("c1")
    message = "c1|a1|user/a1|support|1.5|join|42"
    waiter.deliver(Offer.parse(message))  # directly, from the script this process ran
    assert waiter.take().agent == "a1"
    waiter.deliver(Offer.parse(message))  # the same offer, by the offers channel, after it was taken
    assert waiter.offer is None and not waiter.event.is_set()
    waiter.deliver(Offer.parse("c1|a2|user/a2|support|1.6|requeue|43"))  # a new offer is not
    assert waiter.take().agent == "a2"
