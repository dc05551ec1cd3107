"""The ring-all strategy: every free agent of the queue rung at once by one bridge, the first to answer
bridged, the others Idle again at once. Fake FreeSWITCH, real Redis and Postgres."""

from __future__ import annotations

import random
import re
import time

import asyncpg
import gevent
import pytest
from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN, wait_until
from queue_fixtures import *  # noqa: F403
from queue_fixtures import configure, simple_config

from esl_app.app import App
from esl_app.errors import UnsafeArgumentError
from esl_app.queue import AcdConfig, AgentConfig, QueueConfig, Tier
from esl_app.queue.caller import ring_all_dial_string
from esl_app.testing.simulate import simulate_call

LEG = re.compile(r"\[origination_uuid=[0-9a-f-]{36},esl_app_queue_agent=(a\d)\]user/\1")


def queue_app(**options):
    app = App("ring-all")
    outcomes = []

    @app.route("1000")
    def support(call):
        call.answer()
        outcomes.append(call.enqueue("support", **options))

    return app, outcomes


def ring_all(acd, agents: int = 3, service_options=None, **queue):
    service = acd(simple_config("ring-all", agents=agents, **queue), **(service_options or {}))
    for i in range(1, agents + 1):
        service.login(f"a{i}")
    return service


def test_ring_all_config_round_trips_and_the_database_refuses_a_contact_of_several_legs(bridge, pg_schema):
    config = simple_config("ring-all", agents=2)
    assert configure(bridge, pg_schema, config) == config

    async def insert(contact: str) -> None:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
        try:
            await conn.execute("INSERT INTO acd_agents (id, contact) VALUES ('x', $1)", contact)
        finally:
            await conn.close()

    for contact in ("user/a1:_:user/a9", "[x=1]user/a1", "{x=1}user/a1", "<x=1>user/a1"):
        with pytest.raises(asyncpg.CheckViolationError):
            bridge.run(insert(contact), timeout=10)


def test_first_to_answer_is_bridged_and_the_others_are_idle_at_once(acd_live):
    service = ring_all(acd_live, no_answer_delay_seconds=60, max_no_answer=1, wrap_up_seconds=30)
    app, outcomes = queue_app()
    legs = {"user/a1": "no_answer", "user/a2": "answer", "user/a3": "no_answer"}
    call = gevent.spawn(simulate_call, app, timeout=30, destination="1000", bridge=legs, app_seconds={"bridge": 0.5})
    wait_until(lambda: service.agent("a2")["state"] == "In call", 10)
    # while a2 talks, a1 and a3 are already free, unpenalised: a new caller is offered both at once
    for agent in ("a1", "a3"):
        a = service.agent(agent)
        assert (a["state"], a["caller"], a.get("na_count", "0"), a["status"]) == ("Idle", "", "0", "Available")
    waiter = service.register("next")
    service.join("next", "support")
    wait_until(lambda: waiter.offer, 5)
    assert waiter.offer.legs == [("a1", "user/a1"), ("a3", "user/a3")]
    result = call.get(timeout=20)
    (dial,) = result.args("bridge")
    assert dial.startswith("{ignore_early_media=true}") and LEG.findall(dial) == ["a1", "a2", "a3"]
    assert result.verbs.count("bridge") == 1  # one offer, one bridge ringing all three
    assert outcomes[0].outcome == "answered" and outcomes[0].agent == "a2" and outcomes[0].offers == 1
    assert service.agent("a2")["state"] == "Wrap-up"  # not free before then: "next" could not get it
    stats = service.queue_status("support")["stats"]
    assert stats["offered"] == 2 and stats["answered"] == 1


def test_a_leg_that_failed_by_itself_is_penalised_even_when_another_answers(acd_live):
    """mod_callcenter: LOSE_RACE costs nothing, a busy or rejected agent gets its delay."""
    service = ring_all(acd_live, no_answer_delay_seconds=60)
    app, outcomes = queue_app()
    simulate_call(app, destination="1000", bridge={"user/a1": "busy", "user/a2": "no_answer", "user/a3": "answer"})
    assert outcomes[0].agent == "a3"
    assert service.agent("a1")["na_count"] == "1" and int(service.agent("a1")["na_until"]) > time.time() * 1000
    assert service.agent("a2").get("na_count", "0") == "0"


