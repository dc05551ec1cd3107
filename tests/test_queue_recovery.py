"""A queued caller through a worker crash (issue 12 part 2, issue 10 part 7), and the position and
estimated-wait announcements (issue 10 part 2), with the fake FreeSWITCH, real Redis and Postgres.

In one process: an esl-app server "dies" (its connections are cut, what FreeSWITCH sees of a SIGKILL:
``test_recovery.Worker``) and the dialplan's next ``socket`` reaches another one. The same with real
worker processes and SIGKILL: tests/test_recovery_workers.py."""

from __future__ import annotations

import gevent
from data_fixtures import *  # noqa: F403
from data_fixtures import wait_until
from queue_fixtures import *  # noqa: F403
from queue_fixtures import simple_config
from test_recovery import Worker

from esl_app.app import App
from esl_app.queue.caller import IN_LINE, MINUTE, MINUTES, YOU_ARE_NUMBER, announcement
from esl_app.testing.dialplan import once, run_dialplan
from esl_app.testing.peer import CallScript
from esl_app.testing.simulate import simulate_call

THANKS = "ivr/ivr-thank_you.wav"
MUSIC = "tone_stream://%(200,0,440)"  # queue_fixtures.simple_config's


def resumable_queue_app(**options):
    app = App("queue-recovery")
    outcomes = []

    @app.route("1000", resumable=True)
    def support(call):
        call.answer()
        outcome = call.enqueue("support", **options)
        outcomes.append(outcome)
        call.playback(THANKS)  # after the wait: heard once, whichever worker ran the wait

    return app, outcomes


def started(app_name: str, count: int = 1):
    """True once ``app_name`` started ``count`` times (across the call's sockets so far)."""
    return once(lambda executed: sum(1 for app, _ in executed if app == app_name) >= count)


def waiting(service) -> list[str]:
    return service.queue_status("support")["callers"]


def test_a_lost_connection_is_not_an_abandon_a_hangup_is(acd):
    """A worker's death (the connection closes, no hangup) leaves the caller in its place; a hangup
    removes it at once. Both in one process, on one server."""
    service = acd(simple_config(agents=1))
    app, outcomes = resumable_queue_app()
    worker = Worker(app)
    try:
        service.register("behind")
        script = CallScript(destination="1000", app_seconds={"playback": 0.2})
        # the only socket dies during the music: the channel goes on, then the dialplan's 503
        record = run_dialplan([worker.address], script, kill_when=started("playback"), kill=worker.die)
        service.join("behind", "support")
        assert record.lost and outcomes == []  # the flow got CallEnded: no outcome, no abandon
        assert waiting(service) == [record.uuid, "behind"]
        assert service.caller_state(record.uuid) == "waiting"
        assert "abandoned" not in service.queue_status("support")["stats"]
        # the same flow, the caller hanging up during the music: removed at once, counted abandoned
        hung = simulate_call(app, destination="1000", app_seconds={"playback": 0.2}, hangup_at=2)
        assert hung.hangup_cause == "NORMAL_CLEARING" and outcomes[-1].outcome == "abandoned"
        assert waiting(service) == [record.uuid, "behind"]
        assert service.queue_status("support")["stats"]["abandoned"] == 1
    finally:
        worker.stop()


def test_a_caller_whose_lease_ran_out_is_never_offered_and_is_reaped(acd):
    service = acd(simple_config(agents=1), caller_lease_seconds=0.3, sweep_interval=0)  # no sweep: by hand
    service.register("ghost")
    service.join("ghost", "support")
    service.unregister("ghost")  # its process died: nobody renews the lease
    service.register("alive")
    service.join("alive", "support")
    gevent.sleep(0.35)
    service.keep_alive()  # this process still holds "alive"
    service.login("a1")
    wait_until(lambda: service.waiters["alive"].offer is not None, 5)
    assert service.waiters["alive"].offer.agent == "a1"  # the ghost, ahead of it, was skipped
    assert service.reap_all() == 1
    status = service.queue_status("support")
    assert status["callers"] == [] and status["stats"]["expired"] == 1
    assert service.caller_state("ghost") is None


