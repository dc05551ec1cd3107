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