def test_a_second_registration_of_an_agent_answers(acd_live):
    """``user/a2`` rings two phones: the one that answers is not the channel named by origination_uuid,
    so the agent is read from the variable every channel of its leg carries."""
    service = ring_all(acd_live, wrap_up_seconds=30)
    app, outcomes = queue_app()
    # the B-leg is asked while it talks (0.6 s: time for the question on a busy machine)
    legs = {"user/a2": "answer_fork", "*": "no_answer"}
    result = simulate_call(app, destination="1000", bridge=legs, app_seconds={"bridge": 0.6})
    assert outcomes[0].outcome == "answered" and outcomes[0].agent == "a2"
    assert any(c.startswith("uuid_getvar ") and c.endswith(" esl_app_queue_agent") for c in result.record.api_commands)
    assert [service.agent(a)["state"] for a in ("a1", "a2", "a3")] == ["Idle", "Wrap-up", "Idle"]


def test_nobody_answers_all_get_the_no_answer_handling(acd_live):
    service = ring_all(acd_live, no_answer_delay_seconds=60, max_no_answer=2)
    app, outcomes = queue_app(max_wait=0.5)
    result = simulate_call(app, destination="1000", bridge={"*": "no_answer"},
                           app_seconds={"bridge": 0.1, "playback": 30})  # fmt: skip
    assert outcomes[0].outcome == "timeout" and outcomes[0].offers == 1 and result.verbs.count("bridge") == 1
    assert len(LEG.findall(result.args("bridge")[0])) == 3
    now_ms = time.time() * 1000
    for agent in ("a1", "a2", "a3"):
        a = service.agent(agent)
        assert (a["state"], a["caller"], a["na_count"], a["status"]) == ("Idle", "", "1", "Available")
        assert int(a["na_until"]) > now_ms + 50_000


def test_after_nobody_answered_the_caller_is_back_at_its_place(acd_live):
    service = ring_all(acd_live, agents=2, no_answer_delay_seconds=0, max_no_answer=1)
    first = service.register("first")
    service.join("first", "support")
    offer = wait_until(lambda: first.offer, 5)
    service.register("later")
    service.join("later", "support")  # joins while the first caller's agents ring: nobody is free
    assert service.queue_status("support")["callers"] == ["later"]
    first.take()
    assert service.ring_outcome(offer, "no_answer")
    # back ahead of the caller who joined after it, and offered first (no-answer delay 0 here); both
    # agents went On Break at their first no-answer (max 1): nobody is offered to "later" meanwhile
    assert service.queue_status("support")["callers"] == ["first", "later"]
    assert {service.agent(a)["status"] for a in ("a1", "a2")} == {"On Break"}
    service.login("a2")
    assert wait_until(lambda: first.offer, 5).agent == "a2"
    assert service.waiters["later"].offer is None


def test_caller_hangs_up_while_ringing_releases_every_agent(acd_live):
    service = ring_all(acd_live, no_answer_delay_seconds=60)
    app, outcomes = queue_app()
    # answer, then the bridge (its variables set by api, no set application): hang up as it rings
    result = simulate_call(app, destination="1000", bridge={"*": "no_answer"}, hangup_at=2)
    assert result.verbs[-1] == "bridge" and len(LEG.findall(result.args("bridge")[0])) == 3
    assert outcomes[0].outcome == "abandoned"
    for agent in ("a1", "a2", "a3"):
        a = service.agent(agent)
        assert (a["state"], a["caller"], a.get("na_count", "0")) == ("Idle", "", "0")
    assert service.queue_status("support")["stats"]["abandoned"] == 1
    waiter = service.register("next")
    service.join("next", "support")
    assert wait_until(lambda: waiter.offer, 5).agent == "a1,a2,a3"


def test_dead_worker_releases_all_its_agents_by_lease_or_on_reconnect(acd_live):
    service = ring_all(acd_live, service_options={"lease_seconds": 0.5, "sweep_interval": 0.1})
    ghost = service.register("ghost")
    service.join("ghost", "support")
    assert wait_until(lambda: ghost.offer, 5).agent == "a1,a2,a3"
    # its worker died: FreeSWITCH reconnects the channel, which finds its agents freed and is offered again
    service.unregister("ghost")
    again = service.register("ghost")
    service.join("ghost", "support")
    assert wait_until(lambda: again.offer, 5).agent == "a1,a2,a3"
    # dies again, for good: nobody renews, and the next caller gets all three once the lease ran out
    service.unregister("ghost")
    waiter = service.register("next")
    service.join("next", "support")
    started = time.monotonic()
    assert wait_until(lambda: waiter.offer, 5).agent == "a1,a2,a3"
    assert time.monotonic() - started >= 0.3


