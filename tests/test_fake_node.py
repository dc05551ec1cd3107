"""The fake FreeSWITCH node (esl_app.testing.fake_node) speaks the inbound protocol as 1.10.12 does.

These tests talk to it with raw sockets and the sans-IO parser, so they check the node's bytes, not
the inbound client's behaviour.
"""

from __future__ import annotations

import re
import time

import gevent
import gevent.socket
import pytest

from esl_app.protocol import Frame, FrameKind, Parser
from esl_app.testing.fake_node import FakeNode, Outcome

PASSWORD = "ClueCon"


class RawClient:
    """A minimal inbound client: bytes out, frames in, every wait bounded."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = gevent.socket.create_connection(address, timeout=5)
        self.parser = Parser()
        self.frames: list[Frame] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_frame(self, timeout: float = 5.0, *, kinds: tuple[FrameKind, ...] | None = None) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            for index, frame in enumerate(self.frames):
                if kinds is None or frame.kind in kinds:
                    return self.frames.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                raise AssertionError(f"no frame of kind {kinds} within {timeout} s (eof={self.eof})")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.eof = True
                continue
            self.frames.extend(self.parser.feed(data))

    def reply(self, timeout: float = 5.0) -> Frame:
        return self.next_frame(timeout, kinds=(FrameKind.REPLY, FrameKind.API))

    def event(self, name: str, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.01, deadline - time.monotonic())
            frame = self.next_frame(remaining, kinds=(FrameKind.EVENT_PLAIN, FrameKind.EVENT_JSON))
            if frame.event().name == name:
                return frame

    def command(self, line: str, *headers: tuple[str, str]) -> Frame:
        extra = "".join(f"{h}: {v}\n" for h, v in headers)
        self.send(f"{line}\n{extra}\n".encode())
        return self.reply()

    def login(self, events: str = "") -> None:
        assert self.next_frame().kind is FrameKind.AUTH
        assert self.command(f"auth {PASSWORD}").reply_text == "+OK accepted"
        if events:
            assert self.command(f"event plain {events}").reply_text == "+OK event listener enabled plain"

    def wait_eof(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.eof = True
            else:
                self.frames.extend(self.parser.feed(data))
        return self.eof

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def node():
    with FakeNode("fs1", heartbeat_interval=0.2) as node:
        yield node


def test_auth_request_then_accepted(node: FakeNode) -> None:
    client = RawClient(node.address)
    first = client.next_frame()
    assert first.kind is FrameKind.AUTH
    assert first.to_bytes() == b"Content-Type: auth/request\n\n"
    client.send(b"auth ClueCon\n\n")
    assert client.reply().to_bytes() == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"


def test_wrong_password_gets_the_real_bytes_then_eof(node: FakeNode) -> None:
    sock = gevent.socket.create_connection(node.address, timeout=5)
    received = b""
    sock.sendall(b"auth WrongPassword\n\n")
    while True:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    # transcript 08 (spec E5): the auth request, then 178 bytes, then EOF
    assert received == (
        b"Content-Type: auth/request\n\n"
        b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
        b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    )


def test_command_before_auth_is_not_found_and_the_socket_stays_open(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.next_frame()
    assert client.command("api status").reply_text == "-ERR command not found"
    assert client.command("auth ClueCon").reply_text == "+OK accepted"


def test_api_status_has_the_real_format(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login()
    body = client.command("api status").reply_text
    lines = body.split("\n")
    assert re.fullmatch(
        r"UP 0 years, 0 days, 0 hours, 0 minutes, \d+ seconds?, \d+ milliseconds?, \d+ microseconds?", lines[0]
    )
    assert lines[1] == "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready"
    assert lines[2] == "0 session(s) since startup"
    assert lines[3] == "0 session(s) - peak 0, last 5min 0 "
    assert lines[5] == "1000 session(s) max"
    assert lines[6] == "min idle cpu 0.00/99.00"
    assert body.endswith("Current Stack Size/Max 240K/8192K\n")


def test_heartbeat_has_the_captured_header_set(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login("HEARTBEAT")
    event = client.event("HEARTBEAT").event()
    names = [name for name, _ in event.headers.items()]
    # the order of capture 07
    assert names == [
        "Event-Name", "Core-UUID", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname", "FreeSWITCH-IPv4",
        "FreeSWITCH-IPv6", "Event-Date-Local", "Event-Date-GMT", "Event-Date-Timestamp", "Event-Calling-File",
        "Event-Calling-Function", "Event-Calling-Line-Number", "Event-Sequence", "Event-Info", "Up-Time",
        "FreeSWITCH-Version", "Uptime-msec", "Session-Count", "Max-Sessions", "Session-Per-Sec",
        "Session-Per-Sec-Last", "Session-Per-Sec-Max", "Session-Per-Sec-FiveMin", "Session-Since-Startup",
        "Session-Peak-Max", "Session-Peak-FiveMin", "Idle-CPU",
    ]  # fmt: skip
    assert event["Core-UUID"] == node.core_uuid
    assert event["FreeSWITCH-Switchname"] == "fs1"
    assert event["Event-Info"] == "System Ready"
    assert event["Session-Per-Sec"] == "30"
    assert re.fullmatch(r"\d+\.\d{6}", event["Idle-CPU"])


def test_bgapi_originate_uses_the_clients_job_uuid_and_origination_uuid(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login("BACKGROUND_JOB CHANNEL_CREATE CHANNEL_ANSWER")
    reply = client.command(
        "bgapi originate {origination_uuid=11111111-2222-4333-8444-555555555555}sofia/gateway/gw/15551230001 &park()",
        ("Job-UUID", "aaaaaaaa-bbbb-4ccc-8ddd-000000000001"),
    )
    assert reply.reply_text == "+OK Job-UUID: aaaaaaaa-bbbb-4ccc-8ddd-000000000001"
    assert reply.headers["Job-UUID"] == "aaaaaaaa-bbbb-4ccc-8ddd-000000000001"
    create = client.event("CHANNEL_CREATE").event()
    assert create["Unique-ID"] == "11111111-2222-4333-8444-555555555555"
    assert create["Call-Direction"] == "outbound"
    job = client.event("BACKGROUND_JOB").event()
    assert job["Job-UUID"] == "aaaaaaaa-bbbb-4ccc-8ddd-000000000001"
    assert job["Job-Command"] == "originate"
    assert job.body == "+OK 11111111-2222-4333-8444-555555555555\n"
    assert node.calls_to("15551230001") == 1
    assert client.command("api uuid_exists 11111111-2222-4333-8444-555555555555").reply_text == "true"
    assert client.command("api show calls count").reply_text == "\n1 total.\n"


@pytest.mark.parametrize(
    ("outcome", "result"),
    [("busy", "-ERR USER_BUSY\n"), ("no_answer", "-ERR NO_ANSWER\n"), ("unroutable", "-ERR NO_ROUTE_DESTINATION\n")],
)
def test_originate_outcomes(node: FakeNode, outcome: str, result: str) -> None:
    node.set_outcome("2000", outcome, ring_seconds=0.05)
    client = RawClient(node.address)
    client.login("CHANNEL_HANGUP_COMPLETE")
    assert client.command("api originate sofia/gateway/gw/2000 &park()").reply_text == result
    hangup = client.event("CHANNEL_HANGUP_COMPLETE").event()
    assert hangup["Hangup-Cause"] == result[5:-1]
    assert node.calls_to("2000") == 1
    assert node.session_count == 0


def test_crash_resets_sockets_and_restart_changes_core_uuid(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login("HEARTBEAT")
    first = client.event("HEARTBEAT").event()
    node.crash()
    assert client.wait_eof(2.0)
    with pytest.raises(OSError):
        gevent.socket.create_connection(node.address, timeout=1)
    node.restart()
    again = RawClient(node.address)
    again.login("HEARTBEAT")
    second = again.event("HEARTBEAT").event()
    assert second["Core-UUID"] != first["Core-UUID"]
    assert int(second["Uptime-msec"]) < int(first["Uptime-msec"]) + 1000


def test_global_getvar_core_uuid_follows_restarts(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login()
    assert client.command("api global_getvar core_uuid").reply_text == node.core_uuid
    assert f"core_uuid={node.core_uuid}\n" in client.command("api global_getvar").reply_text
    before = node.core_uuid
    node.restart()
    again = RawClient(node.address)
    again.login()
    assert again.command("api global_getvar core_uuid").reply_text == node.core_uuid != before


def test_outcome_spec_is_checked() -> None:
    with pytest.raises(ValueError):
        FakeNode().set_outcome("1", "sometimes")
    node = FakeNode()
    node.set_outcome("1", Outcome(kind="fail", cause="CALL_REJECTED"))
    assert node.outcomes["1"].failure_cause == "CALL_REJECTED"


def test_several_nodes_in_one_process() -> None:
    with FakeNode("a", heartbeat_interval=0.1) as a, FakeNode("b", heartbeat_interval=0.1) as b:
        clients = [RawClient(a.address), RawClient(b.address)]
        for client in clients:
            client.login("HEARTBEAT")
        names = [client.event("HEARTBEAT").event()["FreeSWITCH-Switchname"] for client in clients]
        assert names == ["a", "b"]
        assert a.core_uuid != b.core_uuid
    gevent.sleep(0)


# -- calls, the dialplan, and the per-call fake ----------------------------------------------------


def _served_app():
    from esl_app import App, Call
    from esl_app.session import SessionSettings
    from esl_app.transport import OutboundServer

    app = App("node-test", SessionSettings(hangup_wait=0.2))
    flows: list[str] = []

    @app.route("7000")
    def flow(call: Call) -> None:
        flows.append(call.uuid)
        call.answer()
        call.playback("hold.wav")

    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    return server, flows


def test_originate_socket_connects_the_call_to_a_project_server(node: FakeNode) -> None:
    server, flows = _served_app()
    try:
        client = RawClient(node.address)
        client.login("CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
        call_uuid = "22222222-3333-4444-8555-666666666666"
        host, port = server.address
        reply = client.command(
            f"api originate {{origination_uuid={call_uuid}}}sofia/gateway/gw/7000 '&socket({host}:{port} async full)'"
        )
        assert reply.reply_text == f"+OK {call_uuid}\n"
        assert client.event("CHANNEL_ANSWER").event().unique_id == call_uuid
        # the flow answers, plays and hangs up: the node's leg ends with the app's hangup
        done = client.event("CHANNEL_HANGUP_COMPLETE", timeout=10).event()
        assert done.unique_id == call_uuid
        assert done["Hangup-Cause"] == "NORMAL_CLEARING"
        assert flows == [call_uuid]
        call = node.call(call_uuid)
        assert call is not None and call.socket_records[0].verbs == ["answer", "playback"]
        assert node.session_count == 0
    finally:
        server.stop(deadline=2)


def test_a_socket_that_returns_goes_on_to_the_next_action(node: FakeNode) -> None:
    # an application that closes the socket with the call up (capture 05f): the dialplan continues
    from gevent.server import StreamServer

    closer = StreamServer(("127.0.0.1", 0), lambda sock, address: sock.close())
    closer.start()
    with FakeNode("gone") as down:
        down_address = down.address  # nothing listens there any more
    try:
        node.set_dialplan(
            "8000",
            [
                ("socket", f"127.0.0.1:{closer.server_port} async full"),
                ("set", "after_first=reached"),
                ("socket", f"127.0.0.1:{down_address[1]} async full"),  # target down (05e): next action
                "set after_second=reached",
                ("hangup", "SERVICE_UNAVAILABLE"),
            ],
        )
        client = RawClient(node.address)
        client.login("CHANNEL_HANGUP_COMPLETE")
        reply = client.command("api originate sofia/gateway/gw/8000 8000 XML default")
        assert reply.reply_text.startswith("+OK ")
        done = client.event("CHANNEL_HANGUP_COMPLETE", timeout=10).event()
        assert done["Hangup-Cause"] == "SERVICE_UNAVAILABLE"
        assert done.variable("after_first") == "reached"
        assert done.variable("after_second") == "reached"
        call = node.call(reply.reply_text.split()[1])
        assert call is not None
        assert [a.app for a in call.executed] == ["socket", "set", "socket", "set", "hangup"]
        assert call.socket_records[0].continued_in_dialplan
    finally:
        closer.stop()


def test_socket_as_the_last_action_ends_with_normal_clearing(node: FakeNode) -> None:
    from gevent.server import StreamServer

    closer = StreamServer(("127.0.0.1", 0), lambda sock, address: sock.close())
    closer.start()
    try:
        client = RawClient(node.address)
        client.login("CHANNEL_HANGUP_COMPLETE")
        target = f"'&socket(127.0.0.1:{closer.server_port} async full)'"
        reply = client.command(f"api originate sofia/gateway/gw/9000 {target}")
        assert reply.reply_text.startswith("+OK ")
        assert client.event("CHANNEL_HANGUP_COMPLETE", timeout=10).event()["Hangup-Cause"] == "NORMAL_CLEARING"
    finally:
        closer.stop()


def test_channel_events_of_an_answered_call_then_uuid_kill(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login("CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE")
    reply = client.command("api originate {origination_uuid=k1}sofia/gateway/gw/1234 &park()")
    assert reply.reply_text == "+OK k1\n"
    assert client.command("api uuid_kill k1 USER_BUSY").reply_text == "+OK\n"
    names = [client.event(name).event() for name in
             ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")]  # fmt: skip
    assert all(event.unique_id == "k1" for event in names)
    assert names[3].headers.get_all("Hangup-Cause") == ["USER_BUSY", "USER_BUSY"]  # twice, as captured
    assert client.command("api uuid_exists k1").reply_text == "false"
    assert client.command("api uuid_kill k1").reply_text == "-ERR No such channel!\n"


def test_unquoted_socket_argument_is_cut_at_the_spaces_as_freeswitch_does() -> None:
    from esl_app.testing.node_calls import parse_originate

    request = parse_originate("sofia/gateway/gw/1 &socket(127.0.0.1:8085 async full)")
    assert not isinstance(request, str)
    assert (request.app.app, request.app.data) == ("socket", "127.0.0.1:8085")  # type: ignore[union-attr]
    assert request.context == "full)"
    quoted = parse_originate("{a=1,b='x y'}sofia/gateway/gw/1 '&socket(127.0.0.1:8085 async full)' XML ctx Name 123 15")
    assert not isinstance(quoted, str)
    assert quoted.app is not None and quoted.app.data == "127.0.0.1:8085 async full"
    assert quoted.variables == {"a": "1", "b": "x y"}
    assert (quoted.context, quoted.caller_id_name, quoted.caller_id_number) == ("ctx", "Name", "123")
    assert quoted.timeout == 15.0


def test_originate_arguments_are_split_and_unescaped_as_switch_separate_string_does() -> None:
    from esl_app.testing.node_calls import parse_originate, separate_string

    assert separate_string("a b  'c d' e", " ") == ["a", "b", "c d", "e"]
    assert separate_string("a,b\\,c,'x,y'", ",") == ["a", "b,c", "x,y"]
    assert separate_string("name=va=lue", "=", 2) == ["name", "va=lue"]
    assert separate_string("^^:a:b,c", ",") == ["a", "b,c"]
    # three passes: the api line on spaces, the {} block on commas, each item on "=" (each unescapes)
    line = (
        "{origination_caller_id_name=Anna\\\\sSmith,tag=a\\\\,b,origination_uuid=u1}sofia/gateway/gw/100"
        " '&socket(127.0.0.1:8085 async full)'"
    )
    request = parse_originate(line)
    assert not isinstance(request, str)
    assert request.variables == {"origination_caller_id_name": "Anna Smith", "tag": "a,b", "origination_uuid": "u1"}
    assert request.caller_id_name == "Anna Smith"


def test_originate_errors_as_the_real_switch_words_them(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login()
    assert client.command("api originate").reply_text.startswith("-USAGE: <call url> <exten>|&<application_name>")
    assert client.command("api originate foo/bar &park()").reply_text == "-ERR CHAN_NOT_IMPLEMENTED\n"
    assert client.command("api originate {origination_uuid=d1}sofia/gateway/gw/1 &park()").reply_text == "+OK d1\n"
    # the same UUID again: switch_core_session_request refuses ("Duplicate UUID!"), sofia's cause
    assert client.command("api originate {origination_uuid=d1}sofia/gateway/gw/1 &park()").reply_text == (
        "-ERR DESTINATION_OUT_OF_ORDER\n"
    )
    assert node.calls_to("1") == 1


def test_max_sessions_and_load_show_in_heartbeats_and_refuse_originates(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login("HEARTBEAT")
    node.set_max_sessions(3)
    node.set_load(sessions=2, idle_cpu=12.5)
    assert client.command("api originate sofia/gateway/gw/1 &park()").reply_text.startswith("+OK ")
    assert client.command("api originate sofia/gateway/gw/1 &park()").reply_text == "-ERR DESTINATION_OUT_OF_ORDER\n"
    beat = client.event("HEARTBEAT").event()
    assert (beat["Session-Count"], beat["Max-Sessions"], beat["Idle-CPU"]) == ("3", "3", "12.500000")
    assert client.command("api fsctl max_sessions 10").reply_text == "+OK max sessions: 10\n"
    assert client.command("api originate sofia/gateway/gw/1 &park()").reply_text.startswith("+OK ")
    assert node.calls_to("1") == 2


def test_sessions_per_second_budget(node: FakeNode) -> None:
    node.sessions_per_second = 2
    client = RawClient(node.address)
    client.login()
    replies = [client.command("api originate sofia/gateway/gw/5 &hangup()").reply_text for _ in range(3)]
    # a second boundary may fall between them; at most two of three can be refused in one second
    assert replies.count("-ERR DESTINATION_OUT_OF_ORDER\n") <= 1
    assert all(r.startswith("+OK") or r == "-ERR DESTINATION_OUT_OF_ORDER\n" for r in replies)


def test_pause_inbound_is_invisible_except_to_pause_check(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login("HEARTBEAT")
    assert client.command("api fsctl pause inbound").reply_text == "+OK\n"
    assert "is ready\n" in client.command("api status").reply_text
    assert client.event("HEARTBEAT").event()["Event-Info"] == "System Ready"
    assert client.command("api fsctl pause_check inbound").reply_text == "true"
    assert client.command("api fsctl pause_check outbound").reply_text == "false"
    assert client.command("api fsctl pause_check").reply_text == "false"
    # outbound calls still go out; a loopback call waits for its timeout (its b-leg is inbound)
    assert client.command("api originate sofia/gateway/gw/1 &park()").reply_text.startswith("+OK")
    started = time.monotonic()
    assert client.command("api originate {originate_timeout=1}loopback/1/default &park()").reply_text == (
        "-ERR NO_ANSWER\n"
    )
    assert time.monotonic() - started >= 0.9
    assert client.command("api fsctl resume inbound").reply_text == "+OK\n"
    assert client.command("api fsctl pause_check inbound").reply_text == "false"


def test_full_pause_says_not_ready_and_refuses_originates(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login()
    assert client.command("api fsctl pause").reply_text == "+OK\n"
    assert "is not ready\n" in client.command("api status").reply_text
    assert client.command("api fsctl pause_check").reply_text == "true"
    assert client.command("api originate sofia/gateway/gw/1 &park()").reply_text == "-ERR DESTINATION_OUT_OF_ORDER\n"
    assert node.calls_to("1") == 0
    assert client.command("api fsctl resume").reply_text == "+OK\n"
    assert "is ready\n" in client.command("api status").reply_text


def test_far_end_hangs_up_after_a_while(node: FakeNode) -> None:
    node.set_outcome("77", "answer", hangup_after=0.1)
    client = RawClient(node.address)
    client.login("CHANNEL_HANGUP_COMPLETE")
    assert client.command("api originate sofia/gateway/gw/77 &park()").reply_text.startswith("+OK")
    assert client.event("CHANNEL_HANGUP_COMPLETE").event()["Hangup-Cause"] == "NORMAL_CLEARING"


def test_uuid_kill_while_ringing_fails_the_originate(node: FakeNode) -> None:
    node.set_outcome("88", "answer", ring_seconds=30)
    client = RawClient(node.address)
    client.login("BACKGROUND_JOB")
    client.command("bgapi originate {origination_uuid=r1}sofia/gateway/gw/88 &park()", ("Job-UUID", "job-r1"))
    assert node.wait_until(lambda: node.calls_to("88") == 1)
    other = RawClient(node.address)
    other.login()
    assert other.command("api uuid_kill r1 ORIGINATOR_CANCEL").reply_text == "+OK\n"
    job = client.event("BACKGROUND_JOB").event()
    assert (job["Job-UUID"], job.body) == ("job-r1", "-ERR ORIGINATOR_CANCEL\n")


def test_filters_and_json_format(node: FakeNode) -> None:
    client = RawClient(node.address)
    client.login()
    assert client.command("event json HEARTBEAT CHANNEL_CREATE").reply_text == "+OK event listener enabled json"
    assert client.command("filter Event-Name CHANNEL_CREATE").reply_text == (
        "+OK filter added. [Event-Name]=[CHANNEL_CREATE]"
    )
    client.command("api originate sofia/gateway/gw/1 &park()")
    frame = client.next_frame(kinds=(FrameKind.EVENT_JSON,))
    assert frame.event().name == "CHANNEL_CREATE"
    gevent.sleep(0.3)
    client.command("api echo flush")
    assert not [f for f in client.frames if f.kind is FrameKind.EVENT_JSON]  # no HEARTBEAT passed the filter
    assert client.command("filter delete all").reply_text == "+OK filter deleted. [all][]"
    assert client.event("HEARTBEAT").kind is FrameKind.EVENT_JSON


def test_rude_rejection_and_exit(node: FakeNode) -> None:
    node.deny_clients()
    sock = gevent.socket.create_connection(node.address, timeout=5)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    assert data == b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
    node.deny_clients(False)
    client = RawClient(node.address)
    client.login()
    assert client.command("exit").reply_text == "+OK bye"
    assert client.next_frame().kind is FrameKind.DISCONNECT
    assert client.wait_eof()


def test_random_write_chunks_keep_the_stream_intact() -> None:
    import random

    rng = random.Random(7)

    def chunker(data: bytes) -> list[bytes]:
        cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1))) if len(data) > 1 else []
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    with FakeNode("chunky", heartbeat_interval=0.05, chunker=chunker) as node:
        client = RawClient(node.address)
        client.login("HEARTBEAT")
        beats = [client.event("HEARTBEAT").event() for _ in range(5)]
        assert all(b["FreeSWITCH-Switchname"] == "chunky" for b in beats)
        assert client.command("api status").reply_text.startswith("UP ")


def test_crash_during_a_blocking_api_originate_places_nothing_more(node: FakeNode) -> None:
    server, flows = _served_app()
    try:
        node.set_outcome("7000", "answer", ring_seconds=0.3)
        client = RawClient(node.address)
        client.login()
        host, port = server.address
        client.send(f"api originate sofia/gateway/gw/7000 '&socket({host}:{port} async full)'\n\n".encode())
        assert node.wait_until(lambda: node.calls_to("7000") == 1)
        node.crash()
        assert client.wait_eof()
        gevent.sleep(0.6)  # past the ring time: the dead node must not answer nor connect the call
        assert flows == []
        assert server.accepted == 0
    finally:
        server.stop(deadline=2)
