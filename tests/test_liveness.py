"""A switch that stops answering frees its calls in bounded time (issue 15, part 5), over TCP.

A FreeSWITCH host that crashed, hung or was cut off sends nothing: no FIN, no reply, no event. Before,
a flow waiting in ``answer()`` (execute_timeout 3600 s) or in ``wait_for_hangup()`` (no limit) held its
call slot for an hour or forever. Now every long wait probes the switch (``api uuid_exists``) and the
connection has TCP keepalive.
"""

from __future__ import annotations

import socket
import time

import gevent
import gevent.socket
import pytest
from gevent.event import Event

from esl_app import App, Call
from esl_app.protocol import switch
from esl_app.session import SessionSettings
from esl_app.testing.peer import CallScript, connect_tcp
from esl_app.transport import OutboundServer
from esl_app.transport.keepalive import KeepaliveSettings

CALL_UUID = "5a1e0000-0000-4000-8000-0000000000aa"
PROBES = {"liveness_interval": 0.5, "liveness_timeout": 1.0, "hangup_wait": 0.2}
BOUND = 10.0  # generous on a loaded machine: interval + timeout is 1.5 s


class SilentSwitch:
    """Answers the handshake, then replies to ``silent_after`` more commands and goes silent for good
    (reads everything, writes nothing): a hung switch, or a host behind a partition."""

    def __init__(self, address: tuple[str, int], *, silent_after: int = 0) -> None:
        self.sock = gevent.socket.create_connection(address)
        self.reader = switch.CommandReader()
        self.lines: list[str] = []
        self.silent_after = silent_after
        self.eof = Event()
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        answered = 0
        while data := self.sock.recv(65536):
            for command in self.reader.feed(data):
                self.lines.append(command.line)
                if command.line == "connect":
                    headers = [("Event-Name", "CHANNEL_DATA"), ("Unique-ID", CALL_UUID),
                               ("Caller-Destination-Number", "1000"), ("Answer-State", "ringing")]  # fmt: skip
                    self.sock.sendall(switch.connect_reply(headers, mode="async"))
                elif command.line in ("myevents",) or command.line.startswith("linger"):
                    self.sock.sendall(switch.reply("+OK"))
                elif answered < self.silent_after:
                    answered += 1
                    self.sock.sendall(switch.reply("+OK"))
        self.eof.set()

    def close(self) -> None:
        self.greenlet.kill()
        self.sock.close()


def serve(app: App) -> OutboundServer:
    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    return server


def wait_until(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            break
        gevent.sleep(0.02)
    return time.monotonic() - started


def test_a_switch_silent_after_connect_frees_the_slot_of_a_flow_inside_answer():
    app = App("t", SessionSettings(**PROBES, execute_timeout=600))
    inside = Event()

    @app.route("1000")
    def flow(call: Call) -> None:
        inside.set()
        call.answer()

    server = serve(app)
    peer = SilentSwitch(server.address)
    try:
        assert inside.wait(10)
        assert app.active_calls == 1
        freed = wait_until(lambda: app.active_calls == 0, BOUND)
        assert app.active_calls == 0, f"the call slot was still held after {freed:.1f} s"
        assert f"api uuid_exists {CALL_UUID}" in peer.lines
        assert peer.eof.wait(5), "the connection to the silent switch was not closed"
    finally:
        peer.close()
        server.stop(deadline=2)


def test_wait_for_hangup_without_a_limit_ends_when_the_switch_goes_silent():
    app = App("t", SessionSettings(**PROBES))
    waited: list[bool] = []
    inside = Event()

    @app.route("1000")
    def flow(call: Call) -> None:
        call.session.execute("answer", wait="none")
        inside.set()
        waited.append(call.wait_for_hangup())

    server = serve(app)
    peer = SilentSwitch(server.address, silent_after=1)
    try:
        assert inside.wait(10)
        freed = wait_until(lambda: app.active_calls == 0, BOUND)
        assert app.active_calls == 0, f"the call slot was still held after {freed:.1f} s"
        assert waited == [True]  # the call is gone for this application
    finally:
        peer.close()
        server.stop(deadline=2)


@pytest.mark.parametrize("mode", ["async", "static"])
def test_a_live_switch_answers_the_probes_and_keeps_its_calls(mode: str):
    """No false alarm: an async call waiting 2 s is probed and kept; a static socket running a 2 s
    playback inline is not probed at all (nothing would be read until it ends, spec 2.4)."""
    app = App("t", SessionSettings(liveness_interval=0.3, liveness_timeout=1.0, hangup_wait=0.2))

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        call.playback("ivr/two-seconds.wav")

    server = serve(app)
    try:
        peer = connect_tcp(server.address, CallScript(mode=mode, app_seconds={"playback": 2.0}),
                           notice_linger_after_seconds=0.1)  # fmt: skip
        record = gevent.spawn(peer.run).get(timeout=60)
        assert record.verbs == ["answer", "playback"]
        assert record.hung_up_by == "app" and record.hangup_cause == "NORMAL_CLEARING"
        probes = [c for c in record.api_commands if c.startswith("uuid_exists")]
        assert (len(probes) >= 2) if mode == "async" else (probes == [])
    finally:
        server.stop(deadline=2)


def _options_a_call_sees(app: App, server: OutboundServer) -> dict[str, int]:
    """The socket options of one call's connection, read by its flow (``server`` is stopped after)."""
    seen: dict[str, int] = {}

    @app.route("1000")
    def flow(call: Call) -> None:
        sock = call.session.connection.sock
        seen["keepalive"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        seen["idle"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        seen["interval"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        seen["count"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        seen["user_timeout_ms"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    try:
        peer = connect_tcp(server.address, CallScript(), notice_linger_after_seconds=0.1)
        gevent.spawn(peer.run).get(timeout=30)
    finally:
        server.stop(deadline=2)
    return seen


def test_call_connections_have_short_tcp_keepalive():
    keepalive = KeepaliveSettings(idle=7, interval=3, count=4)
    app = App("t", SessionSettings(keepalive=keepalive, hangup_wait=0.2))
    seen = _options_a_call_sees(app, serve(app))
    assert seen == {"keepalive": 1, "idle": 7, "interval": 3, "count": 4, "user_timeout_ms": 19_000, "nodelay": 1}


def test_keepalive_and_nodelay_set_on_the_listener_reach_each_call_with_no_setsockopt_per_call():
    """Linux copies a listener's options to the sockets it accepts: the server sets them once, and a
    session that finds keepalive on leaves it as it is (its own settings here differ, and lose)."""
    app = App("t", SessionSettings(keepalive=KeepaliveSettings(idle=30, interval=9, count=9), hangup_wait=0.2))
    server = OutboundServer(app.handle, "127.0.0.1", 0, keepalive=KeepaliveSettings(idle=7, interval=3, count=4))
    server.start()
    seen = _options_a_call_sees(app, server)
    assert seen == {"keepalive": 1, "idle": 7, "interval": 3, "count": 4, "user_timeout_ms": 19_000, "nodelay": 1}
