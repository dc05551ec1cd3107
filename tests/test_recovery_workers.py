"""Session recovery with real worker processes (issue 12): the pools supervisor runs the demo with two
workers on one port; the per-call fake FreeSWITCH runs the dialplan's two ``socket`` actions to it.
The worker serving the call is killed with SIGKILL as each step of the main line starts, in both
socket modes: the call completes on the other worker with only the remaining steps. And callers
waiting in a queue (esl_app.queue) when their worker is killed keep their places."""

from __future__ import annotations

import os
import signal
import uuid

import gevent
import pytest
import redis
from data_fixtures import REDIS_URL, wait_until

import callflows.demo as demo
from esl_app.bench.recovery import STEPS, TIMES, Supervisor, run, serving_pid
from esl_app.queue import AcdConfig, AgentConfig, QueueConfig, QueueService, Tier
from esl_app.testing.dialplan import DialplanRecord, once, run_dialplan
from esl_app.testing.peer import CallScript, FakeFreeSWITCH

QUEUE_PREFIX = f"esl-test-{uuid.uuid4().hex[:12]}:"
# the workers also serve a queue: a 2 s music slice, so a killed worker's callers come back quickly
QUEUE_ROUTE = """
import os

from esl_app.queue import QueueService


@app.on_startup
def queue_service():
    QueueService(os.environ["ESL_APP_TEST_REDIS_URL"], os.environ["ESL_APP_TEST_QUEUE_PREFIX"], sweep_interval=0.5,
                 hold_slice_seconds=2, caller_lease_seconds=10).start()


@app.route("1999", name="queue", resumable=True)  # an extension of the demo data: its guard lets it in
def queued(call):
    call.answer()
    call.enqueue("support")
"""


@pytest.fixture(scope="module")
def supervisor():
    env = {"ESL_APP_TEST_REDIS_URL": REDIS_URL, "ESL_APP_TEST_QUEUE_PREFIX": QUEUE_PREFIX}
    with Supervisor(workers=2, extra=QUEUE_ROUTE, env=env) as running:
        yield running
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=QUEUE_PREFIX + "*", count=1000):
        client.delete(key)


@pytest.mark.parametrize("mode", ["async", "static"])
@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_sigkill_at_each_step_of_the_demo_the_call_completes_with_the_remaining_steps(supervisor, mode, step):
    supervisor.wait_ready()
    killed: list[int] = []

    def kill(peer: FakeFreeSWITCH) -> None:
        pid = serving_pid(peer, supervisor.pids())
        assert pid is not None, "no worker holds the call's connection"
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def at_step(executed: list[tuple[str, str]]) -> bool:
        return sum(1 for app, _ in executed if app != "set") >= step

    target = ("127.0.0.1", supervisor.port)
    script = CallScript(destination="1000", dtmf="1", mode=mode, app_seconds=TIMES)
    record = run_dialplan([target, target], script, kill_when=once(at_step), kill=kill, safety_timeout=60)
    assert len(killed) == 1
    assert not record.lost and len(record.sockets) == 2
    first, second = record.sockets
    assert first.continued_in_dialplan and first.completed == first.executed  # nothing was cut off
    assert [app for app, _ in record.executed if app != "set"] == STEPS  # every step once, in order
    ran_first = len([app for app, _ in first.executed if app != "set"])
    assert [app for app, _ in second.executed if app != "set"] == STEPS[ran_first:]
    assert ran_first == step  # the step running at the kill finished on the first socket's channel
    assert record.repeated_prompts == [] and record.count("bridge") == 1
    assert second.hangup_cause == "NORMAL_CLEARING"
    welcome = ("playback", demo.WELCOME)
    # the welcome is heard exactly once: on the first worker's socket once it had started there
    assert (welcome in first.completed) == (step >= 2) and record.completed.count(welcome) == 1


