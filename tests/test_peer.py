"""The fake FreeSWITCH peer, driven by a minimal raw client (codec only) in memory and over TCP.

Shapes are compared with the 1.10.12 captures in ``fixtures/transcripts``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import deque
from pathlib import Path

import gevent
import gevent.event
import gevent.server
import gevent.socket
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esl_app.protocol import Expand, Frame, FrameKind, Parser, commands
from esl_app.testing.peer import CallRecord, CallScript, FakeFreeSWITCH, connect_tcp
from esl_app.testing.pipe import memory_socket_pair, random_chunker

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HANGUP_SEQUENCE = [
    "CHANNEL_HANGUP",
    "CHANNEL_UNPARK",
    "CHANNEL_EXECUTE_COMPLETE(socket)",
    "CHANNEL_STATE(CS_HANGUP)",
    "CHANNEL_STATE(CS_REPORTING)",
    "CHANNEL_HANGUP_COMPLETE",
]


# ---------------------------------------------------------------------------------------------
# A minimal raw client: Parser + commands over a socket-like object


class RawClient:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.parser = Parser()
        self.buffer: deque[Frame] = deque()
        self.eof = False
        self.events: list[Frame] = []  # events skipped by reply()

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.sock.sendall(chunk)

    def next(self, timeout: float = 2.0) -> Frame | None:
        """The next frame, or None at EOF; TimeoutError if nothing comes."""
        while not self.buffer:
            if self.eof:
                return None
            with gevent.Timeout(timeout, TimeoutError(f"no frame within {timeout} s")):
                data = self.sock.recv(65536)
            if not data:
                self.eof = True
                self.parser.eof()
                return None
            self.buffer.extend(self.parser.feed(data))
        return self.buffer.popleft()

    def quiet(self, seconds: float = 0.05) -> bool:
        try:
            frame = self.next(seconds)
        except TimeoutError:
            return True
        if frame is not None:
            self.buffer.appendleft(frame)
        return False

    def reply(self, timeout: float = 2.0) -> Frame:
        while True:
            frame = self.next(timeout)
            assert frame is not None, "EOF while waiting for a reply"
            if frame.kind in (FrameKind.REPLY, FrameKind.API):
                return frame
            self.events.append(frame)

    def command(self, data: bytes) -> Frame:
        self.send(data)
        return self.reply()

    def rest(self, timeout: float = 3.0) -> list[Frame]:
        frames = []
        while (frame := self.next(timeout)) is not None:
            frames.append(frame)
        return frames

    def labels_until_eof(self, timeout: float = 3.0) -> list[str]:
        return [label(f) for f in self.rest(timeout)] + ["EOF"]


def label(frame: Frame | None) -> str:
    if frame is None:
        return "EOF"
    if frame.is_connect_reply:
        return "connect-reply"
    if frame.is_event:
        event = frame.event()
        if event.name == "CHANNEL_STATE":
            return f"CHANNEL_STATE({event['Channel-State']})"
        if event.name.startswith("CHANNEL_EXECUTE"):
            return f"{event.name}({event['Application']})"
        if event.name == "DTMF":
            return f"DTMF({event['DTMF-Digit']})"
        return event.name
    if frame.is_linger_notice:
        return "linger-notice"
    if frame.is_final_notice:
        return "final-notice"
    if frame.kind is FrameKind.API:
        return f"api:{frame.body.decode()}"
    return f"reply:{frame.reply_text}"


def start(script: CallScript | None = None, **options) -> tuple[FakeFreeSWITCH, RawClient, gevent.Greenlet]:
    peer_end, app_end = memory_socket_pair("test")
    peer = FakeFreeSWITCH(script or CallScript(), peer_end, **options)
    return peer, RawClient(app_end), gevent.spawn(peer.run)


def finish(greenlet: gevent.Greenlet, timeout: float = 3.0) -> CallRecord:
    greenlet.join(timeout)
    assert greenlet.dead, "the peer did not finish"
    assert greenlet.successful(), greenlet.exception
    return greenlet.value


def connected(script: CallScript | None = None, **options) -> tuple[FakeFreeSWITCH, RawClient, gevent.Greenlet]:
    """connect + myevents done; CHANNEL_PARK (async) consumed."""
    peer, client, greenlet = start(script, **options)
    assert client.command(commands.CONNECT).is_connect_reply
    assert client.command(commands.MYEVENTS).reply_text == "+OK Events Enabled"
    if peer.async_mode:
        assert label(client.next()) == "CHANNEL_PARK"
    return peer, client, greenlet


def events_until(client: RawClient, name: str, timeout: float = 2.0) -> list[str]:
    """Labels of frames up to and including the first whose label starts with ``name``."""
    out = []
    while True:
        frame = client.next(timeout)
        out.append(label(frame))
        if frame is None or out[-1].startswith(name):
            return out


def capture_frames(name: str, connection: str) -> list[Frame]:
    """Frames FreeSWITCH wrote on one connection of a capture, parsed with the project's Parser."""
    parser = Parser()
    frames: list[Frame] = []
    for line in (TRANSCRIPTS / f"{name}.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("conn") == connection and record.get("dir") == "FS->APP":
            frames += parser.feed(record["bytes_latin1"].encode("latin-1"))
    return frames


# ---------------------------------------------------------------------------------------------
# Handshake


def test_silent_until_connect_then_channel_data_block() -> None:
    script = CallScript(
        destination="5000",
        caller_id_number="2002",
        caller_id_name="Jöhn Smith",
        context="sales",
        uuid="11111111-2222-4333-8444-555555555555",
        variables={"sip_h_X-Tenant": "acme"},
    )
    _peer, client, greenlet = start(script)
    assert client.quiet(0.05), "FreeSWITCH says nothing before the first command"
    client.send(commands.CONNECT)
    raw = b""
    while b"\n\n" not in raw:
        raw += client.sock.recv(65536)
    assert raw.startswith(b"Event-Name: CHANNEL_DATA\n")
    assert raw.endswith(b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n")
    assert b"Content-Length" not in raw and b"\r" not in raw
    assert b"Caller-Caller-ID-Name: J%C3%B6hn%20Smith\n" in raw
    (reply,) = Parser().feed(raw)
    h = reply.headers
    assert reply.is_connect_reply
    assert h["Unique-ID"] == h["Caller-Unique-ID"] == h["variable_uuid"] == h["variable_call_uuid"] == script.uuid
    assert h["Caller-Destination-Number"] == h["Channel-Destination-Number"] == "5000"
    assert h["Caller-Caller-ID-Number"] == "2002" and h["Caller-Caller-ID-Name"] == "Jöhn Smith"
    assert h["Caller-Context"] == "sales"
    assert h["Channel-State"] == "CS_EXECUTE" and h["Channel-Call-State"] == "RINGING"
    assert h["Answer-State"] == "ringing" and h["Call-Direction"] == "inbound"
    assert h["variable_sip_h_X-Tenant"] == "acme"
    assert h["variable_current_application"] == "socket"
    assert h["variable_current_application_data"] == "127.0.0.1:8084 async full"
    assert h["variable_socket_host"] == "127.0.0.1"
    # a second connect gets a fresh block
    again = client.command(commands.CONNECT)
    assert again.is_connect_reply
    assert int(again.headers["Event-Sequence"]) > int(h["Event-Sequence"])
    client.sock.close()
    assert finish(greenlet).closed_by == "app"


def test_connect_reply_has_the_shape_of_the_capture() -> None:
    (captured,) = [
        f for f in capture_frames("01_async_full_answer_playback_hangup_linger", "outbound#1") if f.is_connect_reply
    ]
    _peer, client, greenlet = start(CallScript())
    ours = client.command(commands.CONNECT)
    theirs_names = [n for n in captured.headers if not n.startswith("variable_")]
    our_names = [n for n in ours.headers if not n.startswith("variable_")]
    assert our_names[:13] == theirs_names[:13]  # Event-Name ... Event-Sequence
    shared = set(our_names) & set(theirs_names)
    assert [n for n in our_names if n in shared] == [n for n in theirs_names if n in shared]
    missing = set(theirs_names) - set(our_names)
    assert missing <= {
        "Channel-Callee-ID-Name",
        "Channel-Callee-ID-Number",
        "Caller-Callee-ID-Name",
        "Caller-Callee-ID-Number",
    }, missing
    assert our_names[-4:] == theirs_names[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    client.sock.close()
    finish(greenlet)


def test_first_command_not_connect_runs_without_reply() -> None:
    _peer, client, greenlet = start()
    client.send(commands.MYEVENTS)
    assert client.quiet(0.1), "the first command gets no reply"
    assert client.command(commands.CONNECT).is_connect_reply
    assert client.command(commands.MYEVENTS).reply_text == "-ERR aready enabled."  # the first one took effect
    if not client.events:
        client.events.append(client.next())
    assert [label(f) for f in client.events] == ["CHANNEL_PARK"]  # parked once connect was processed
    client.send(commands.EXIT)
    assert client.labels_until_eof() == ["reply:+OK bye", "final-notice", "EOF"]
    record = finish(greenlet)
    assert record.commands == ["myevents", "connect", "myevents", "exit"]
    assert any("not connect" in e for e in record.protocol_errors)
    assert record.closed_by == "switch" and record.continued_in_dialplan


def test_no_command_at_all_gives_final_notice_after_timeout() -> None:
    _peer, client, greenlet = start(first_command_timeout=0.2)
    began = time.monotonic()
    assert client.labels_until_eof() == ["final-notice", "EOF"]
    assert 0.15 < time.monotonic() - began < 2
    record = finish(greenlet)
    assert record.closed_by == "switch" and record.continued_in_dialplan and record.hangup_cause is None


def test_hangup_before_connect_only_final_notice() -> None:
    _peer, client, greenlet = start(CallScript(hangup_before_connect=True, hangup_cause="ORIGINATOR_CANCEL"))
    client.send(commands.CONNECT)
    frames = client.rest()
    assert [label(f) for f in frames] == ["final-notice"]
    assert frames[0].headers["Content-Disposition"] == "disconnect"
    assert frames[0].body == b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    record = finish(greenlet)
    assert record.hangup_cause == "ORIGINATOR_CANCEL" and record.hung_up_by == "caller"
    assert not record.answered and record.closed_by == "switch"


# ---------------------------------------------------------------------------------------------
# Commands and replies


def test_gating_without_full() -> None:
    peer, client, greenlet = start(CallScript(full=False))
    reply = client.command(commands.CONNECT)
    assert reply.headers["Control"] == "single-channel"
    gated = [
        b"linger\n\n",
        b"nolinger\n\n",
        b"event plain ALL\n\n",
        b"nixevent CHANNEL_ANSWER\n\n",
        b"noevents\n\n",
        b"api status\n\n",
        b"bgapi status\n\n",
        b"log 7\n\n",
        b"nolog\n\n",
        b"sendevent CUSTOM\nEvent-Subclass: esl::probe\n\n",
    ]
    for data in gated:
        frame = client.command(data)
        assert frame.kind is FrameKind.REPLY, data  # even api gets a command/reply
        assert frame.reply_text == "-ERR command not found", data
    assert client.command(b"filter Unique-ID 00000000-0000-0000-0000-000000000000\n\n").reply_text == (
        "+OK filter added. [Unique-ID]=[00000000-0000-0000-0000-000000000000]"
    )
    assert client.command(b"filter delete all\n\n").reply_text == "+OK filter deleted. [all][]"
    assert client.command(b"divert_events off\n\n").reply_text == "+OK events not diverted"
    assert client.command(b"getvar no_such_variable_here\n\n").reply_text == "-ERR command not found"
    assert client.command(b"getvar uuid\n\n").reply_text == peer.uuid
    assert client.command(commands.RESUME).reply_text == "+OK"
    assert client.command(commands.MYEVENTS).reply_text == "+OK Events Enabled"
    assert client.command(commands.execute("answer")).reply_text == "+OK"
    client.send(commands.EXIT)
    labels = client.labels_until_eof()
    assert labels[-3:] == ["reply:+OK bye", "final-notice", "EOF"]
    record = finish(greenlet)
    assert len([e for e in record.protocol_errors if "without full" in e]) == len(gated)
    assert record.answered and record.variables["socket_resume"] == "true"


def test_reply_texts_and_prefix_matching() -> None:
    peer, client, greenlet = connected()
    assert client.command(b"API status\n\n").body.startswith(b"UP ")
    assert client.command(b"events plain HEARTBEAT\n\n").reply_text == "+OK event listener enabled plain"
    assert client.command(b"event plain NO_SUCH_EVENT\n\n").reply_text == "-ERR no keywords supplied"
    assert client.command(b"blah\n\n").reply_text == "-ERR command not found"
    assert client.command(commands.linger(5)).reply_text == "+OK will linger 5 seconds"
    assert client.command(commands.linger()).reply_text == "+OK will linger"
    assert client.command(commands.NOLINGER).reply_text == "+OK will not linger"
    assert client.command(b"log 7\n\n").reply_text == "+OK log level 7 [7]"
    assert client.command(b"nolog\n\n").reply_text == "+OK no longer logging"
    assert client.command(b"nolog\n\n").reply_text == "-ERR not loging"
    assert client.command(b"nixevent HEARTBEAT\n\n").reply_text == "+OK events nixed"
    assert client.command(commands.sendmsg("nosuchcallcommand")).reply_text == "+OK"
    bad = "00000000-0000-0000-0000-000000000000"
    assert client.command(commands.execute("answer", uuid=bad)).reply_text == f"-ERR invalid session id [{bad}]"
    assert client.command(commands.execute("answer", uuid=peer.uuid)).reply_text == "+OK"
    assert client.command(b"noevents\n\n").reply_text == "+OK no longer listening for events"
    assert client.command(b"noevents\n\n").reply_text == "-ERR not listening for events"
    assert client.command(commands.api("nosuchcommand", "arg1")).body == b"-ERR nosuchcommand Command not found!\n"
    client.sock.close()
    finish(greenlet)


def test_api_uuid_getvar_raw_values() -> None:
    script = CallScript(variables={"multi": "line one\nline two ü\ttab", "pct": "a%20b 100%25"})
    peer, client, greenlet = connected(script)
    assert client.command(commands.api("uuid_getvar", peer.uuid, "multi")).body == "line one\nline two ü\ttab".encode()
    assert client.command(commands.api("uuid_getvar", peer.uuid, "pct")).body == b"a%20b 100%25"
    assert client.command(commands.api("uuid_getvar", peer.uuid, "caller_id_number")).body == b"1001"
    assert client.command(commands.api("uuid_getvar", peer.uuid, "nope")).body == b"_undef_"
    assert client.command(commands.api("uuid_exists", peer.uuid)).body == b"true"
    assert client.command(commands.api("uuid_exists", str(uuid.uuid4()))).body == b"false"
    # getvar writes the value raw: the second line is a header line without a colon (spec 1.2)
    assert client.command(b"getvar multi\n\n").reply_text == "line one"
    assert client.command(b"getvar pct\n\n").reply_text == "a%20b 100%25"
    assert client.command(commands.api("uuid_setvar", peer.uuid, "color", "blue")).body == b"+OK\n"
    assert client.command(b"getvar color\n\n").reply_text == "blue"
    client.sock.close()
    record = finish(greenlet)
    assert record.api_commands[0] == f"uuid_getvar {peer.uuid} multi"
    assert record.variables["color"] == "blue"


def test_bgapi_needs_its_own_subscription() -> None:
    peer, client, greenlet = connected()
    reply = client.command(commands.bgapi("status"))
    job = reply.headers["Job-UUID"]
    assert reply.reply_text == f"+OK Job-UUID: {job}" and UUID_RE.match(job)
    assert client.quiet(0.1), "myevents alone does not deliver BACKGROUND_JOB"
    assert client.command(commands.event("BACKGROUND_JOB")).reply_text == "+OK event listener enabled plain"
    chosen = "22222222-bbbb-4ccc-8ddd-000000000001"
    reply = client.command(commands.bgapi("uuid_getvar", peer.uuid, "caller_id_number", job_uuid=chosen))
    assert reply.reply_text == f"+OK Job-UUID: {chosen}" and reply.headers["Job-UUID"] == chosen
    event = client.next().event()
    assert event.name == "BACKGROUND_JOB"
    assert event["Job-UUID"] == chosen and event["Job-Owner-UUID"] == peer.uuid
    assert event["Job-Command"] == "uuid_getvar"
    assert event["Job-Command-Arg"] == f"{peer.uuid} caller_id_number"
    assert event.body == "1001"
    client.send(commands.bgapi("status"))
    assert client.reply().kind is FrameKind.REPLY
    event = client.next().event()
    assert "Job-Command-Arg" not in event and event.body.startswith("UP ")
    client.sock.close()
    finish(greenlet)


def test_event_formats_json_and_xml() -> None:
    _peer, client, greenlet = connected()
    assert client.command(b"event json CHANNEL_ANSWER\n\n").reply_text == "+OK event listener enabled json"
    client.send(commands.execute("answer"))
    assert client.reply().reply_text == "+OK"
    frame = client.next()
    assert frame.kind is FrameKind.EVENT_JSON and frame.event()["Application"] == "answer"
    events_until(client, "CHANNEL_EXECUTE_COMPLETE")  # ANSWER and COMPLETE, JSON too
    assert client.command(b"event xml CHANNEL_EXECUTE\n\n").reply_text == "+OK event listener enabled xml"
    client.send(commands.execute("playback", "tone_stream://%(100,0,440)"))
    client.reply()
    frame = client.next()
    assert frame.kind is FrameKind.EVENT_XML
    assert frame.event()["Application-Data"] == "tone_stream://%(100,0,440)"
    client.sock.close()
    finish(greenlet)


def test_filters_select_events() -> None:
    _peer, client, greenlet = connected()
    assert client.command(b"filter Event-Name CHANNEL_EXECUTE_COMPLETE\n\n").reply_text == (
        "+OK filter added. [Event-Name]=[CHANNEL_EXECUTE_COMPLETE]"
    )
    client.send(commands.execute("answer"))
    client.reply()
    assert label(client.next()) == "CHANNEL_EXECUTE_COMPLETE(answer)"
    assert client.command(b"filter delete Event-Name CHANNEL_EXECUTE_COMPLETE\n\n").reply_text == (
        "+OK filter deleted. [Event-Name][CHANNEL_EXECUTE_COMPLETE]"
    )
    assert client.command(b"filter Event-Name -CHANNEL_EXECUTE\n\n").reply_text.startswith("+OK filter added.")
    client.send(commands.execute("set", "a=b"))
    client.reply()
    assert client.quiet(0.1), "only-negative filters deliver nothing"
    client.sock.close()
    finish(greenlet)


# ---------------------------------------------------------------------------------------------
# Executes: async, static, nesting


def test_async_execute_reply_first_then_events_with_application_uuid() -> None:
    _peer, client, greenlet = connected()
    chosen = "11111111-aaaa-4bbb-8ccc-000000000001"
    client.send(commands.execute("answer", event_uuid=chosen))
    assert label(client.next()) == "reply:+OK"
    execute, answer, complete = (client.next().event() for _ in range(3))
    assert [execute.name, answer.name, complete.name] == [
        "CHANNEL_EXECUTE",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE_COMPLETE",
    ]
    assert execute["Application-UUID"] == complete["Application-UUID"] == chosen
    assert "Application-Data" not in execute
    assert complete["Application-Response"] == "_none_"
    assert answer["Answer-State"] == "answered" and complete["Channel-Call-State"] == "ACTIVE"
    names = [n for n, _ in execute.headers.items()]
    assert names[-2:] == ["Application", "Application-UUID"]
    assert [n for n, _ in complete.headers.items()][-3:] == ["Application", "Application-Response", "Application-UUID"]
    # without Event-UUID: a random Application-UUID; the argument travels in a text/plain body
    client.send(commands.execute("playback", "line1\nline2"))
    client.reply()
    execute = client.next().event()
    assert UUID_RE.match(execute["Application-UUID"]) and execute["Application-UUID"] != chosen
    assert execute["Application-Data"] == "line1\nline2"
    client.sock.close()
    record = finish(greenlet)
    assert record.executed == [("answer", ""), ("playback", "line1\nline2")]
    assert record.verbs == ["answer", "playback"]
    assert record.answered and record.closed_by == "app" and record.continued_in_dialplan


def test_static_reply_after_app_then_pipelined_replies_then_events() -> None:
    script = CallScript(mode="static", app_seconds={"playback": 0.2})
    peer, client, greenlet = start(script)
    reply = client.command(commands.CONNECT)
    assert reply.headers["Socket-Mode"] == "static"
    assert client.command(commands.MYEVENTS).reply_text == "+OK Events Enabled"
    assert client.quiet(0.05), "no CHANNEL_PARK on a static socket"
    began = time.monotonic()
    client.send(commands.execute("playback", "/tmp/x.wav", event_uuid="u-1"), b"getvar uuid\n\n")
    first = client.next()
    assert time.monotonic() - began >= 0.18, "the +OK comes when the application has finished"
    labels = [label(first)] + [label(client.next()) for _ in range(4)]
    assert labels == [
        "reply:+OK",
        f"reply:{peer.uuid}",
        "CHANNEL_EXECUTE(playback)",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_EXECUTE_COMPLETE(playback)",
    ]
    client.sock.close()
    finish(greenlet)


@pytest.mark.parametrize("lock", [False, True])
def test_nesting_without_event_lock_fifo_with_it(lock: bool) -> None:
    _peer, client, greenlet = connected(CallScript(app_seconds={"playback": 0.15}))
    client.send(commands.execute("answer"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(answer)")
    client.send(
        commands.execute("playback", "a.wav", event_uuid="A", event_lock=lock),
        commands.execute("playback", "b.wav", event_uuid="B", event_lock=False),
    )
    assert [label(client.reply()), label(client.reply())] == ["reply:+OK", "reply:+OK"]
    order = []
    while len(order) < 4:
        event = client.next().event()
        order.append(f"{event.name}:{event['Application-UUID']}")
    if lock:
        assert order == [
            "CHANNEL_EXECUTE:A",
            "CHANNEL_EXECUTE_COMPLETE:A",
            "CHANNEL_EXECUTE:B",
            "CHANNEL_EXECUTE_COMPLETE:B",
        ]
    else:
        assert order == [
            "CHANNEL_EXECUTE:A",
            "CHANNEL_EXECUTE:B",
            "CHANNEL_EXECUTE_COMPLETE:B",
            "CHANNEL_EXECUTE_COMPLETE:A",
        ]
    client.sock.close()
    finish(greenlet)


def test_loops_stop_after_a_short_pass() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("playback", "x.wav", loops=3, event_uuid="L"))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE")
    assert labels[-1] == "CHANNEL_EXECUTE_COMPLETE(playback)"
    assert client.quiet(0.1), "one pass under 0.5 s ends the loop"
    client.sock.close()
    record = finish(greenlet)
    assert record.verbs == ["playback"]
    assert record.variables["current_loop"] == "1" and record.variables["total_loops"] == "3"


def test_uuid_break_stops_playback_with_file_played() -> None:
    peer, client, greenlet = connected(CallScript(app_seconds={"playback": 5}))
    client.send(commands.execute("playback", "long.wav"))
    events_until(client, "CHANNEL_EXECUTE(playback)")
    began = time.monotonic()
    assert client.command(commands.api("uuid_break", peer.uuid)).body == b"+OK\n"
    frame = client.next()
    while label(frame) != "CHANNEL_EXECUTE_COMPLETE(playback)":
        frame = client.next()
    assert time.monotonic() - began < 1
    assert frame.event()["Application-Response"] == "FILE PLAYED"
    client.sock.close()
    finish(greenlet)


def test_unknown_application_hangs_up_destination_out_of_order() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("nosuchapp", "some args"))
    labels = client.labels_until_eof()
    assert labels == ["reply:+OK", *HANGUP_SEQUENCE, "final-notice", "EOF"]
    record = finish(greenlet)
    assert record.hangup_cause == "DESTINATION_OUT_OF_ORDER" and record.hung_up_by == "switch"
    assert record.executed == []


def test_set_export_unset_and_variable_expansion() -> None:
    _peer, client, greenlet = connected()
    for app, arg in [
        ("set", "foo=bar"),
        ("export", "bar=baz"),
        ("set", "gone=x"),
        ("unset", "gone"),
        ("set", Expand("who=${caller_id_number}-${foo}")),  # the explicit opt-in to expansion
    ]:
        client.send(commands.execute(app, arg))
    labels = []
    while len([x for x in labels if x.startswith("CHANNEL_EXECUTE_COMPLETE")]) < 5:
        labels.append(label(client.next()))
    client.sock.close()
    record = finish(greenlet)
    assert record.variables["foo"] == "bar" and record.variables["bar"] == "baz"
    assert "gone" not in record.variables and record.variables["who"] == "1001-bar"
    assert record.executed[-1] == ("set", "who=1001-bar")  # the argument is expanded when it runs


# ---------------------------------------------------------------------------------------------
# Digits


PAGD = "1 5 {tries} 8000 # tone_stream://%(300,0,500) silence_stream://200 pagd_digits {regex}"


def test_play_and_get_digits_success_with_dtmf_events() -> None:
    peer, client, greenlet = connected(CallScript(dtmf="123#"))
    client.send(commands.execute("play_and_get_digits", PAGD.format(tries=1, regex=r"\d+")))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE")
    assert labels == [
        "reply:+OK",
        "CHANNEL_EXECUTE(play_and_get_digits)",
        "CHANNEL_PROGRESS_MEDIA",
        "DTMF(1)",
        "DTMF(2)",
        "DTMF(3)",
        "DTMF(#)",
        "CHANNEL_EXECUTE_COMPLETE(play_and_get_digits)",
    ]
    client.send(commands.api("uuid_getvar", peer.uuid, "pagd_digits"))
    assert client.reply().body == b"123"
    client.sock.close()
    record = finish(greenlet)
    assert record.variables["pagd_digits"] == "123"
    assert record.variables["read_result"] == "success" and record.variables["read_terminator_used"] == "#"


def test_play_and_get_digits_event_details_match_capture() -> None:
    captured = [f.event() for f in capture_frames("03_play_and_get_digits_dtmf", "outbound#4") if f.is_event]
    captured_dtmf = next(e for e in captured if e.name == "DTMF")
    captured_complete = next(
        e for e in captured if e.name == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application") == "play_and_get_digits"
    )
    _peer, client, greenlet = connected(CallScript(dtmf="7#"))
    client.send(commands.execute("answer"), commands.execute("play_and_get_digits", PAGD.format(tries=1, regex="")))
    frames = []
    while len([f for f in frames if f.name == "CHANNEL_EXECUTE_COMPLETE"]) < 2:
        frame = client.next()
        if frame.is_event:
            frames.append(frame.event())
    dtmf = next(e for e in frames if e.name == "DTMF")
    complete = frames[-1]
    assert [n for n in dtmf.headers if not n.startswith("Caller-")] == [
        n for n in captured_dtmf.headers if not n.startswith("Caller-")
    ]
    assert not any(n.startswith("variable_") for n in dtmf.headers)
    assert dtmf["DTMF-Duration"] == captured_dtmf["DTMF-Duration"] == "2000"
    assert complete["variable_read_result"] == captured_complete["variable_read_result"] == "success"
    assert complete["Application-Response"] == captured_complete["Application-Response"] == "_none_"
    client.sock.close()
    finish(greenlet)


def test_play_and_get_digits_failure_leaves_variable_unset() -> None:
    _peer, client, greenlet = connected(CallScript(dtmf=""))
    client.send(commands.execute("play_and_get_digits", PAGD.format(tries=2, regex=r"\d+")))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE")
    assert not [x for x in labels if x.startswith("DTMF")]
    client.sock.close()
    record = finish(greenlet)
    assert record.variables["read_result"] == "failure" and "pagd_digits" not in record.variables


def test_play_and_get_digits_tries_and_type_ahead() -> None:
    # attempt 1: no input; attempt 2: "9" fails the regex; attempt 3: "42#" then "5" left as type-ahead
    _peer, client, greenlet = connected(CallScript(dtmf=["", "9", "42#5"]))
    client.send(commands.execute("play_and_get_digits", PAGD.format(tries=3, regex=r"\d\d")))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE")
    assert [x for x in labels if x.startswith("DTMF")] == ["DTMF(9)", "DTMF(4)", "DTMF(2)", "DTMF(#)"]
    client.send(commands.execute("read", "1 1 prompt.wav read_var 3000 #"))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE")
    assert [x for x in labels if x.startswith("DTMF")] == ["DTMF(5)"]
    client.sock.close()
    record = finish(greenlet)
    assert record.variables["pagd_digits"] == "42" and record.variables["read_var"] == "5"


def test_dtmf_events_after_an_execute_and_press() -> None:
    peer, client, greenlet = connected(CallScript(dtmf_events={1: "5*"}))
    client.send(commands.execute("answer"))
    labels = events_until(client, "DTMF(*)")
    assert labels[-3:] == ["CHANNEL_EXECUTE_COMPLETE(answer)", "DTMF(5)", "DTMF(*)"]
    peer.press("9")
    assert label(client.next()) == "DTMF(9)"
    client.sock.close()
    finish(greenlet)


def test_static_digits_pressed_between_commands_are_type_ahead() -> None:
    peer, client, greenlet = start(CallScript(mode="static"))
    client.command(commands.CONNECT)
    client.command(commands.MYEVENTS)
    peer.press("8#")
    assert client.quiet(0.05), "no DTMF event while no application reads digits"
    client.send(commands.execute("play_and_get_digits", PAGD.format(tries=1, regex="")))
    assert label(client.next()) == "reply:+OK"
    labels = [label(client.next()) for _ in range(5)]
    assert labels == [
        "CHANNEL_EXECUTE(play_and_get_digits)",
        "CHANNEL_PROGRESS_MEDIA",
        "DTMF(8)",
        "DTMF(#)",
        "CHANNEL_EXECUTE_COMPLETE(play_and_get_digits)",
    ]
    client.sock.close()
    assert finish(greenlet).variables["pagd_digits"] == "8"


# ---------------------------------------------------------------------------------------------
# bridge, respond, transfer


def test_bridge_answered_far_end_hangs_up() -> None:
    peer, client, greenlet = connected(CallScript(bridge={"*": "answer"}))
    client.send(commands.execute("bridge", "{origination_caller_id_number=2000}sofia/gateway/gw/15551234567"))
    frames = []
    while not frames or frames[-1].name != "CHANNEL_EXECUTE_COMPLETE":
        frame = client.next()
        if frame.is_event:
            frames.append(frame.event())
    assert [e.name for e in frames] == [
        "CHANNEL_EXECUTE",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_UNBRIDGE",
        "CHANNEL_EXECUTE_COMPLETE",
    ]
    bridge, complete = frames[3], frames[-1]
    assert bridge["Bridge-A-Unique-ID"] == peer.uuid and UUID_RE.match(bridge["Bridge-B-Unique-ID"])
    assert bridge["Other-Leg-Unique-ID"] == bridge["Bridge-B-Unique-ID"]
    assert bridge["Other-Leg-Destination-Number"] == "15551234567"
    assert complete["variable_originate_disposition"] == "SUCCESS" and complete["variable_DIALSTATUS"] == "SUCCESS"
    assert complete["variable_last_bridge_hangup_cause"] == "NORMAL_CLEARING"
    assert complete["Application-Response"] == "_none_" and complete["Answer-State"] == "answered"
    client.sock.close()
    record = finish(greenlet)
    assert record.answered and record.hangup_cause is None and record.continued_in_dialplan


@pytest.mark.parametrize(
    ("outcome", "cause", "dialstatus", "hangs_up"),
    [
        ("busy", "USER_BUSY", "BUSY", True),
        ("no_answer", "NO_ANSWER", "NOANSWER", False),
        ("fail:UNALLOCATED_NUMBER", "UNALLOCATED_NUMBER", "UNALLOCATED_NUMBER", True),
    ],
)
def test_bridge_failures(outcome: str, cause: str, dialstatus: str, hangs_up: bool) -> None:
    _peer, client, greenlet = connected(CallScript(bridge={"user/1002": outcome}))
    client.send(commands.execute("bridge", "user/1002"))
    if hangs_up:
        labels = client.labels_until_eof()
        assert labels == [
            "reply:+OK",
            "CHANNEL_EXECUTE(bridge)",
            "CHANNEL_HANGUP",
            "CHANNEL_EXECUTE_COMPLETE(bridge)",
            *HANGUP_SEQUENCE[1:],
            "final-notice",
            "EOF",
        ]
        record = finish(greenlet)
        assert record.hangup_cause == cause and record.hung_up_by == "switch"
    else:
        labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE")
        assert labels == ["reply:+OK", "CHANNEL_EXECUTE(bridge)", "CHANNEL_EXECUTE_COMPLETE(bridge)"]
        client.sock.close()
        record = finish(greenlet)
        assert record.hangup_cause is None
    assert record.variables["originate_disposition"] == cause
    assert record.variables["DIALSTATUS"] == dialstatus


def test_bridge_rings_comma_legs_at_once_and_the_first_answer_wins() -> None:
    """``a,b,c`` rings every leg; the first to answer is bridged (its ``origination_uuid`` is the
    B-leg), legs still ringing get LOSE_RACE and a busy leg keeps its own cause (switch_ivr_originate.c)."""
    legs = {"user/a1": "no_answer", "user/a2": "answer", "user/a3": "busy"}
    _peer, client, greenlet = connected(CallScript(bridge=legs))
    dial = "{ignore_early_media=true}[origination_uuid=u-1]user/a1,[origination_uuid=u-2,x=1]user/a2,"
    dial += "[origination_uuid=u-3]user/a3"
    client.send(commands.execute("set", "continue_on_fail=true"), commands.execute("bridge", dial))
    frames = []
    while not frames or frames[-1].name != "CHANNEL_EXECUTE_COMPLETE" or frames[-1]["Application"] != "bridge":
        frame = client.next()
        if frame.is_event:
            frames.append(frame.event())
    bridge = next(e for e in frames if e.name == "CHANNEL_BRIDGE")
    assert bridge["Bridge-B-Unique-ID"] == bridge["Other-Leg-Unique-ID"] == "u-2"
    assert bridge["Other-Leg-Destination-Number"] == "a2"
    complete = frames[-1]
    assert complete["variable_bridge_uuid"] == complete["variable_last_bridge_to"] == "u-2"
    assert complete.headers.get_array("variable_originate_causes") == ["u-1;LOSE_RACE", "u-2;NONE", "u-3;USER_BUSY"]
    assert complete["variable_DIALSTATUS"] == "SUCCESS"
    client.sock.close()
    finish(greenlet)


def test_bridge_nobody_answers_then_the_next_group() -> None:
    """No leg of ``a,b`` answers (NO_ANSWER wins over a busy leg's cause); ``|c`` is tried after."""
    _peer, client, greenlet = connected(CallScript(bridge={"user/a1": "busy", "*": "no_answer"}))
    client.send(commands.execute("set", "continue_on_fail=true"),
                commands.execute("bridge", "[origination_uuid=u-1]user/a1,[origination_uuid=u-2]user/a2"))  # fmt: skip
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(bridge)")
    client.sock.close()
    record = finish(greenlet)
    assert record.variables["originate_disposition"] == "NO_ANSWER" and record.variables["DIALSTATUS"] == "NOANSWER"
    assert record.variables["originate_causes"] == "ARRAY::u-1;USER_BUSY|:u-2;NO_ANSWER"
    _peer, client, greenlet = connected(CallScript(bridge={"user/a1": "busy", "user/a2": "answer"}))
    client.send(commands.execute("bridge", "[origination_uuid=u-1]user/a1|[origination_uuid=u-2]user/a2"))
    events_until(client, "CHANNEL_BRIDGE")
    client.sock.close()
    assert finish(greenlet).variables["originate_causes"] == "ARRAY::u-1;USER_BUSY|:u-2;NONE"


def test_bridge_failure_with_continue_on_fail_keeps_the_call() -> None:
    _peer, client, greenlet = connected(CallScript(bridge={"*": "busy"}))
    client.send(commands.execute("set", "continue_on_fail=true"), commands.execute("bridge", "user/1002"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(bridge)")
    client.sock.close()
    record = finish(greenlet)
    assert record.hangup_cause is None and record.variables["DIALSTATUS"] == "BUSY"


@pytest.mark.parametrize(
    ("code", "cause"),
    [("503 Service Unavailable", "NORMAL_TEMPORARY_FAILURE"), ("404", "UNALLOCATED_NUMBER"), ("486 Busy", "USER_BUSY")],
)
def test_respond_with_a_final_code_hangs_up(code: str, cause: str) -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("respond", code))
    labels = client.labels_until_eof()
    assert labels == [
        "reply:+OK",
        "CHANNEL_EXECUTE(respond)",
        "CHANNEL_HANGUP",
        "CHANNEL_EXECUTE_COMPLETE(respond)",
        *HANGUP_SEQUENCE[1:],
        "final-notice",
        "EOF",
    ]
    record = finish(greenlet)
    assert record.hangup_cause == cause and record.hung_up_by == "app"


def test_respond_180_does_not_hang_up() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("respond", "180 Ringing"))
    assert events_until(client, "CHANNEL_EXECUTE_COMPLETE")[-2:] == [
        "CHANNEL_PROGRESS",
        "CHANNEL_EXECUTE_COMPLETE(respond)",
    ]
    client.sock.close()
    assert finish(greenlet).hangup_cause is None


def test_transfer_leaves_the_socket() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("transfer", "2000 XML support"))
    labels = [label(client.next()) for _ in range(5)]
    assert labels == [
        "reply:+OK",
        "CHANNEL_EXECUTE(transfer)",
        "CHANNEL_EXECUTE_COMPLETE(transfer)",
        "CHANNEL_UNPARK",
        "CHANNEL_EXECUTE_COMPLETE(socket)",
    ]
    client.sock.close()
    record = finish(greenlet)
    assert record.transferred_to == "2000 XML support" and record.hangup_cause is None
    assert record.continued_in_dialplan


# ---------------------------------------------------------------------------------------------
# Hangup sequences


def test_hangup_at_interrupts_playback() -> None:
    _peer, client, greenlet = connected(CallScript(hangup_at=2, app_seconds={"playback": 5}))
    client.send(commands.execute("answer"), commands.execute("playback", "long.wav"))
    labels = client.labels_until_eof()
    start_at = labels.index("CHANNEL_EXECUTE(playback)")
    assert labels[start_at:] == [
        "CHANNEL_EXECUTE(playback)",
        "CHANNEL_HANGUP",
        "CHANNEL_EXECUTE_COMPLETE(playback)",
        *HANGUP_SEQUENCE[1:],
        "final-notice",
        "EOF",
    ]
    record = finish(greenlet)
    assert record.hung_up_by == "caller" and record.variables["current_application_response"] == "PLAYBACK ERROR"


def test_caller_hangup_during_playback_reports_playback_error() -> None:
    peer, client, greenlet = connected(CallScript(app_seconds={"playback": 5}))
    client.send(commands.execute("answer"), commands.execute("playback", "long.wav"))
    events_until(client, "CHANNEL_EXECUTE(playback)")
    peer.hangup("NORMAL_CLEARING")
    frames = client.rest()
    assert [label(f) for f in frames[:2]] == ["CHANNEL_HANGUP", "CHANNEL_EXECUTE_COMPLETE(playback)"]
    assert frames[1].event()["Application-Response"] == "PLAYBACK ERROR"
    assert frames[1].event()["Answer-State"] == "hangup"
    finish(greenlet)


def test_async_hangup_without_linger_full_sequence() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.hangup("USER_BUSY"))
    frames = client.rest()
    assert [label(f) for f in frames] == ["reply:+OK", *HANGUP_SEQUENCE, "final-notice"]
    complete = frames[-2].event()
    assert complete.headers.get_all("Hangup-Cause") == ["USER_BUSY", "USER_BUSY"]
    assert complete["variable_hangup_cause"] == "USER_BUSY"
    assert all(not n.startswith("variable_") for f in frames[4:6] for n in f.event().headers)
    assert frames[3].event()["Application-Data"] == "127.0.0.1:8084 async full"
    sequences = [int(f.event()["Event-Sequence"]) for f in frames if f.is_event]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    record = finish(greenlet)
    assert record.hangup_cause == "USER_BUSY" and record.hung_up_by == "app" and record.closed_by == "switch"
    assert not record.continued_in_dialplan and not record.lingered


@pytest.mark.parametrize("limit", range(7))
def test_hangup_event_limit_cuts_the_sequence(limit: int) -> None:
    _peer, client, greenlet = connected(CallScript(hangup_event_limit=limit))
    client.send(commands.hangup())
    assert client.labels_until_eof() == ["reply:+OK", *HANGUP_SEQUENCE[:limit], "final-notice", "EOF"]
    finish(greenlet)


def test_async_linger_all_events_then_notice_then_exit() -> None:
    peer, client, greenlet = connected()
    assert client.command(commands.linger()).reply_text == "+OK will linger"
    client.send(commands.hangup())
    labels = [label(client.next()) for _ in range(8)]
    assert labels == ["reply:+OK", *HANGUP_SEQUENCE, "linger-notice"]
    # the socket stays open: commands still get replies, executes have no effect (spec 2.6)
    assert client.command(commands.execute("playback", "x.wav", event_uuid="dead")).reply_text == "+OK"
    assert client.command(commands.api("uuid_exists", peer.uuid)).body == b"false"
    assert client.command(b"getvar uuid\n\n").reply_text == peer.uuid
    assert client.command(commands.NOLINGER).reply_text == "+OK will not linger"
    assert client.quiet(0.1)
    client.send(commands.EXIT)
    assert client.labels_until_eof() == ["reply:+OK bye", "final-notice", "EOF"]
    record = finish(greenlet)
    assert record.lingered and record.closed_by == "switch" and record.executed == []


def test_linger_notice_fields_and_timed_final_notice() -> None:
    peer, client, greenlet = connected(notice_linger_after_seconds=0.15)
    assert client.command(commands.linger(30)).reply_text == "+OK will linger 30 seconds"
    peer.hangup("NORMAL_CLEARING")
    frames = client.rest()
    notice = frames[-2]
    assert [label(f) for f in frames] == [*HANGUP_SEQUENCE, "linger-notice", "final-notice"]
    assert notice.headers.items() == [
        ("Content-Type", "text/disconnect-notice"),
        ("Controlled-Session-UUID", peer.uuid),
        ("Content-Disposition", "linger"),
        ("Channel-Name", peer.channel.name),
        ("Linger-Time", "30"),
        ("Content-Length", "0"),
    ]
    record = finish(greenlet)
    assert record.hung_up_by == "caller" and record.lingered


def test_static_hangup_without_linger_only_channel_hangup() -> None:
    peer, client, greenlet = connected(CallScript(mode="static"))
    peer.hangup("NORMAL_CLEARING")
    assert client.labels_until_eof() == ["CHANNEL_HANGUP", "final-notice", "EOF"]
    finish(greenlet)


def test_static_linger_notice_before_channel_hangup() -> None:
    # transcript 01b: sendmsg hangup on a static socket with "linger 5"
    _peer, client, greenlet = connected(CallScript(mode="static"), notice_linger_after_seconds=0.1)
    assert client.command(commands.linger(5)).reply_text == "+OK will linger 5 seconds"
    client.send(commands.hangup())
    assert client.labels_until_eof() == ["reply:+OK", "linger-notice", "CHANNEL_HANGUP", "final-notice", "EOF"]
    finish(greenlet)


def test_static_caller_hangup_during_inline_playback() -> None:
    # transcript 12, calls 15-16: REPLY CHANNEL_EXECUTE CHANNEL_HANGUP CHANNEL_EXECUTE_COMPLETE(playback)
    peer, client, greenlet = connected(CallScript(mode="static", app_seconds={"playback": 5}))
    client.send(commands.execute("answer"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(answer)")
    client.send(commands.execute("playback", "long.wav"))
    gevent.spawn_later(0.05, peer.hangup)
    assert client.labels_until_eof() == [
        "reply:+OK",
        "CHANNEL_EXECUTE(playback)",
        "CHANNEL_HANGUP",
        "CHANNEL_EXECUTE_COMPLETE(playback)",
        "final-notice",
        "EOF",
    ]
    finish(greenlet)


# ---------------------------------------------------------------------------------------------
# The application closes the socket


def test_app_closing_the_socket_leaves_the_call_in_the_dialplan() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("answer"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE")
    client.sock.close()
    record = finish(greenlet)
    assert record.closed_by == "app" and record.continued_in_dialplan
    assert record.hangup_cause is None and record.answered


def test_app_closing_during_static_inline_application_ends_quickly() -> None:
    _peer, client, greenlet = connected(CallScript(mode="static", app_seconds={"park": 0}))
    client.send(commands.execute("park"))
    gevent.sleep(0.05)
    began = time.monotonic()
    client.sock.close()
    record = finish(greenlet)
    assert time.monotonic() - began < 1.5
    assert record.closed_by == "app" and record.executed == [("park", "")]


@pytest.mark.parametrize("cut", [1, 5, 9, 20, 40])
def test_app_closing_at_any_moment(cut: int) -> None:
    """The app vanishes after `cut` frames of a busy call: the peer finishes and records it."""
    _peer, client, greenlet = start(CallScript(app_seconds={"playback": 0.05}, dtmf="1#"))
    client.send(
        commands.CONNECT,
        commands.MYEVENTS,
        commands.linger(),
        commands.execute("answer"),
        commands.execute("playback", "a.wav"),
        commands.execute("play_and_get_digits", PAGD.format(tries=1, regex="")),
        commands.bgapi("status"),
        commands.hangup(),
    )
    for _ in range(cut):
        try:
            if client.next(0.5) is None:
                break
        except TimeoutError:  # lingering without limit: nothing more comes
            break
    client.sock.close()
    record = finish(greenlet)
    assert record.closed_by in ("app", "switch")


# ---------------------------------------------------------------------------------------------
# Chunking, TCP, captures


def run_full_call(chunker=None) -> list[str]:
    peer, client, greenlet = start(CallScript(dtmf="42#"), chunker=chunker)
    client.send(
        commands.CONNECT,
        commands.MYEVENTS,
        commands.execute("answer"),
        commands.execute("play_and_get_digits", PAGD.format(tries=1, regex="")),
    )
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE(play_and_get_digits)")
    client.send(commands.api("uuid_getvar", peer.uuid, "pagd_digits"), commands.hangup())
    labels += client.labels_until_eof()
    finish(greenlet)
    return labels


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_chunking_delivers_the_same_frames(seed: int) -> None:
    plain = run_full_call()
    assert plain == run_full_call(random_chunker(seed, max_chunk=50))
    assert "api:42" in plain and plain[-3:] == ["CHANNEL_HANGUP_COMPLETE", "final-notice", "EOF"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=10))
def test_any_chunk_sizes_parse_identically(sizes: list[int]) -> None:
    def chunker(data: bytes) -> list[bytes]:
        pieces, i, k = [], 0, 0
        while i < len(data):
            pieces.append(data[i : i + sizes[k % len(sizes)]])
            i += sizes[k % len(sizes)]
            k += 1
        return pieces

    _peer, client, greenlet = start(chunker=chunker)
    client.send(commands.CONNECT, commands.MYEVENTS, commands.execute("answer"), commands.hangup())
    labels = client.labels_until_eof()
    finish(greenlet)
    assert labels == [
        "connect-reply",
        "reply:+OK Events Enabled",
        "CHANNEL_PARK",
        "reply:+OK",
        "reply:+OK",
        "CHANNEL_EXECUTE(answer)",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE_COMPLETE(answer)",
        *HANGUP_SEQUENCE,
        "final-notice",
        "EOF",
    ]


def test_over_tcp_with_a_stream_server() -> None:
    seen: list[str] = []
    done = gevent.event.Event()

    def handle(sock, address) -> None:
        client = RawClient(sock)
        reply = client.command(commands.CONNECT)
        seen.append(reply.headers["Caller-Destination-Number"])
        client.command(commands.MYEVENTS)
        client.send(commands.execute("answer"), commands.execute("playback", "hello.wav"), commands.hangup())
        seen.extend(client.labels_until_eof())
        sock.close()
        done.set()

    server = gevent.server.StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        peer = connect_tcp(server.address, CallScript(destination="4242"))
        record = gevent.with_timeout(5, peer.run)
        assert done.wait(5)
    finally:
        server.stop(timeout=1)
    assert seen[0] == "4242"
    assert seen[-4:] == ["CHANNEL_STATE(CS_REPORTING)", "CHANNEL_HANGUP_COMPLETE", "final-notice", "EOF"]
    assert record.verbs == ["answer", "playback"] and record.closed_by == "switch"
    assert record.hangup_cause == "NORMAL_CLEARING"


def _capture_labels(name: str, connection: str) -> list[str]:
    return [label(f) for f in capture_frames(name, connection) if f.is_event or f.kind is FrameKind.DISCONNECT]


def recorded_labels(script: CallScript, steps: list, **options) -> list[str]:
    """Run a call step by step (bytes, or the label to wait for) and return every event/notice label."""
    _peer, client, greenlet = start(script, **options)
    seen: list[str] = []
    for step in steps:
        if isinstance(step, bytes):
            client.send(step)
            continue
        while True:
            frame = client.next()
            text = label(frame)
            if frame is None or frame.is_event or frame.kind is FrameKind.DISCONNECT:
                seen.append(text)
            if frame is None or text.startswith(step):
                break
    seen += [label(f) for f in client.rest() if f.is_event or f.kind is FrameKind.DISCONNECT]
    finish(greenlet)
    return seen


def test_async_linger_events_equal_capture_01() -> None:
    expected = _capture_labels("01_async_full_answer_playback_hangup_linger", "outbound#1")
    ours = recorded_labels(
        CallScript(),
        [
            commands.CONNECT,
            commands.MYEVENTS,
            commands.linger(),
            commands.execute("answer"),
            "CHANNEL_EXECUTE_COMPLETE",
            commands.execute("playback", "tone_stream://%(500,0,440);loops=2"),
            "CHANNEL_EXECUTE_COMPLETE",
            commands.hangup(),
            "linger-notice",
            commands.EXIT,
        ],
    )
    assert ours == [*expected, "final-notice"]  # the capture ended with the app closing; we sent exit


def test_async_nofull_events_equal_capture_01c() -> None:
    expected = _capture_labels("01c_async_nofull_answer_playback_hangup", "outbound#2")
    ours = recorded_labels(
        CallScript(full=False),
        [
            commands.CONNECT,
            commands.MYEVENTS,
            commands.execute("answer"),
            "CHANNEL_EXECUTE_COMPLETE",
            commands.execute("playback", "tone_stream://%(500,0,440)"),
            "CHANNEL_EXECUTE_COMPLETE",
            commands.hangup(),
        ],
    )
    assert ours == expected


def test_static_linger_events_equal_capture_01b() -> None:
    expected = _capture_labels("01b_sync_full_answer_playback_hangup_linger5", "outbound#1")
    ours = recorded_labels(
        CallScript(mode="static"),
        [
            commands.CONNECT,
            commands.MYEVENTS,
            commands.linger(5),
            commands.execute("answer"),
            "CHANNEL_EXECUTE_COMPLETE",
            commands.execute("playback", "tone_stream://%(500,0,440);loops=2"),
            "CHANNEL_EXECUTE_COMPLETE",
            commands.hangup(),
        ],
        notice_linger_after_seconds=0.1,
    )
    assert ours == expected
    assert "CHANNEL_HANGUP_COMPLETE" not in ours


def test_event_header_shapes_match_capture() -> None:
    captured = {}
    for frame in capture_frames("01_async_full_answer_playback_hangup_linger", "outbound#1"):
        if frame.is_event:
            captured.setdefault(label(frame), frame.event())
    _peer, client, greenlet = connected()
    client.send(commands.execute("answer"), commands.execute("playback", "x.wav"), commands.hangup())
    ours = {}
    for frame in client.rest():
        if frame.is_event:
            ours.setdefault(label(frame), frame.event())
    finish(greenlet)
    for name in [
        "CHANNEL_EXECUTE(answer)",
        "CHANNEL_ANSWER",
        "CHANNEL_HANGUP",
        "CHANNEL_STATE(CS_HANGUP)",
        "CHANNEL_HANGUP_COMPLETE",
        "CHANNEL_EXECUTE_COMPLETE(socket)",
    ]:
        theirs_names = [n for n in captured[name].headers if not n.startswith(("variable_", "Caller-"))]
        our_names = [n for n in ours[name].headers if not n.startswith(("variable_", "Caller-"))]
        assert our_names == theirs_names, name
        assert any(n.startswith("variable_") for n in ours[name].headers) == any(
            n.startswith("variable_") for n in captured[name].headers
        ), name


# ---------------------------------------------------------------------------------------------
# More applications and control paths


def test_api_uuid_kill_hangs_up_from_the_app() -> None:
    peer, client, greenlet = connected()
    assert client.command(commands.api("uuid_kill", peer.uuid, "CALL_REJECTED")).body == b"+OK\n"
    assert client.labels_until_eof() == [*HANGUP_SEQUENCE, "final-notice", "EOF"]
    record = finish(greenlet)
    assert record.hangup_cause == "CALL_REJECTED" and record.hung_up_by == "app"


def test_sched_hangup_fires_later() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("sched_hangup", "+0.1 ALLOTTED_TIMEOUT"))
    labels = client.labels_until_eof()
    assert labels[:3] == ["reply:+OK", "CHANNEL_EXECUTE(sched_hangup)", "CHANNEL_EXECUTE_COMPLETE(sched_hangup)"]
    assert labels[3:] == [*HANGUP_SEQUENCE, "final-notice", "EOF"]
    assert finish(greenlet).hangup_cause == "ALLOTTED_TIMEOUT"


def test_record_and_read_variables() -> None:
    _peer, client, greenlet = connected(CallScript(record_seconds=7.5))
    client.send(commands.execute("record", "/tmp/msg.wav 5"), commands.execute("read", "1 4 p.wav got 100 #"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(read)")
    client.sock.close()
    variables = finish(greenlet).variables
    assert variables["record_seconds"] == "5" and variables["record_ms"] == "5000"
    assert variables["read_result"] == "timeout" and "got" not in variables


def test_play_and_get_digits_transfer_on_failure() -> None:
    _peer, client, greenlet = connected()
    client.send(commands.execute("play_and_get_digits", "1 1 1 100 # p.wav i.wav v \\d 50 '9000 XML default'"))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE(socket)")
    assert labels[-3:] == [
        "CHANNEL_EXECUTE_COMPLETE(play_and_get_digits)",
        "CHANNEL_UNPARK",
        "CHANNEL_EXECUTE_COMPLETE(socket)",
    ]
    client.sock.close()
    assert finish(greenlet).transferred_to == "9000 XML default"


def test_static_async_true_is_queued_until_an_inline_app_drains_it() -> None:
    peer, client, greenlet = connected(CallScript(mode="static", app_seconds={"playback": 0.1}))
    queued = commands.sendmsg("execute", app="set", arg="x=1", extra=[("async", "true")], event_uuid="Q")
    assert client.command(queued).reply_text == "+OK"
    assert client.quiet(0.1), "nothing drains the queue of a static socket by itself"
    assert "x" not in peer.record.variables
    client.send(commands.execute("playback", "a.wav", event_lock=False, event_uuid="P"))
    labels = events_until(client, "CHANNEL_EXECUTE_COMPLETE(playback)")
    assert labels == [
        "reply:+OK",
        "CHANNEL_EXECUTE(playback)",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_EXECUTE(set)",
        "CHANNEL_EXECUTE_COMPLETE(set)",
        "CHANNEL_EXECUTE_COMPLETE(playback)",
    ]
    client.sock.close()
    assert finish(greenlet).variables["x"] == "1"


def test_event_lock_holds_a_queued_hangup() -> None:
    _peer, client, greenlet = connected(CallScript(app_seconds={"playback": 0.2}))
    client.send(commands.execute("answer"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(answer)")
    began = time.monotonic()
    client.send(commands.execute("playback", "a.wav", event_lock=True), commands.hangup())
    labels = client.labels_until_eof()
    assert labels[:5] == [
        "reply:+OK",
        "reply:+OK",
        "CHANNEL_EXECUTE(playback)",
        "CHANNEL_EXECUTE_COMPLETE(playback)",
        "CHANNEL_HANGUP",
    ]
    assert time.monotonic() - began >= 0.18
    finish(greenlet)


def test_safety_timeout_ends_a_forgotten_call() -> None:
    _peer, client, greenlet = connected(safety_timeout=0.3)
    client.send(commands.linger(), commands.execute("park"))
    labels = client.labels_until_eof()
    assert labels[:4] == ["reply:+OK will linger", "reply:+OK", "CHANNEL_EXECUTE(park)", "CHANNEL_PARK"]
    assert labels[4:] == [
        "CHANNEL_HANGUP",
        "CHANNEL_UNPARK",
        "CHANNEL_EXECUTE_COMPLETE(park)",
        *HANGUP_SEQUENCE[1:],
        "linger-notice",
        "final-notice",
        "EOF",
    ]
    record = finish(greenlet)
    assert record.hung_up_by == "caller" and any("safety_timeout" in e for e in record.protocol_errors)
