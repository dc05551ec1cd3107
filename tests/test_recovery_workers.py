"""Session recovery with real worker processes (issue 12): the pools supervisor runs the demo with two
workers on one port; the per-call fake FreeSWITCH runs the dialplan's two ``socket`` actions to it.
The worker serving the call is killed with SIGKILL as each step of the main line starts, in both
socket modes: the call completes on the other worker with only the remaining steps."""

from __future__ import annotations

import os
import signal

import pytest

import callflows.demo as demo
from esl_app.bench.recovery import STEPS, TIMES, Supervisor, run, serving_pid
from esl_app.testing.dialplan import once, run_dialplan
from esl_app.testing.peer import CallScript, FakeFreeSWITCH


@pytest.fixture(scope="module")
def supervisor():
    with Supervisor(workers=2) as running:
        yield running


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
    for record in outcome.records:
        apps = [app for app, _ in record.executed if app != "set"]
        assert apps == [step for step in STEPS if step in apps], apps
    assert outcome.wrong_flow < outcome.resumed  # rare: most resumed calls run every step
    assert outcome.resumed >= 3
    assert sum(
        supervisor.metric("esl_app_calls_resumed_total", pool="inbound", checkpoint=name)
        for name in ("welcome", "menu", "bridge", "after_bridge")
    ) >= outcome.resumed  # counted by the workers that resumed them (this module's earlier calls too)
