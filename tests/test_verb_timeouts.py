"""A verb's timeout stops the application (issue 15, part 2), over TCP against the fake FreeSWITCH.

Executes carry ``event-lock``: while the application runs, FreeSWITCH holds every later command of the
socket, esl-app's own ``respond`` and hangup included (spec 2.4). So a timeout that only raised in the
flow left the call in the application until it ended by itself. The fake peer models both the lock
and ``api uuid_break`` (transcript 10) / ``uuid_kill``.
"""

from __future__ import annotations

import time

import gevent

from esl_app import App, Call
from esl_app.errors import CommandTimeout
from esl_app.session import SessionSettings
from esl_app.testing.peer import CallRecord, CallScript, connect_tcp
from esl_app.transport import OutboundServer

LONG = 20.0  # the application's own length: far beyond every bound asserted below
BOUND = 6.0  # generous for a loaded machine; the fixed code ends these calls in about a second


def settings(**overrides: float) -> SessionSettings:
    return SessionSettings(**{"hangup_wait": 0.2, "stop_wait": 1.0, **overrides})


def place(app: App, script: CallScript) -> tuple[CallRecord, float]:
    """One call over TCP; returns the record and when the call was hung up (seconds after the start)."""
    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    try:
        peer = connect_tcp(server.address, script, notice_linger_after_seconds=0.1)
        peer.safety_timeout = 60.0
        started = time.monotonic()
        running = gevent.spawn(peer.run)
        hung_up_at: list[float] = []

        def watch() -> None:
            while peer.record.hangup_cause is None:
                gevent.sleep(0.01)
            hung_up_at.append(time.monotonic() - started)

        watcher = gevent.spawn(watch)
        record = running.get(timeout=90)
        watcher.join(timeout=1)
        watcher.kill()
        return record, hung_up_at[0] if hung_up_at else float("inf")
    finally:
        server.stop(deadline=5)


def test_playback_timeout_breaks_the_playback_so_respond_and_hangup_run_at_once():
    app = App("t", settings())

    @app.route("1000")
    def flow(call: Call) -> None:
        call.playback("ivr/long.wav", timeout=0.5)

    record, hung_up = place(app, CallScript(app_seconds={"playback": LONG}))
    assert hung_up < BOUND, f"the call was hung up {hung_up:.1f} s after it started"
    assert record.verbs == ["playback", "respond"]
    assert record.executed[-1] == ("respond", "503 Service Unavailable")
    assert f"uuid_break {record.uuid}" in record.api_commands
    assert record.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert not record.continued_in_dialplan


def test_a_caught_gather_timeout_leaves_the_call_usable():
    app = App("t", settings())
    outcome: list[str] = []

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        try:
            call.gather("ivr/menu.wav", call_timeout=0.5)
        except CommandTimeout:
            outcome.append("timeout")
        call.playback("ivr/goodbye.wav")
        call.hangup("NORMAL_CLEARING")

    record, hung_up = place(app, CallScript(app_seconds={"play_and_get_digits": LONG}))
    assert outcome == ["timeout"]
    assert hung_up < BOUND
    assert record.verbs == ["answer", "play_and_get_digits", "playback"]
    assert record.hangup_cause == "NORMAL_CLEARING" and record.hung_up_by == "app"


def test_park_ignores_uuid_break_so_the_call_is_killed():
    """park never tests CF_BREAK (switch_ivr_park): after stop_wait the call is killed."""
    app = App("t", settings())

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        call.execute("park", timeout=0.3)

    record, hung_up = place(app, CallScript())
    assert hung_up < BOUND, f"the call was hung up {hung_up:.1f} s after it started"
    assert record.api_commands == [f"uuid_break {record.uuid}", f"uuid_kill {record.uuid} NORMAL_TEMPORARY_FAILURE"]
    assert record.hung_up_by == "app" and record.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert not record.continued_in_dialplan  # before: the socket closed with the call left parked


def test_bridge_call_timeout_ends_the_bridge_and_keeps_the_caller():
    """An answered bridge past call_timeout: its B-leg is killed, the A-leg comes back to the flow."""
    app = App("t", settings())
    outcome: list[str] = []

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        try:
            call.bridge("user/2000", call_timeout=0.3)
        except CommandTimeout:
            outcome.append("timeout")
        call.playback("ivr/call-ended.wav")

    record, hung_up = place(app, CallScript(app_seconds={"bridge": LONG}))
    assert outcome == ["timeout"]
    assert hung_up < BOUND, f"the call was hung up {hung_up:.1f} s after it started"
    b_leg = record.variables["bridge_uuid"]
    assert record.api_commands == [f"uuid_kill {b_leg} ALLOTTED_TIMEOUT"]
    assert record.variables["last_bridge_hangup_cause"] == "ALLOTTED_TIMEOUT"
    assert record.verbs[-2:] == ["bridge", "playback"]
    assert record.hung_up_by == "app" and record.hangup_cause == "NORMAL_CLEARING"


def test_static_socket_timeout_frees_the_flow_at_once():
    """A static socket runs the application inline and reads nothing meanwhile (spec 2.4): no command
    can stop it, so the connection is closed; the dialplan goes on once the application ends."""
    app = App("t", settings())
    ended: list[float] = []
    started = time.monotonic()

    @app.route("1000")
    def flow(call: Call) -> None:
        try:
            call.playback("ivr/long.wav", timeout=0.5)
        finally:
            ended.append(time.monotonic() - started)

    @app.on_hangup
    def done(call: Call, cause: str | None) -> None:
        ended.append(time.monotonic() - started)

    record, _ = place(app, CallScript(mode="static", app_seconds={"playback": LONG}))
    assert len(ended) == 2 and ended[1] < BOUND, f"the flow let go of the call after {ended} s"
    assert record.verbs == ["playback"]
    assert record.continued_in_dialplan and record.closed_by == "app"


def test_a_flows_own_gevent_timeout_also_stops_the_application():
    """A bound the flow sets itself around a verb ends the wait (as CommandTimeout, as before) and
    stops the application too, so the flow's next command runs at once."""
    app = App("t", settings())
    outcome: list[str] = []

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        try:
            with gevent.Timeout(0.5):
                call.playback("ivr/long.wav")  # execute_timeout 3600 s: the probing wait
        except CommandTimeout:
            outcome.append("timeout")
        call.hangup("NORMAL_CLEARING")

    record, hung_up = place(app, CallScript(app_seconds={"playback": LONG}))
    assert outcome == ["timeout"]
    assert hung_up < BOUND, f"the call was hung up {hung_up:.1f} s after it started"
    assert record.api_commands == [f"uuid_break {record.uuid}"]
    assert record.hung_up_by == "app" and record.hangup_cause == "NORMAL_CLEARING"
