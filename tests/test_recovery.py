"""Session recovery (issue 12) in one process: two esl-app servers behind the dialplan's two ``socket``
actions; the first one "dies" (its connection is cut, nothing more is written: what FreeSWITCH sees
of a SIGKILL) at each step of the demo flow, in both socket modes. The second one resumes the call:
only the remaining steps run, no prompt completed before is heard again, no bridge placed twice.
The same with real worker processes and SIGKILL: tests/test_recovery_workers.py."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from gevent.server import StreamServer

import callflows.demo as demo
from esl_app import App, Call
from esl_app.metrics import PoolMetrics
from esl_app.recovery import VARIABLE, Checkpoint, CheckpointCodec, CheckpointError, Entry, Journal, check_state
from esl_app.testing.dialplan import DialplanRecord, once, run_dialplan
from esl_app.testing.peer import CallScript

WELCOME = ("playback", demo.WELCOME)
SLOW = {"playback": 0.4, "play_and_get_digits": 0.4, "bridge": 0.4, "answer": 0.2}


class Worker:
    """An esl-app server whose live connections can be cut like a killed process's."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.live: set[socket.socket] = set()
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.address = ("127.0.0.1", self.server.server_port)

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.live.add(sock)
        try:
            self.app.handle(sock, address)
        finally:
            self.live.discard(sock)

    def die(self, _peer: object = None) -> None:
        """Cut every call at once: no byte more reaches FreeSWITCH (the kernel closes a dead process's sockets)."""
        for sock in list(self.live):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(app: App = demo.app, count: int = 2) -> list[Worker]:
        new = [Worker(app) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def open_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime(2026, 11, 25, 10, 30, tzinfo=ZoneInfo("Europe/London"))  # a Wednesday morning
    monkeypatch.setattr(demo, "clock", lambda: moment)


def main_line(mode: str, **fields) -> CallScript:
    return CallScript(destination="1000", dtmf="1", mode=mode, app_seconds=SLOW, **fields)


def verbs_at(step: int) -> Callable[[list[tuple[str, str]]], bool]:
    """True once the ``step``-th application of the flow (bridge set-ups aside) has started."""
    return lambda executed: sum(1 for app, _ in executed if app != "set") >= step


def run(workers: list[Worker], script: CallScript, step: int | None) -> DialplanRecord:
    first = workers[0]
    return run_dialplan(
        [w.address for w in workers],
        script,
        kill_when=once(verbs_at(step)) if step is not None else None,
        kill=first.die,
        safety_timeout=30,
    )


UNINTERRUPTED = ["answer", "playback", "play_and_get_digits", "bridge"]


@pytest.mark.parametrize("mode", ["async", "static"])
def test_the_demo_flow_without_a_crash_runs_on_one_socket(workers, open_hours, mode):
    record = run(workers(), main_line(mode), None)
    assert len(record.sockets) == 1 and not record.lost
    assert [app for app, _ in record.executed if app != "set"] == UNINTERRUPTED
    assert record.sockets[0].variables[VARIABLE]  # checkpoints were recorded on the channel


@pytest.mark.parametrize("mode", ["async", "static"])
@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_a_call_outlives_its_worker_at_every_step_of_the_demo(workers, open_hours, mode, step):
    record = run(workers(), main_line(mode), step)
    assert not record.lost and len(record.sockets) == 2, record
    first, second = record.sockets
    assert first.closed_by == "app" and first.continued_in_dialplan  # the first server died
    # what the first socket started ran to its end (part 4: nothing is cut off)...
    assert first.completed == [item for item in first.executed]
    # ...and the second socket runs only the remaining steps
    verbs = [app for app, _ in record.executed if app != "set"]
    assert verbs == UNINTERRUPTED, verbs
    ran_first = len([app for app in first.verbs if app != "set"])
    assert [app for app, _ in second.executed if app != "set"] == UNINTERRUPTED[ran_first:]
    assert record.repeated_prompts == []
    assert record.count("bridge") == 1
    assert second.hangup_cause == "NORMAL_CLEARING" and second.hung_up_by == "app"


@pytest.mark.parametrize("mode", ["async", "static"])
def test_a_busy_team_after_a_crash_during_the_bridge_hears_the_busy_message_once(workers, open_hours, mode):
    script = main_line(mode, bridge={"*": "busy"})
    record = run(workers(), script, 4)  # dies while the bridge rings
    assert not record.lost and len(record.sockets) == 2
    assert record.count("bridge") == 1
    assert record.sockets[1].executed == [("playback", demo.BUSY)]  # the outcome came from the channel
    assert record.repeated_prompts == []


def test_a_second_crash_resumes_from_the_later_checkpoint(workers, open_hours):
    three = workers(count=3)
    state = {"kills": 0}

    def die(_peer: object) -> None:
        three[state["kills"]].die()
        state["kills"] += 1

    executed_starts = [2, 4]  # the welcome on the first worker, the bridge on the second

    def when(executed: list[tuple[str, str]]) -> bool:
        return state["kills"] < 2 and verbs_at(executed_starts[state["kills"]])(executed)

    record = run_dialplan([w.address for w in three], main_line("async"), kill_when=when, kill=die, safety_timeout=30)
    assert state["kills"] == 2 and len(record.sockets) == 3
    assert not record.lost
    assert [app for app, _ in record.executed if app != "set"] == UNINTERRUPTED
    assert record.repeated_prompts == []


def test_resumes_and_restarts_are_counted(workers, open_hours):
    metrics = PoolMetrics("test")
    demo.app.observer = metrics
    try:
        run(workers(), main_line("async"), 3)
        assert metrics.registry.get_sample_value(
            "esl_app_calls_resumed_total", {"pool": "test", "checkpoint": "menu"}
        ) == 1
        # a checkpoint that does not verify (forged by whoever could set a variable): counted, started over
        forged = main_line("async", variables={VARIABLE: "eyJyb3V0ZSI6Im1haW4gbGluZSIsImlzc3VlZCI6M30." + "0" * 32})
        record = run(workers(), forged, None)
        assert [app for app, _ in record.executed if app != "set"] == UNINTERRUPTED  # from the top
        assert metrics.registry.get_sample_value(
            "esl_app_calls_restarted_total", {"pool": "test", "reason": "invalid"}
        ) == 1
    finally:
        demo.app.observer = None


def test_a_checkpoint_from_another_channel_is_not_trusted(workers, open_hours):
    """A valid value copied from another call (the MAC binds the channel UUID) starts from the top."""
    codec = demo.app.checkpoint_codec()
    stolen = codec.encode("another-call", Checkpoint(route="main line", issued=3))
    record = run(workers(), main_line("async", variables={VARIABLE: stolen}), None)
    assert [app for app, _ in record.executed if app != "set"] == UNINTERRUPTED
    assert codec.decode("another-call", stolen) is not None
    assert CheckpointCodec(b"x" * 32).decode("another-call", stolen) is None  # another deployment's key


@pytest.mark.parametrize("mode", ["async", "static"])
def test_the_checkpoint_rides_with_the_next_command_without_a_round_trip_of_its_own(workers, open_hours, mode):
    record = run(workers(), main_line(mode), None)
    commands = record.sockets[0].commands
    # api uuid_setvar (never expanded), written with the application's own command: FreeSWITCH runs
    # it before it reads the application, and the server waits for neither reply before writing both
    marks = [i for i, line in enumerate(commands) if line.startswith("api uuid_setvar") and VARIABLE in line]
    assert all(commands[i + 1].startswith("sendmsg") for i in marks)
    assert len(marks) == len(UNINTERRUPTED)


def test_checkpoint_names_and_states_are_checked():
    assert check_state("menu", {"team": "sales", "tries": [1, 2]}) == {"team": "sales", "tries": [1, 2]}
    with pytest.raises(CheckpointError):
        check_state("ok", {"when": object()})  # not JSON
    with pytest.raises(CheckpointError):
        check_state("bad name", {})
    with pytest.raises(CheckpointError):
        check_state("x" * 65, {})


def test_explicit_checkpoint_states_are_replayed_as_recorded(workers):
    app = App("replay")
    decisions = iter(["first", "second"])
    heard: list[str] = []

    @app.route("2000", name="chance", resumable=True)
    def chance(call: Call) -> None:
        call.answer()
        picked = call.checkpoint("picked", prompt=next(decisions))["prompt"]
        heard.append(picked)
        call.playback(f"{picked}.wav")
        call.playback("bye.wav")
        call.hangup()

    servers = workers(app)
    script = CallScript(destination="2000", app_seconds={"playback": 0.4})
    record = run(servers, script, 3)  # dies as bye.wav starts: the replay must pick "first" again
    assert not record.lost
    assert [arg for app_name, arg in record.executed if app_name == "playback"].count("first.wav") == 1
    assert "second.wav" not in [arg for _, arg in record.executed]
    assert heard == ["first", "first"]  # the replay took the recorded decision, not a new one


def test_a_handed_off_call_resumes_on_the_async_extensions_second_socket(workers, open_hours):
    """The async leg of a hand-off (static -> async) dies: the `esl_app_async` extension's second
    socket brings the call back with destination `esl_app_async`; the checkpoint still routes it to
    the main line (the hand-off variables were used once, on the first async leg)."""
    uuid = "7d997322-358a-4092-b0ff-d51f78b0adc7"
    marker = demo.app.handoff.issue(uuid, "1000", "default")
    script = main_line("async").model_copy(
        update={
            "uuid": uuid,
            "destination": "esl_app_async",
            "context": "esl_app",
            "variables": {"esl_app_destination": "1000", "esl_app_context": "default", "esl_app_handoff": marker},
        }
    )
    record = run(workers(), script, 2)
    assert not record.lost and len(record.sockets) == 2
    assert [app for app, _ in record.executed if app not in ("set", "unset")] == UNINTERRUPTED
    assert record.repeated_prompts == []
    assert record.sockets[1].hangup_cause == "NORMAL_CLEARING"


def test_without_full_the_checkpoint_is_a_set_application_and_the_call_still_resumes(workers, open_hours):
    record = run(workers(), main_line("async", full=False), 2)
    assert not record.lost and len(record.sockets) == 2
    first = record.sockets[0]
    assert any(arg.startswith(VARIABLE + "=") for app, arg in first.executed if app == "set")
    assert not any(line.startswith("api ") for line in first.commands)  # refused without full
    assert [app for app, arg in record.executed if not (app == "set" and arg.startswith(VARIABLE))][:3] == [
        "answer", "playback", "play_and_get_digits",
    ]  # fmt: skip
    assert record.repeated_prompts == []


def test_a_journal_too_long_for_a_channel_variable_is_cleared_and_the_call_is_no_longer_resumable(workers):
    app = App("long")

    @app.route("3000", name="long", resumable=True)
    def long_flow(call: Call) -> None:
        call.answer()
        for number in range(90):  # ~50 characters each in the journal
            call.playback(f"prompt-{number}.wav")
        call.hangup()

    record = run(workers(app), CallScript(destination="3000"), None)
    setvars = [line for line in record.sockets[0].commands if line.startswith("api uuid_setvar") and VARIABLE in line]
    assert setvars[-1].endswith(VARIABLE)  # no value: the variable is unset, once
    assert all(len(line) < 3200 for line in setvars)
    assert VARIABLE not in record.sockets[0].variables


def test_the_checkpoint_codec_round_trips_and_refuses_any_change():
    codec = CheckpointCodec(b"k" * 32)
    checkpoint = Checkpoint(route="main line", destination="1000", context="default", issued=2)
    value = codec.encode("uuid-1", checkpoint)
    assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")  # nothing expands
    assert codec.decode("uuid-1", value) == checkpoint
    payload, _, mac = value.rpartition(".")
    assert codec.decode("uuid-1", payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac) is None
    assert codec.decode("uuid-2", value) is None
    assert codec.decode("uuid-1", "not a checkpoint") is None
    assert Checkpoint(route="r", issued=3).label == "unnamed"


def test_the_append_only_journal_signs_what_a_whole_encoding_signs_and_cannot_be_extended():
    codec = CheckpointCodec(b"k" * 32)
    journal = Journal(codec.writer("uuid-1", "main line", "1000", "default"))
    entries = [Entry(name="welcome", state={}), Entry(app="answer"), Entry(app="read", result={"variable_x": "12"})]
    values = []
    for entry in entries:
        values.append(journal.value().decode())  # before each entry is issued, as a call writes it
        journal.entries.append(entry)
    for issued, value in enumerate(values, start=1):
        whole = Checkpoint(route="main line", destination="1000", context="default", issued=issued)
        whole.entries = entries[: issued - 1]
        assert value == codec.encode("uuid-1", whole) and codec.decode("uuid-1", value) == whole
    # an earlier value with a field appended (taken from a later one) no longer verifies
    head, _, _ = values[1].rpartition(".")
    later_field = values[2].split(".")[2]
    forged = f"{head.rpartition('.')[0]}.{later_field}.3.{values[1].rpartition('.')[2]}"
    assert codec.decode("uuid-1", forged) is None
