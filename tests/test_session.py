"""Session and connection behaviour against a hand-scripted FreeSWITCH, byte by byte.

These cases need exact control of what the switch writes and when (foreign completions, stray
replies, malformed frames), so the peer here is scripted directly with the codec's FreeSWITCH side.
Regression tests for the greenswitch defects of spec 7.1 that a framework would inherit sit here.
"""

from __future__ import annotations

import logging
import uuid

import gevent
import pytest

from esl_app import App, Call, CallHangup, ConnectionClosed
from esl_app.protocol import Parser, commands, switch
from esl_app.session import Session, SessionSettings
from esl_app.testing.pipe import memory_socket_pair

CALL_UUID = "5a1e0000-0000-4000-8000-000000000001"


def channel_data(**extra: str) -> list[tuple[str, str]]:
    return [
        ("Event-Name", "CHANNEL_DATA"),
        ("Unique-ID", CALL_UUID),
        ("Channel-Name", "sofia/internal/1001@example.com"),
        ("Answer-State", "ringing"),
        ("Caller-Caller-ID-Number", "1001"),
        ("Caller-Destination-Number", "1000"),
        ("Caller-Context", "default"),
        *extra.items(),
    ]


def execute_event(name: str, app: str, app_uuid: str, response: str | None = None, **extra: str) -> bytes:
    headers = [("Event-Name", name), ("Unique-ID", CALL_UUID), ("Application", app), ("Application-UUID", app_uuid)]
    if response is not None:
        headers.append(("Application-Response", response))
    headers += list(extra.items())
    return switch.event_plain(headers)