def test_calls_with_a_worker_killed_every_few_calls_lose_nothing_and_repeat_nothing(supervisor, capsys):
    supervisor.wait_ready()
    outcome = run(supervisor, calls=24, kill_every=8, concurrency=4)
    print(outcome.line())
    assert outcome.killed == 3
    assert outcome.lost == 0 and outcome.repeated_prompts == 0 and outcome.double_bridges == 0
    # A flow that differs from the script may only have skipped a step, never repeated or reordered
    # one: the known race of docs/recovery.md (an async socket's worker killed within ~20 ms of
    # sending a verb, before FreeSWITCH's park loop started it). It happens under load, rarely.
    # Seen once in a clean-clone CI run (2026-12-03, not explained yet, not reproduced in 4 runs since):
    # a step a killed worker had sent but that never completed there was sent again by the next one
    # (answer, welcome on the first socket, welcome again: never a prompt heard to its end twice, which
    # repeated_prompts checks above). The order is checked on what completed, and on the last socket.
    # The same race at the menu (seen in clean-clone CI and under load): the menu was skipped (sent by
    # a worker that died before FreeSWITCH started it) or its digit went to the dead worker's socket
    # (the next socket gets only the caller's remaining input), and the flow took its own no-choice
    # branch: the FAILED prompt, never a bridge. Allowed on a resumed call only; its other steps must
    # still come in order (a step re-sent by the next worker counted once, as above).
    for record in outcome.records:
        items = []
        for number, socket in enumerate(record.sockets, 1):
            completed = list(socket.completed)
            for item in socket.executed:
                if item[0] == "set":
                    continue
                if number < len(record.sockets):
                    if item not in completed:
                        continue  # sent by a worker that died before it completed
                    completed.remove(item)
                items.append(item)
        if len(record.sockets) > 1 and items[-1:] == [("playback", demo.FAILED)]:
            assert record.count("bridge") == 0, (items, record.executed)
            apps = list(dict.fromkeys(app for app, arg in items if (app, arg) != ("playback", demo.FAILED)))
        else:
            apps = [app for app, _ in items]
        assert apps == [step for step in STEPS if step in apps], (apps, record.executed)
    assert outcome.wrong_flow < outcome.resumed  # rare: most resumed calls run every step
    assert outcome.resumed >= 3
    assert sum(
        supervisor.metric("esl_app_calls_resumed_total", pool="inbound", checkpoint=name)
        for name in ("welcome", "menu", "bridge", "after_bridge")
    ) >= outcome.resumed  # counted by the workers that resumed them (this module's earlier calls too)


def test_sigkill_with_callers_waiting_keeps_their_places_and_offers_them_in_order_once(supervisor):
    """Three callers wait (no agent logged in) and the worker holding the first (and maybe more) is
    SIGKILLed: their music slice ends, FreeSWITCH connects them to the next ``socket`` (the other
    worker), and they wait in the same places (same join times); an agent then gets all three in
    their original order, each bridged once."""
    supervisor.wait_ready()
    service = QueueService(REDIS_URL, QUEUE_PREFIX, sweep_interval=0).start(install=False)
    try:
        service.publish_config(AcdConfig(
            queues=[QueueConfig(name="support", wrap_up_seconds=0, no_answer_delay_seconds=0)],
            agents=[AgentConfig(id="a1", contact="user/a1")], tiers=[Tier(queue="support", agent="a1")],
        ))  # fmt: skip
        target = ("127.0.0.1", supervisor.port)
        peers: list[FakeFreeSWITCH] = []
        finished: list[str] = []

        def place(caller: str) -> DialplanRecord:
            # the music would play 30 s: only its 2 s slice ends it, nobody is left to break it
            script = CallScript(uuid=caller, destination="1999", app_seconds={"playback": 30.0, "bridge": 0.2})
            first_music = once(lambda executed: any(app == "playback" for app, _ in executed))
            record = run_dialplan([target, target], script, kill_when=first_music, kill=peers.append)
            finished.append(caller)
            return record

        callers = [str(uuid.uuid4()) for _ in range(3)]
        calls = []
        for count, caller in enumerate(callers, 1):
            calls.append(gevent.spawn(place, caller))
            wait_until(lambda count=count: len(peers) == count, 10)  # waiting, its music started
        status = service.queue_status("support")
        assert status["callers"] == callers, [p.record.executed for p in peers]
        joined = [service.client.hget(QUEUE_PREFIX + "acd:caller:" + c, "joined") for c in callers]
        pids = [serving_pid(peer, supervisor.pids()) for peer in peers]
        assert pids[0] is not None and None not in pids
        os.kill(pids[0], signal.SIGKILL)  # the other worker takes the calls it held at once
        victims = pids.count(pids[0])
        wait_until(lambda: service.queue_status("support")["stats"].get("rejoined") == victims, 15)
        assert service.queue_status("support")["callers"] == callers  # same places...
        assert [service.client.hget(QUEUE_PREFIX + "acd:caller:" + c, "joined") for c in callers] == joined
        service.login("a1")
        records = [call.get(timeout=30) for call in calls]
        assert finished == callers  # bridged one after the other, in their original order
        for record, pid in zip(records, pids, strict=True):
            assert not record.lost and len(record.sockets) == (2 if pid == pids[0] else 1)
            assert record.count("bridge") == 1 and record.sockets[-1].verbs.count("bridge") == 1
        stats = service.queue_status("support")["stats"]
        assert stats["offered"] == 3 and stats["answered"] == 3 and "abandoned" not in stats
    finally:
        service.stop()