def test_a_caller_whose_worker_died_waits_again_in_its_place_and_is_bridged_once(acd):
    service = acd(simple_config(agents=1))
    app, outcomes = resumable_queue_app()
    first, second = Worker(app), Worker(app)
    try:
        service.register("ahead")
        service.join("ahead", "support")
        script = CallScript(destination="1000", app_seconds={"playback": 0.3, "bridge": 0.1})
        call = gevent.spawn(run_dialplan, [first.address, second.address], script,
                            kill_when=started("playback"), kill=first.die)  # fmt: skip
        wait_until(lambda: len(waiting(service)) == 2, 10)
        caller = waiting(service)[1]
        joined = service.client.hget(service.prefix + "acd:caller:" + caller, "joined")
        service.register("behind")
        service.join("behind", "support")
        # the first worker died with the caller waiting; FreeSWITCH brought the call to the second
        wait_until(lambda: service.queue_status("support")["stats"].get("rejoined") == 1, 10)
        assert waiting(service) == ["ahead", caller, "behind"]
        assert service.client.hget(service.prefix + "acd:caller:" + caller, "joined") == joined
        service.login("a1")
        ahead = wait_until(lambda: service.waiters["ahead"].take(), 5)
        assert ahead.agent == "a1" and service.offer_outcome(ahead, "connected")
        service.offer_outcome(ahead, "ended")  # no wrap-up: a1 is offered the resumed caller
        record = call.get(timeout=20)
        assert not record.lost and len(record.sockets) == 2
        assert record.count("bridge") == 1 and record.sockets[1].verbs.count("bridge") == 1
        assert record.count("answer") == 1 and record.completed.count(("playback", THANKS)) == 1
        assert [o.outcome for o in outcomes] == ["answered"]
        # a1 free again: the caller behind is next; each caller was offered once
        wait_until(lambda: service.waiters["behind"].offer is not None, 5)
        assert service.queue_status("support")["stats"]["offered"] == 3
    finally:
        first.stop()
        second.stop()


def test_a_worker_dying_during_the_bridge_neither_bridges_again_nor_queues_again(acd):
    service = acd(simple_config(agents=2, no_answer_delay_seconds=60))
    service.login("a1")
    app, outcomes = resumable_queue_app()
    first, second = Worker(app), Worker(app)
    try:
        # a1 answers: the call completes on the first socket's channel while nobody listens
        script = CallScript(destination="1000", app_seconds={"bridge": 0.3}, bridge={"user/a1": "answer"})
        record = run_dialplan([first.address, second.address], script, kill_when=started("bridge"),
                              kill=first.die)  # fmt: skip
        assert not record.lost and record.count("bridge") == 1
        assert [v for v in record.sockets[0].verbs if v != "set"] == ["answer", "bridge"]
        assert record.sockets[1].verbs == ["playback"]  # only the thanks: no music, no second bridge
        assert outcomes[-1].outcome == "answered" and outcomes[-1].agent == "a1"
        assert service.agent("a1")["state"] == "Idle" and service.caller_state(record.uuid) is None
        stats = service.queue_status("support")["stats"]
        assert stats["offered"] == 1 and stats["answered"] == 1 and "rejoined" not in stats
        # a1 does not answer: the resumed call reports it and goes to the next agent, once
        service.login("a2")
        script = CallScript(destination="1000", app_seconds={"bridge": 0.3}, bridge={"user/a1": "no_answer"})
        record = run_dialplan([first.address, second.address], script, kill_when=started("bridge"),
                              kill=first.die)  # fmt: skip
        bridges = [arg for app, arg in record.executed if app == "bridge"]
        assert bridges[0] == "user/a1" and bridges[1:] == ["user/a2"], bridges
        assert outcomes[-1].outcome == "answered" and outcomes[-1].agent == "a2"
        assert service.agent("a1")["na_count"] == "1"  # the no-answer the dead worker never reported
    finally:
        first.stop()
        second.stop()


def test_a_worker_dying_during_a_ring_all_bridge_neither_rings_again_nor_holds_the_agents(acd):
    service = acd(simple_config("ring-all", agents=3, no_answer_delay_seconds=60, wrap_up_seconds=0))
    for agent in ("a1", "a2", "a3"):
        service.login(agent)
    app, outcomes = resumable_queue_app()
    first, second = Worker(app), Worker(app)
    try:
        legs = {"user/a1": "no_answer", "user/a2": "answer", "user/a3": "no_answer"}
        script = CallScript(destination="1000", app_seconds={"bridge": 0.3}, bridge=legs)
        record = run_dialplan([first.address, second.address], script, kill_when=started("bridge"),
                              kill=first.die)  # fmt: skip
        assert not record.lost and record.count("bridge") == 1  # all three rung once, by the first worker
        assert record.sockets[1].verbs == ["playback"]  # only the thanks: no music, no second ring
        assert outcomes[-1].outcome == "answered" and outcomes[-1].agent == "a2"
        # the resumed call settled what the dead worker could not: nobody held, nobody penalised
        for agent in ("a1", "a2", "a3"):
            a = service.agent(agent)
            assert (a["state"], a["caller"], a.get("na_count", "0")) == ("Idle", "", "0"), (agent, a)
        assert service.caller_state(record.uuid) is None
        stats = service.queue_status("support")["stats"]
        assert stats["offered"] == 1 and stats["answered"] == 1 and "rejoined" not in stats
    finally:
        first.stop()
        second.stop()