class ScriptedSwitch:
    """FreeSWITCH's end of a memory pipe: read commands, write whatever the test says."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.reader = switch.CommandReader()
        self.pending: list[switch.Command] = []

    def command(self, timeout: float = 2.0) -> switch.Command:
        with gevent.Timeout(timeout):
            while not self.pending:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("the application closed the socket")
                self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def handshake(self, mode: str = "async", nixed: str = "+OK events nixed") -> None:
        assert self.command().line == "connect"
        self.write(switch.connect_reply(channel_data(), mode=mode))
        assert self.command().line == "myevents"
        self.write(switch.reply("+OK Events Enabled"))
        assert self.command().line.startswith("linger")
        self.write(switch.reply("+OK will linger 10 seconds"))
        assert self.command().line == "nixevent CHANNEL_PARK CHANNEL_UNPARK CHANNEL_STATE CHANNEL_EXECUTE"
        self.write(switch.reply(nixed))


def start_session(settings: SessionSettings | None = None):
    peer_end, app_end = memory_socket_pair()
    session = Session(app_end, settings or SessionSettings(hangup_wait=0.2))
    peer = ScriptedSwitch(peer_end)
    connecting = gevent.spawn(session.connect)
    peer.handshake()
    connecting.get(timeout=2)
    return session, peer


def test_execute_resolves_only_on_its_own_application_uuid():
    """greenswitch G10: a foreign or earlier COMPLETE of the same application must not release the waiter."""
    session, peer = start_session()
    running = gevent.spawn(session.execute, "playback", "a.wav")
    command = peer.command()
    app_uuid = command.headers["Event-UUID"]
    assert command.headers["event-lock"] == "true"
    peer.write(switch.reply("+OK"))
    peer.write(execute_event("CHANNEL_EXECUTE_COMPLETE", "playback", str(uuid.uuid4()), "FILE PLAYED"))
    gevent.sleep(0.05)
    assert not running.ready()
    peer.write(execute_event("CHANNEL_EXECUTE_COMPLETE", "playback", app_uuid, "FILE PLAYED"))
    event = running.get(timeout=2)
    assert event["Application-UUID"] == app_uuid


def test_a_user_waiting_on_complete_events_does_not_steal_completions():
    """greenswitch G11: watching CHANNEL_EXECUTE_COMPLETE must not break blocking verbs."""
    session, peer = start_session()
    watcher = gevent.spawn(
        session.wait_for_event, lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE", 2.0
    )
    running = gevent.spawn(session.execute, "answer")
    command = peer.command()
    peer.write(switch.reply("+OK"))
    peer.write(execute_event("CHANNEL_EXECUTE_COMPLETE", "answer", command.headers["Event-UUID"], "_none_"))
    assert running.get(timeout=2).name == "CHANNEL_EXECUTE_COMPLETE"
    assert watcher.get(timeout=2).name == "CHANNEL_EXECUTE_COMPLETE"


def test_channel_hangup_fails_a_pending_execute_at_once():
    session, peer = start_session()
    running = gevent.spawn(session.execute, "playback", "long.wav")
    peer.command()
    peer.write(switch.reply("+OK"))
    peer.write(switch.event_plain([("Event-Name", "CHANNEL_HANGUP"), ("Unique-ID", CALL_UUID),
                                   ("Hangup-Cause", "NORMAL_CLEARING")]))
    with pytest.raises(CallHangup) as raised:
        running.get(timeout=1)
    assert raised.value.cause == "NORMAL_CLEARING"
    with pytest.raises(CallHangup):
        session.execute("playback", "next.wav")


def test_eof_fails_pending_commands_instead_of_hanging():
    """greenswitch G9: after EOF every pending and future command fails."""
    session, peer = start_session()
    running = gevent.spawn(session.api, "status")
    peer.command()
    peer.sock.close()
    with pytest.raises(CallHangup):
        running.get(timeout=1)
    with pytest.raises(ConnectionClosed):
        session.connection.send(commands.api("status"))


def test_linger_notice_keeps_the_socket_and_later_events_arrive():
    """greenswitch G13: the linger notice is 'call gone, socket open', not a disconnect."""
    session, peer = start_session()
    peer.write(switch.linger_notice(CALL_UUID, "sofia/internal/1001", 10))
    gevent.sleep(0.01)
    assert session.hung_up.is_set()
    assert not session.connection.closed
    complete = [("Event-Name", "CHANNEL_HANGUP_COMPLETE"), ("Unique-ID", CALL_UUID),
                ("Hangup-Cause", "NORMAL_CLEARING"), ("variable_billsec", "42")]
    peer.write(switch.event_plain(complete))
    gevent.sleep(0.01)
    assert session.hangup_complete.is_set()
    assert session.hangup_complete_event.get("variable_billsec") == "42"
    # commands still get replies during linger
    getting = gevent.spawn(session.api, "uuid_exists", CALL_UUID)
    peer.command()
    peer.write(switch.api_response("false"))
    assert getting.get(timeout=1) == "false"


def test_stray_reply_is_logged_not_fatal(caplog):
    """greenswitch G18: a reply with no pending command must not kill the reader."""
    session, peer = start_session()
    with caplog.at_level(logging.WARNING):
        peer.write(switch.reply("+OK unexpected"))
        running = gevent.spawn(session.api, "status")
        peer.command()
        peer.write(switch.api_response("UP"))
        assert running.get(timeout=1) == "UP"
    assert "no pending command" in caplog.text


def test_concurrent_senders_keep_reply_order():
    """greenswitch G8: queueing a reply slot and writing happen under one lock."""
    session, peer = start_session()
    results = [gevent.spawn(session.api, "echo", str(n)) for n in range(20)]
    for _ in range(20):
        command = peer.command()
        peer.write(switch.api_response(command.line.split()[-1]))
    assert [g.get(timeout=1) for g in results] == [str(n) for n in range(20)]


def test_linger_refused_without_full_is_reported(caplog):
    """greenswitch G12: a refused linger is checked and logged, not silently ignored."""
    peer_end, app_end = memory_socket_pair()
    session = Session(app_end, SessionSettings())
    peer = ScriptedSwitch(peer_end)
    with caplog.at_level(logging.WARNING):
        connecting = gevent.spawn(session.connect)
        assert peer.command().line == "connect"
        peer.write(switch.connect_reply(channel_data(), full=False))
        peer.command()
        peer.write(switch.reply("+OK Events Enabled"))
        peer.command()
        peer.write(switch.reply("-ERR command not found"))
        assert peer.command().line.startswith("nixevent")
        peer.write(switch.reply("-ERR command not found"))
        connecting.get(timeout=2)
    assert not session.full
    assert not session.lingering
    assert "linger refused" in caplog.text
    assert "nixevent" not in caplog.text  # expected without 'full': every event comes, nothing to say


def test_execute_without_waiting_does_not_block_on_a_static_socket():
    """greenswitch G14: on a static socket '+OK' comes after the app; wait='none' must not wait for it."""
    peer_end, app_end = memory_socket_pair()
    session = Session(app_end, SessionSettings())
    peer = ScriptedSwitch(peer_end)
    connecting = gevent.spawn(session.connect)
    peer.handshake(mode="static")
    connecting.get(timeout=2)
    assert session.mode == "static"
    with gevent.Timeout(0.5):
        assert session.execute("playback", "long.wav", wait="none") is None
    assert peer.command().headers["execute-app-name"] == "playback"


def test_malformed_frame_ends_the_call_cleanly(caplog):
    app = App()
    outcome: dict = {}

    @app.route("1000")
    def flow(call: Call):
        try:
            call.playback("a.wav")
        except CallHangup as exc:
            outcome["hangup"] = exc
            raise

    peer_end, app_end = memory_socket_pair()
    peer = ScriptedSwitch(peer_end)
    handling = gevent.spawn(app.handle, app_end, ("memory", 0))
    peer.handshake()
    peer.command()  # the playback execute
    with caplog.at_level(logging.ERROR):
        peer.write(b"Content-Type: api/response\nContent-Length: banana\n\n")
        handling.get(timeout=3)
    assert isinstance(outcome["hangup"], CallHangup)
    assert "Content-Length is not a number" in caplog.text
    assert handling.value.hangup_cause == "ESL_PROTOCOL_ERROR"


def test_parser_sees_one_command_per_caller_controlled_value():
    """Caller-controlled text never splits a command: a hostile caller ID reaches FreeSWITCH as data."""
    hostile = "1001\n\nsendmsg\ncall-command: hangup\n\n"
    data = commands.execute("set", f"effective_caller_id_number={hostile}", event_uuid="u")
    read = switch.CommandReader().feed(data)
    assert len(read) == 1
    assert read[0].body.decode() == f"effective_caller_id_number={hostile}"
    assert Parser().feed(b"") == []


def test_a_failing_frame_handler_closes_the_connection_instead_of_hanging_waits():
    """The reader must never die silently: pending commands fail and the close is reported."""
    from esl_app.transport import Connection

    closed: list[BaseException | None] = []
    peer_end, app_end = memory_socket_pair()

    def broken(frame):
        raise RuntimeError("bug in a handler")

    connection = Connection(app_end, broken, closed.append, name="t")
    connection.start()
    pending = connection.send(commands.api("status"))
    peer_end.sendall(switch.event_plain([("Event-Name", "HEARTBEAT")]))
    with pytest.raises(ConnectionClosed):
        pending.get(timeout=1)
    assert connection.closed
    assert len(closed) == 1 and isinstance(closed[0], RuntimeError)