def test_skills_narrow_the_ring(acd_live):
    config = simple_config("ring-all", agents=3)
    config.agents = [AgentConfig(id="a1", contact="user/a1", skills={"english": 5}),
                     AgentConfig(id="a2", contact="user/a2"),
                     AgentConfig(id="a3", contact="user/a3", skills={"english": 9})]  # fmt: skip
    service = acd_live(config)
    for agent in ("a1", "a2", "a3"):
        service.login(agent)
    waiter = service.register("english")
    service.join("english", "support", skills={"english": 3})
    assert wait_until(lambda: waiter.offer, 5).legs == [("a1", "user/a1"), ("a3", "user/a3")]
    other = service.register("anyone")
    service.join("anyone", "support")
    assert wait_until(lambda: other.offer, 5).agent == "a2"  # what is left rings for the next caller


@pytest.mark.parametrize("contact", ["user/a1,user/a9", "user/a1|user/a9", "user/a1:_:user/a9", "[x=1]user/a1",
                                     "{x=1}user/a1", "user/${a9}", "<x=1>user/a1", "user/a1 a9"])  # fmt: skip
def test_a_contact_is_one_endpoint(contact):
    with pytest.raises(UnsafeArgumentError):
        ring_all_dial_string([("a1", "user/a0"), ("a2", contact)])
    with pytest.raises(ValueError):
        AgentConfig(id="a2", contact=contact)


def test_ring_all_and_another_queue_never_offer_an_agent_twice(acd_live):
    """Two queues share four agents, one ring-all and one longest-idle, callers join both from two
    services (sharing Redis) at once and answer, fail or talk at random. An agent offered must be free
    in the ledger; it is marked free before the script that frees it runs, so no false alarm."""
    shared = [f"a{i}" for i in range(1, 5)]
    config = AcdConfig(
        queues=[QueueConfig(name=name, strategy=strategy, wrap_up_seconds=0, no_answer_delay_seconds=0, max_no_answer=0)
                for name, strategy in (("support", "ring-all"), ("sales", "longest-idle-agent"))],
        agents=[AgentConfig(id=a, contact=f"user/{a}") for a in shared],
        tiers=[Tier(queue=q, agent=a, position=i) for q in ("support", "sales") for i, a in enumerate(shared, 1)],
    )  # fmt: skip
    services = [acd_live(config, lease_seconds=30), acd_live(install=False, lease_seconds=30)]
    for agent in shared:
        services[0].login(agent)
    owner: dict[str, str] = {}
    errors: list[str] = []
    multi: list[int] = []
    answered: list[str] = []
    rng = random.Random(7)

    def free(*agents: str) -> None:
        for agent in agents:
            owner.pop(agent, None)

    def caller(name: str, queue: str, service) -> None:  # type: ignore[no-untyped-def]
        gevent.sleep(rng.random() * 0.2)
        waiter = service.register(name)
        service.join(name, queue)
        while True:
            waiter.event.wait(10)
            offer = waiter.take()
            if offer is None:
                errors.append(f"{name} was never offered")
                return
            agents = [agent for agent, _ in offer.legs]
            for agent in agents:
                if agent in owner:
                    errors.append(f"{agent} offered to {name} ({queue}) while {owner[agent]} holds it")
                owner[agent] = name
            multi.append(len(agents))
            gevent.sleep(rng.random() * 0.01)
            if rng.random() < 0.25:  # nobody answers: back in the queue
                free(*agents)
                if len(agents) > 1:
                    service.ring_outcome(offer, "no_answer")
                else:
                    service.offer_outcome(offer, "no_answer")
                continue
            winner = rng.choice(agents)
            free(*(a for a in agents if a != winner))
            if len(agents) > 1:
                service.ring_outcome(offer, "connected", winner=winner)
                offer = offer.answered_by(winner)
            else:
                service.offer_outcome(offer, "connected")
            gevent.sleep(rng.random() * 0.01)
            free(winner)
            service.offer_outcome(offer, "ended")
            answered.append(name)
            return

    greenlets = [gevent.spawn(caller, f"{q}-{i}", q, services[i % 2]) for q in ("support", "sales") for i in range(25)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    assert errors == []
    assert sorted(answered) == sorted(f"{q}-{i}" for q in ("support", "sales") for i in range(25))
    assert max(multi) > 1  # ring-all offers of several agents happened, amid the single ones
    for agent in shared:
        assert services[0].agent(agent)["state"] == "Idle"