def test_announcement_words_are_computed_numbers():
    assert announcement(0, 60) == []  # being offered: nothing to announce
    assert announcement(2, None) == [("playback", YOU_ARE_NUMBER), ("say", "en NUMBER pronounced 2"),
                                     ("playback", IN_LINE)]  # fmt: skip
    assert announcement(1, 59)[-2:] == [("say", "en NUMBER pronounced 1"), ("playback", MINUTE)]
    assert announcement(1, 61)[-2:] == [("say", "en NUMBER pronounced 2"), ("playback", MINUTES)]


def test_position_and_estimated_wait_are_announced_and_the_position_falls_as_callers_leave(acd):
    service = acd(simple_config(agents=2, announce_every_seconds=2))
    for agent in ("a1", "a2"):  # available, but both on a call: callers wait
        service.client.hset(service.prefix + "acd:agent:" + agent,
                            mapping={"status": "Available", "state": "In call", "lease_until": 2**50})  # fmt: skip
    for seconds in (100.0, 140.0):  # average handle time 120 s
        service.record_handle_time("support", seconds)
    service.register("ahead")
    service.join("ahead", "support")
    app = App("announcements")

    @app.route("1000")
    def support(call):
        call.answer()
        call.enqueue("support", max_wait=3.0)

    music = {"playback": 0.1}  # every playback, the music too (its slice ending by itself: test_recovery_workers)
    calls = []
    for count in (1, 2):
        calls.append(gevent.spawn(simulate_call, app, destination="1000", app_seconds=music, timeout=20))
        wait_until(lambda count=count: len(waiting(service)) == count + 1, 10)
    gevent.sleep(1.0)  # between their first announcement (on entering) and the next one (2 s later)
    service.leave("ahead", "abandoned")
    second, third = (c.get(timeout=20) for c in calls)
    said = [[arg for app, arg in call.executed if app == "say"] for call in (second, third)]
    # place, then estimated wait: place x 120 s / 2 agents available, in minutes
    assert said[0] == ["en NUMBER pronounced 2", "en NUMBER pronounced 2", "en NUMBER pronounced 1",
                       "en NUMBER pronounced 1"]  # fmt: skip
    assert said[1] == ["en NUMBER pronounced 3", "en NUMBER pronounced 3", "en NUMBER pronounced 2",
                       "en NUMBER pronounced 2"]  # fmt: skip
    heard = []
    for app, arg in third.executed:  # the music loops in 0.1 s playbacks here: one entry per run of it
        if not (arg == MUSIC and heard and heard[-1] == arg):
            heard.append(arg if app == "playback" else app)
    announced = [YOU_ARE_NUMBER, "say", IN_LINE, "ivr/ivr-estimated_hold_time.wav", "say", MINUTES]
    # the music resumes after each announcement
    assert heard == ["answer", *announced, MUSIC, *announced, MUSIC], heard


def test_a_caller_that_left_at_max_wait_is_not_queued_again_after_a_crash(acd):
    service = acd(simple_config(agents=1))
    app, outcomes = resumable_queue_app(max_wait=0.3)
    first, second = Worker(app), Worker(app)
    try:
        script = CallScript(destination="1000", app_seconds={"playback": 0.2})
        # the worker dies as the flow's prompt after the wait starts: the wait's outcome is replayed
        thanks = once(lambda executed: ("playback", THANKS) in executed)
        record = run_dialplan([first.address, second.address], script, kill_when=thanks, kill=first.die)
        assert not record.lost and len(record.sockets) == 2
        assert record.sockets[1].verbs == [] and record.completed.count(("playback", THANKS)) == 1
        assert [o.outcome for o in outcomes] == ["timeout", "timeout"]  # the first worker's, then the replay's
        stats = service.queue_status("support")["stats"]
        assert stats["timeout"] == 1 and "rejoined" not in stats and waiting(service) == []
    finally:
        first.stop()
        second.stop()
