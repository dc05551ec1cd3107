"""The inbound Event Socket client (esl_app.transport.inbound) against the fake node, against replayed
real FreeSWITCH 1.10.12 bytes, and against servers that misbehave.

Every wait is an event wait with a generous bound: the machine running the suite is loaded.
"""

from __future__ import annotations

import time

import gevent
import pytest
from gevent.event import Event as Signal
from inbound_servers import ScriptedServer, ServerConn, capture_steps, replay

from esl_app.protocol import Event, UnsafeCommandError, switch
from esl_app.testing.fake_node import FakeNode
from esl_app.transport.inbound import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionLost,
    DefaultPasswordRefused,
    DisconnectNotice,
    FrameTooLarge,
    InboundClient,
    JobLost,
    NotConnected,
    ProtocolViolation,
    RudeRejection,
)

WAIT = 10.0  # generous: the suite runs on a loaded machine


class Recorder:
    """Collects events and state changes; wait helpers are event based."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states: list[tuple[str, BaseException | None]] = []
        self.changed = Signal()

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    def on_state(self, client: InboundClient, state: str, error: BaseException | None) -> None:
        self.states.append((state, error))
        self.changed.set()

    def wait_for(self, predicate, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            if not predicate():
                self.changed.wait(min(remaining, 0.2))
        return True

    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def errors(self, kind: type[BaseException]) -> list[BaseException]:
        return [error for state, error in self.states if state == "disconnected" and isinstance(error, kind)]


def make_client(address: tuple[str, int], recorder: Recorder | None = None, **kwargs) -> InboundClient:
    recorder = recorder or Recorder()
    options = {"backoff_min": 0.05, "backoff_max": 0.2, "command_timeout": WAIT, "connect_timeout": WAIT}
    options.update(kwargs)
    return InboundClient(
        address[0], address[1], "ClueCon", name="node", on_event=recorder.on_event, on_state=recorder.on_state,
        **options,
    )  # fmt: skip


@pytest.fixture
def node():
    with FakeNode("fs1", heartbeat_interval=0.1) as node:
        yield node


# -- against the fake node -----------------------------------------------------------------------


def test_connects_authenticates_and_runs_api(node: FakeNode) -> None:
    with make_client(node.address) as client:
        assert client.wait_connected(WAIT)
        assert client.api("status").startswith("UP 0 years")
        assert client.api("show calls count") == "\n0 total.\n"
        assert client.connects == 1


def test_api_error_bodies_are_text_and_api_ok_raises(node: FakeNode) -> None:
    with make_client(node.address) as client:
        assert client.wait_connected(WAIT)
        assert client.api("nosuchcommand") == "-ERR nosuchcommand Command not found!\n"
        with pytest.raises(CommandFailed) as info:
            client.api_ok("uuid_kill 00000000-0000-0000-0000-000000000000")
        assert "No such channel" in str(info.value)
        assert client.api_ok("uuid_exists nothing") == "false"


def test_pipelined_api_calls_get_their_own_replies(node: FakeNode) -> None:
    with make_client(node.address) as client:
        assert client.wait_connected(WAIT)
        results = [gevent.spawn(client.api, f"echo reply-{i}") for i in range(50)]
        gevent.joinall(results, timeout=WAIT)
        assert [g.value for g in results] == [f"reply-{i}" for i in range(50)]


def test_caller_text_with_cr_or_lf_never_reaches_the_node(node: FakeNode) -> None:
    with make_client(node.address) as client:
        assert client.wait_connected(WAIT)
        before = list(node.api_commands)
        for bad in ("status\napi hupall", "status\r\n\r\napi hupall", "echo a\0b"):
            with pytest.raises(UnsafeCommandError):
                client.api(bad)
        with pytest.raises(UnsafeCommandError):
            client.bgapi("originate x &park()\n\nbgapi hupall")
        with pytest.raises(ValueError):
            client.bgapi("status", job_uuid="x" * 37)  # FreeSWITCH would cut it and the result never match
        assert client.api("echo still in sync") == "still in sync"
        assert node.api_commands == [*before, "echo still in sync"]
    with pytest.raises(UnsafeCommandError):
        InboundClient("127.0.0.1", 8021, "secret\nevent plain ALL")
    with pytest.raises(UnsafeCommandError):
        InboundClient("127.0.0.1", 8021, "secret", filters=[("Unique-ID", "x\nfilter delete all")])


def test_bgapi_sends_our_job_uuid_and_resolves_on_background_job(node: FakeNode) -> None:
    recorder = Recorder()
    with make_client(node.address, recorder, events=("CHANNEL_CREATE", "CHANNEL_ANSWER")) as client:
        assert client.wait_connected(WAIT)
        job_uuid = "aaaaaaaa-bbbb-4ccc-8ddd-000000000042"
        call_uuid = "11111111-2222-4333-8444-555555555555"
        job = client.bgapi(f"originate {{origination_uuid={call_uuid}}}sofia/gateway/gw/15550001 &park()", job_uuid)
        assert job.job_uuid == job_uuid
        assert job.wait(WAIT) == f"+OK {call_uuid}\n"
        assert job.accepted
        assert job.wait_accepted(WAIT) == f"+OK Job-UUID: {job_uuid}"
        assert recorder.wait_for(lambda: "CHANNEL_ANSWER" in recorder.names())
        # BACKGROUND_JOB was subscribed for the job, but not asked for: not delivered
        assert "BACKGROUND_JOB" not in recorder.names()
        create = next(e for e in recorder.events if e.name == "CHANNEL_CREATE")
        assert create.unique_id == call_uuid
        assert node.calls_to("15550001") == 1
        assert client.api(f"uuid_exists {call_uuid}") == "true"


def test_bgapi_returns_before_the_reply_and_checks_it() -> None:
    gate = Signal()

    def handler(conn: ServerConn, index: int) -> None:
        conn.login()
        conn.serve_setup()
        command = conn.command()
        assert command is not None and command.name == "bgapi"
        job = command.headers["Job-UUID"]
        gate.wait(WAIT)  # the reply is late
        conn.send(switch.reply(f"+OK Job-UUID: {job}", ("Job-UUID", job)))
        body = "+OK done\n"
        pairs = [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", job), ("Job-Command", "status")]
        conn.send(switch.event_plain(pairs, body))
        refused = conn.command()
        assert refused is not None
        conn.send(switch.reply("-ERR permission denied"))
        other = conn.command()
        assert other is not None
        foreign = "99999999-0000-4000-8000-000000000000"
        conn.send(switch.reply(f"+OK Job-UUID: {foreign}", ("Job-UUID", foreign)))
        conn.command(WAIT)

    with ScriptedServer(handler) as server, make_client(server.address) as client:
        assert client.wait_connected(WAIT)
        started = time.monotonic()
        job = client.bgapi("status")
        assert time.monotonic() - started < 1.0
        assert not job.accepted
        waiter = gevent.spawn(job.wait, WAIT)
        gevent.sleep(0.05)
        assert not waiter.ready()  # waiting before the reply arrived
        gate.set()
        assert waiter.get(timeout=WAIT) == "+OK done\n"
        refused = client.bgapi("status")
        with pytest.raises(CommandFailed):
            refused.wait(WAIT)
        mismatched = client.bgapi("status")
        with pytest.raises(ProtocolViolation):
            mismatched.wait(WAIT)
    assert not server.errors


def test_job_lost_when_the_node_dies_mid_job(node: FakeNode) -> None:
    node.set_outcome("2000", "answer", ring_seconds=30)
    with make_client(node.address) as client:
        assert client.wait_connected(WAIT)
        call = "c0ffee00-0000-4000-8000-000000000001"
        job = client.bgapi(f"originate {{origination_uuid={call}}}sofia/gateway/gw/2000 &park()")
        assert job.wait_accepted(WAIT).startswith("+OK Job-UUID")
        assert node.wait_until(lambda: node.calls_to("2000") == 1, WAIT)
        node.crash()
        with pytest.raises(JobLost) as info:
            job.wait(WAIT)
        assert info.value.accepted is True
        assert info.value.job_uuid == job.job_uuid
        node.restart()
        assert client.wait_connected(WAIT)
        # the call is gone with the crash: the node says so, and nothing was placed twice
        assert client.api(f"uuid_exists {call}") == "false"
        assert node.calls_to("2000") == 1


def test_job_wait_is_bounded_by_default_and_can_be_waited_again(node: FakeNode) -> None:
    node.set_outcome("4000", "answer", ring_seconds=0.5)
    node.set_outcome("4001", "unknown")
    with make_client(node.address, job_timeout=0.1) as client:
        assert client.wait_connected(WAIT)
        job = client.bgapi("originate sofia/gateway/gw/4000 &park()")
        with pytest.raises(CommandTimeout):
            job.wait()  # job_timeout
        assert job.wait(WAIT).startswith("+OK ")  # still delivered later
        assert client.bgapi("originate sofia/gateway/gw/4001 &park()").wait(WAIT) == "-ERR NO_ROUTE_DESTINATION\n"
        with pytest.raises(CommandFailed):
            client.bgapi("originate sofia/gateway/gw/4001 &park()").ok(WAIT)


def test_slow_event_handler_does_not_stall_replies_and_order_is_kept(node: FakeNode) -> None:
    seen: list[int] = []
    release = Signal()

    def slow(event: Event) -> None:
        if event.name == "CUSTOM":
            return
        release.wait(WAIT)  # blocks the dispatcher, not the reader
        seen.append(int(event["Event-Sequence"]))

    client = InboundClient(*node.address, "ClueCon", name="node", on_event=slow, command_timeout=WAIT)
    with client:
        assert client.wait_connected(WAIT)
        assert node.wait_until(lambda: client.events_received >= 5, WAIT)
        started = time.monotonic()
        assert client.api("echo quick") == "quick"
        assert time.monotonic() - started < 2.0
        release.set()
        assert node.wait_until(lambda: len(seen) >= 5, WAIT)
        assert seen == sorted(seen)


def test_json_events_and_filters_are_applied_and_redone_after_a_restart(node: FakeNode) -> None:
    recorder = Recorder()
    client = make_client(
        node.address,
        recorder,
        events=("HEARTBEAT", "CHANNEL_CREATE"),
        event_format="json",
        filters=[("Event-Name", "CHANNEL_CREATE")],
    )
    with client:
        assert client.wait_connected(WAIT)
        job = client.bgapi("originate sofia/gateway/gw/3000 &park()")
        assert job.wait(WAIT).startswith("+OK")  # BACKGROUND_JOB passes the filters: one is added for it
        assert recorder.wait_for(lambda: "CHANNEL_CREATE" in recorder.names())
        gevent.sleep(0.3)  # three heartbeat intervals
        assert "HEARTBEAT" not in recorder.names()
        assert all(event.format == "json" for event in recorder.events)
        first_core = node.core_uuid
        node.restart()
        assert recorder.wait_for(lambda: len(recorder.errors(ConnectionLost)) == 1)
        assert client.wait_connected(WAIT)
        assert client.bgapi("originate sofia/gateway/gw/3001 &park()").wait(WAIT).startswith("+OK")
        assert recorder.wait_for(lambda: sum(e.name == "CHANNEL_CREATE" for e in recorder.events) == 2)
        second = [e for e in recorder.events if e.name == "CHANNEL_CREATE"][1]
        assert second["Core-UUID"] == node.core_uuid != first_core
        # after the reconnect: auth, the subscription (BACKGROUND_JOB added for bgapi), the filters again
        assert node.sessions[0].commands[:4] == [
            "auth ClueCon",
            "event json BACKGROUND_JOB HEARTBEAT CHANNEL_CREATE",
            "filter Event-Name CHANNEL_CREATE",
            "filter Event-Name BACKGROUND_JOB",
        ]
        assert client.connects == 2


def test_frames_split_anywhere_by_the_node() -> None:
    import random

    rng = random.Random(3)

    def chunker(data: bytes) -> list[bytes]:
        if len(data) < 2:
            return [data]
        cuts = sorted(rng.sample(range(1, len(data)), min(5, len(data) - 1)))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    recorder = Recorder()
    node = FakeNode("chunky", heartbeat_interval=0.05, chunker=chunker)
    with node, make_client(node.address, recorder, events=("HEARTBEAT", "CHANNEL_CREATE")) as client:
        assert client.wait_connected(WAIT)
        jobs = [client.bgapi(f"originate sofia/gateway/gw/{i} &park()") for i in range(5)]
        assert all(job.wait(WAIT).startswith("+OK") for job in jobs)
        assert client.api("status").startswith("UP ")
        assert recorder.wait_for(lambda: recorder.names().count("HEARTBEAT") >= 5)
        assert recorder.names().count("CHANNEL_CREATE") == 5


def test_wrong_password_is_a_clear_error_and_retried(node: FakeNode) -> None:
    recorder = Recorder()
    client = InboundClient(*node.address, "wrong", name="node", on_state=recorder.on_state, backoff_min=0.05,
                           backoff_max=0.1)  # fmt: skip
    with client:
        assert not client.wait_connected(0.5)
        assert recorder.wait_for(lambda: len(recorder.errors(AuthenticationFailed)) >= 2)
        with pytest.raises(NotConnected):
            client.api("status")
    assert isinstance(client.last_error, AuthenticationFailed)  # the last real reason, kept after stop


def test_rude_rejection_is_reported_and_the_client_connects_once_allowed(node: FakeNode) -> None:
    node.deny_clients()
    recorder = Recorder()
    with make_client(node.address, recorder) as client:
        assert recorder.wait_for(lambda: len(recorder.errors(RudeRejection)) >= 1)
        assert "Access Denied" in str(recorder.errors(RudeRejection)[0])
        assert not client.connected
        node.deny_clients(False)
        assert client.wait_connected(WAIT)


def test_disconnect_notice_is_a_clear_error_then_reconnect(node: FakeNode) -> None:
    recorder = Recorder()
    with make_client(node.address, recorder) as client:
        assert client.wait_connected(WAIT)
        node.disconnect_clients()
        assert recorder.wait_for(lambda: len(recorder.errors(DisconnectNotice)) == 1)
        assert "being shut down" in str(recorder.errors(DisconnectNotice)[0])
        assert recorder.wait_for(lambda: client.connects == 2)


def test_nothing_listening_is_bounded() -> None:
    with FakeNode("gone") as node:
        address = node.address
    recorder = Recorder()
    client = InboundClient(*address, "ClueCon", name="gone", on_state=recorder.on_state, connect_timeout=0.5,
                           backoff_min=0.05, backoff_max=0.1)  # fmt: skip
    with client:
        started = time.monotonic()
        assert not client.wait_connected(0.5)
        with pytest.raises(NotConnected):
            client.api("status")
        assert time.monotonic() - started < 3.0
        assert recorder.wait_for(lambda: len(recorder.errors(ConnectionLost)) >= 2)


def test_command_timeout_leaves_the_connection_in_sync() -> None:
    def handler(conn: ServerConn, index: int) -> None:
        conn.login()
        conn.serve_setup()
        slow = conn.command()
        assert slow is not None
        quick = conn.command()
        assert quick is not None
        gevent.sleep(0.5)
        conn.send(switch.api_response("late"))  # the first reply, late: it belongs to the first command
        conn.send(switch.api_response("second"))
        conn.command(WAIT)

    with ScriptedServer(handler) as server, make_client(server.address) as client:
        assert client.wait_connected(WAIT)
        with pytest.raises(CommandTimeout):
            client.api("echo slow", timeout=0.1)
        assert client.api("echo quick", timeout=WAIT) == "second"
        assert client.connected


def test_a_write_that_times_out_is_a_lost_job_and_a_new_connection() -> None:
    stalled = Signal()

    def handler(conn: ServerConn, index: int) -> None:
        conn.login()
        conn.serve_setup()
        if index == 0:
            stalled.wait(WAIT)  # stops reading: the client's send buffer fills up
            return
        conn.serve_api()

    recorder = Recorder()
    with ScriptedServer(handler) as server, make_client(server.address, recorder, command_timeout=0.5) as client:
        assert client.wait_connected(WAIT)
        with pytest.raises(JobLost) as info:
            client.bgapi("echo " + "x" * 32_000_000)
        assert info.value.accepted is False
        stalled.set()
        assert recorder.wait_for(lambda: client.connects == 2)
        assert client.api("echo fine") == "fine"


def test_idle_timeout_reconnects_a_silent_connection() -> None:
    def handler(conn: ServerConn, index: int) -> None:
        conn.login()
        conn.serve_setup()
        conn.command(WAIT)  # then silence

    recorder = Recorder()
    with ScriptedServer(handler) as server, make_client(server.address, recorder, idle_timeout=0.3):
        assert recorder.wait_for(lambda: len(recorder.errors(ConnectionLost)) >= 1)
        assert "nothing received" in str(recorder.errors(ConnectionLost)[0])
        assert recorder.wait_for(lambda: len(server.connections) >= 2)


# -- the default password (issue 16) ------------------------------------------------------------


@pytest.mark.parametrize("host", ["10.0.0.5", "fs1.example.net", "192.0.2.7", "::ffff:10.0.0.5"])
def test_default_password_is_refused_for_a_remote_node(host: str) -> None:
    with pytest.raises(DefaultPasswordRefused) as info:
        InboundClient(host, 8021, "ClueCon")
    assert "allow_default_password" in str(info.value)
    InboundClient(host, 8021, "ClueCon", allow_default_password=True)  # explicit consent
    InboundClient(host, 8021, "a-real-secret")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_default_password_is_accepted_on_loopback(host: str) -> None:
    InboundClient(host, 8021, "ClueCon")


# -- replayed real FreeSWITCH bytes ----------------------------------------------------------------


def test_replayed_capture_15_setup_filters_bgapi_and_background_job() -> None:
    recorder = Recorder()
    with ScriptedServer(replay("15_inbound_filters_log_sendevent_parsing", "inbound")) as server:
        client = make_client(
            server.address,
            recorder,
            events=("CHANNEL_CREATE", "CHANNEL_ANSWER", "HEARTBEAT", "BACKGROUND_JOB"),
            filters=[("Event-Name", "CHANNEL_CREATE"), ("Event-Name", "BACKGROUND_JOB")],
        )
        with client:
            assert client.wait_connected(WAIT)
            job = client.bgapi("originate loopback/parkit/esltest &park", "8424337d-e302-4c69-b772-388a4e0e3892")
            assert job.wait_accepted(WAIT) == "+OK Job-UUID: 8424337d-e302-4c69-b772-388a4e0e3892"
            assert client.api("hupall MANAGER_REQUEST") == "+OK hangup all channels with cause MANAGER_REQUEST\n"
            assert job.wait(WAIT) == "-ERR MANAGER_REQUEST\n"
            assert recorder.wait_for(lambda: "BACKGROUND_JOB" in recorder.names())
        sent = [command.line for command in server.connections[0].received]
        captured = [data for direction, data in capture_steps("15_inbound_filters_log_sendevent_parsing", "inbound")
                    if direction == "out"]  # fmt: skip
        # the client's setup is byte for byte what the capture's client sent
        assert [f"{line}\n\n".encode() for line in sent[:4]] == captured[:4]
    creates = [e for e in recorder.events if e.name == "CHANNEL_CREATE"]
    assert [e["Channel-Name"] for e in creates] == ["loopback/parkit-a", "loopback/parkit-b"]
    assert recorder.names() == ["CHANNEL_CREATE", "CHANNEL_CREATE", "BACKGROUND_JOB"]


def test_replayed_capture_14_real_sized_channel_events() -> None:
    recorder = Recorder()
    events = ("BACKGROUND_JOB", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_PARK", "CHANNEL_UNPARK")
    with ScriptedServer(replay("14_inbound_myevents_uuid_monitor", "inbound")) as server:
        with make_client(server.address, recorder, events=events) as client:
            assert client.wait_connected(WAIT)
            job = client.bgapi("originate {originate_timeout=20}loopback/async/esltest &park",
                               "9daca20e-d84e-40a7-97cf-11b462a01f8e")  # fmt: skip
            assert job.wait(WAIT).startswith("+OK ")
            call = job.result.split()[1]
            assert client.api(f"uuid_getvar {call} after_socket") == "reached"
            assert client.api(f"uuid_getvar {call} current_application") == "playback"
            assert recorder.wait_for(lambda: len(recorder.events) >= 10)
        assert server.connections[0].received[1].line == "event plain " + " ".join(events)
    assert all(event.name in events for event in recorder.events)
    assert sum(event.name == "CHANNEL_EXECUTE" for event in recorder.events) >= 5


def test_replayed_wrong_password_from_capture_08() -> None:
    recorder = Recorder()
    with ScriptedServer(replay("08_errors", "inbound-badpw", hold=0)) as server:
        client = InboundClient(*server.address, "WrongPassword", name="node", on_state=recorder.on_state,
                               backoff_min=0.05, backoff_max=0.1)  # fmt: skip
        with client:
            assert recorder.wait_for(lambda: len(recorder.errors(AuthenticationFailed)) >= 1)
            assert "-ERR invalid" in str(recorder.errors(AuthenticationFailed)[0])


# -- hostile input: each is a clear error and a reconnect, never a hang ---------------------------


def _hostile(first_connection) -> ScriptedServer:
    """First connection misbehaves as ``first_connection(conn)`` says; later ones behave."""

    def handler(conn: ServerConn, index: int) -> None:
        if index == 0:
            first_connection(conn)
            return
        conn.login()
        conn.serve_setup()
        conn.serve_api()

    return ScriptedServer(handler)


def _survives(server: ScriptedServer, error: type[BaseException], pending_command: bool = False) -> Recorder:
    recorder = Recorder()
    with server, make_client(server.address, recorder) as client:
        if pending_command:
            assert recorder.wait_for(lambda: client.connected or bool(recorder.errors(error)))
            if client.connected:
                with pytest.raises(ConnectionLost):
                    client.api("echo never answered")
        assert recorder.wait_for(lambda: len(recorder.errors(error)) >= 1), recorder.states
        assert client.wait_connected(WAIT)
        assert client.api("echo back in business") == "back in business"
    return recorder


def test_hostile_server_closes_mid_frame() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.login()
        conn.serve_setup()
        conn.command()  # the api the test sends: answered with half a frame, then close
        conn.send(b"Content-Type: api/response\nContent-Length: 100\n\nonly part of the bo")

    recorder = _survives(_hostile(misbehave), ProtocolViolation, pending_command=True)
    assert "closed inside" in str(recorder.errors(ProtocolViolation)[0])


def test_hostile_ten_megabyte_event() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.login()
        conn.serve_setup()
        payload = switch.serialize_event([("Event-Name", "CUSTOM"), ("Event-Subclass", "x::y")], b"x" * 10_000_000)
        conn.send(f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload)
        conn.command(WAIT)

    recorder = _survives(_hostile(misbehave), FrameTooLarge)
    assert "10000" in str(recorder.errors(FrameTooLarge)[0])


def test_hostile_garbage_bytes() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.login()
        conn.serve_setup()
        conn.send(bytes(range(256)) * 4 + b"\n\n\x00\xff garbage \xfe\n\n")
        conn.command(WAIT)

    _survives(_hostile(misbehave), ProtocolViolation)


def test_hostile_garbage_content_length() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.login()
        conn.serve_setup()
        conn.send(b"Content-Type: text/event-plain\nContent-Length: 99999999999999999999\n\n")
        conn.command(WAIT)

    _survives(_hostile(misbehave), ProtocolViolation)


def test_hostile_endless_header_block() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.login()
        conn.serve_setup()
        conn.send(b"Content-Type: text/event-plain\n" + b"X-Junk: " + b"a" * (2 * 1024 * 1024))  # no blank line
        conn.command(WAIT)

    recorder = _survives(_hostile(misbehave), ProtocolViolation)
    assert "header block exceeds" in str(recorder.errors(ProtocolViolation)[0])


def test_hostile_rude_rejection() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.send(switch.rude_rejection())

    _survives(_hostile(misbehave), RudeRejection)


def test_hostile_silence_instead_of_auth_request() -> None:
    def misbehave(conn: ServerConn) -> None:
        conn.command(WAIT)

    recorder = Recorder()
    server = _hostile(misbehave)
    with server, make_client(server.address, recorder, connect_timeout=0.3) as client:
        assert recorder.wait_for(lambda: len(recorder.errors(ProtocolViolation)) >= 1)
        assert "auth/request" in str(recorder.errors(ProtocolViolation)[0])
        assert client.wait_connected(WAIT)
