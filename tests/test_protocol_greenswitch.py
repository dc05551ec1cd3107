"""Regression tests for the greenswitch 0.0.19 reader defects G1-G7 (spec 7.1).

Each test feeds the input that breaks greenswitch to our codec and shows it is handled. Where it is
cheap, the same bytes are also run through greenswitch itself (``greenswitch.esl``, pure parsing, no
sockets) to prove the input really triggers the defect, so the test cannot pass vacuously.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from transcripts import byte_by_byte, frames_of, load, parse

from esl_app.protocol import FrameKind, Parser, ProtocolError, parse_plain_event, switch

REPLY_OK = b"Content-Type: command/reply\nReply-Text: +OK\n\n"


def greenswitch():
    return pytest.importorskip("greenswitch.esl")


class _File(io.BytesIO):
    """A socket file for greenswitch's reader; ``read`` gives up after many calls at EOF."""

    def __init__(self, data: bytes, max_empty_reads: int = 50) -> None:
        super().__init__(data)
        self.empty_reads = 0
        self.max_empty_reads = max_empty_reads

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data:
            self.empty_reads += 1
            if self.empty_reads >= self.max_empty_reads:
                raise TimeoutError("greenswitch kept reading at EOF")
        return data


def run_greenswitch(data: bytes, pending_commands: int = 0):
    """Drive greenswitch's receive loop over ``data``; returns (protocol, replies, events)."""
    esl = greenswitch()
    from gevent.event import AsyncResult

    protocol = esl.ESLProtocol()
    protocol.sock_file = _File(data)
    protocol.sock = SimpleNamespace(close=lambda: None)
    protocol.connected = True
    replies = [AsyncResult() for _ in range(pending_commands)]
    protocol._commands_sent = list(replies)
    protocol.receive_events()
    events = []
    while not protocol._esl_event_queue.empty():
        events.append(protocol._esl_event_queue.get_nowait())
    return protocol, replies, events


# --------------------------------------------------------------------------------------------------


def test_greenswitch_G1_encoded_newline_and_colon_stay_one_header_value() -> None:
    """G1: greenswitch URL-decodes the whole text, then splits lines: %0A becomes a line break and a
    decoded ': ' a bogus header. Names and bodies must not be decoded either."""
    payload = (
        b"Event-Name: CUSTOM\n"
        b"variable_sip_h_X-Note: first%0AFake-Header: injected%0D%0Aend\n"
        b"X%2DName: not%20decoded%20name\n"
        b"X-Sep: a\xe2\x80\xa8b%E2%80%A8c\x1cd\n"  # raw and encoded Unicode separators
        b"Content-Length: 9\n\n"
        b"100%25 ok"
    )
    event = parse_plain_event(payload)
    assert event["variable_sip_h_X-Note"] == "first\nFake-Header: injected\r\nend"
    assert "Fake-Header" not in event
    assert event["X%2DName"] == "not decoded name"  # the name is never decoded
    assert "X-Name" not in event
    assert event["X-Sep"] == "a\u2028b\u2028c\x1cd"  # split on LF only, never splitlines()
    assert event.body == "100%25 ok"  # the body is never decoded
    assert [name for name in event.headers] == [
        "Event-Name",
        "variable_sip_h_X-Note",
        "X%2DName",
        "X-Sep",
        "Content-Length",
    ]
    # greenswitch on the same text
    broken = greenswitch().ESLEvent(payload.decode("utf-8")).headers
    assert "Fake-Header" in broken
    assert broken["variable_sip_h_X-Note"] == "first"


def test_greenswitch_G2_inner_body_is_separate_and_creates_no_header() -> None:
    """G2: greenswitch has no inner body: body lines are glued to the previous header (the inner
    Content-Length) and a body line with ': ' becomes a phantom header."""
    conn = load("15_inbound_filters_log_sendevent_parsing")["inbound"]
    custom = next(f for f in frames_of(conn.capture, conn.name) if f.is_event and f.event().name == "CUSTOM")
    event = custom.event()
    assert event.body == "line 1\nline 2: with colon\n"
    assert "line 2" not in event.headers  # no phantom header
    assert event.headers.get_all("Content-Length") == ["26", "26"]

    job = next(
        f.event()
        for f in frames_of("06_api_bgapi_over_outbound", "outbound#5")
        if f.is_event and f.event().name == "BACKGROUND_JOB" and f.event()["Job-UUID"].startswith("2222")
    )
    assert job.body == "0000000000" and job["Content-Length"] == "10"

    built = switch.event_plain(
        [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", "j")], "+OK done\nresult: 42\nEvent-Name: FAKE\n"
    )
    (frame,) = parse(byte_by_byte(built))
    parsed = frame.event()
    assert parsed.name == "BACKGROUND_JOB" and parsed.headers.get_all("Event-Name") == ["BACKGROUND_JOB"]
    assert "result" not in parsed and parsed.body == "+OK done\nresult: 42\nEvent-Name: FAKE\n"

    broken = greenswitch().ESLEvent(custom.body.decode()).headers
    assert broken["line 2"] == "with colon"
    assert "line 1" in broken["Content-Length"]


def test_greenswitch_G3_inner_headers_do_not_overwrite_the_envelope() -> None:
    """G3: greenswitch parses the inner event into the envelope's dict: the inner content-type and
    content-length overwrite the envelope's, duplicates keep only the last, ARRAY:: is not split."""
    payload = (
        b"Event-Name: CHANNEL_HANGUP_COMPLETE\nHangup-Cause: NORMAL_CLEARING\ncontent-type: text/plain\n"
        b"Content-Type: x/inner\nHangup-Cause: USER_BUSY\nX-List: ARRAY%3A%3Aa%7C%3Ab\n\n"
    )
    data = f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload
    (frame,) = parse(byte_by_byte(data))
    assert frame.kind is FrameKind.EVENT_PLAIN
    assert frame.headers.items() == [("Content-Length", str(len(payload))), ("Content-Type", "text/event-plain")]
    event = frame.event()
    assert event.headers.get_all("Hangup-Cause") == ["NORMAL_CLEARING", "USER_BUSY"]
    assert event["Hangup-Cause"] == "NORMAL_CLEARING"  # first occurrence, as the C client
    assert event.headers.get_all("content-type") == ["text/plain", "x/inner"]
    assert event.headers.get_array("X-List") == ["a", "b"]
    # the real sendevent capture: inner lower-case content-type/content-length, envelope intact
    custom = next(
        f
        for f in frames_of("15_inbound_filters_log_sendevent_parsing", "inbound")
        if f.is_event and f.event().name == "CUSTOM"
    )
    assert custom.content_type == "text/event-plain" and custom.headers["Content-Length"] == "664"

    _, _, events = run_greenswitch(data)
    (broken,) = events
    assert broken.headers["Content-Type"] == "x/inner"  # envelope overwritten
    assert broken.headers["Hangup-Cause"] == "USER_BUSY"  # first value lost
    assert broken.headers["X-List"] == "ARRAY::a|:b"


def test_greenswitch_G4_non_utf8_header_bytes_and_crlf_blocks() -> None:
    """G4: greenswitch reads lines with strict UTF-8 inside a catch-all that closes the connection,
    and a CRLF peer never ends a block."""
    getvar = b"Content-Type: command/reply\nReply-Text: caf\xe9 \xff\n\n"
    data = getvar + REPLY_OK
    reply, ok = parse(byte_by_byte(data))
    assert reply.reply_text.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"
    assert ok.reply_text == "+OK"

    crlf = b"Content-Type: auth/request\r\n\r\nContent-Type: command/reply\r\nReply-Text: +OK accepted\r\n\r\n"
    auth, accepted = parse(byte_by_byte(crlf))
    assert auth.kind is FrameKind.AUTH and accepted.reply_text == "+OK accepted"

    protocol, replies, _ = run_greenswitch(data, pending_commands=2)
    assert not protocol.connected  # one bad byte counted as a disconnect
    assert not replies[0].ready() and not replies[1].ready()
    protocol, _, _ = run_greenswitch(crlf, pending_commands=1)
    assert not protocol._auth_request_event.is_set()  # the block never ended


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # greenswitch's logging.warn
def test_greenswitch_G5_non_utf8_bodies_and_eof_mid_body() -> None:
    """G5: greenswitch decodes bodies with strict UTF-8 (an exception that kills its reader), and at
    EOF inside a body it keeps reading forever."""
    api = switch.api_response(b"-ERR \xff\xfe bad\n")
    payload = b'{"Event-Name":"CUSTOM","Caller-Caller-ID-Name":"J\xf6hn","_body":"\xff"}'
    json_event = f"Content-Length: {len(payload)}\nContent-Type: text/event-json\n\n".encode() + payload
    data = api + json_event + REPLY_OK
    api_frame, json_frame, ok = parse(byte_by_byte(data))
    assert api_frame.body == b"-ERR \xff\xfe bad\n" and not api_frame.ok
    event = json_frame.event()
    assert event["Caller-Caller-ID-Name"].encode("utf-8", "surrogateescape") == b"J\xf6hn"
    assert event.body.encode("utf-8", "surrogateescape") == b"\xff"
    assert ok.reply_text == "+OK"

    truncated = b"Content-Type: api/response\nContent-Length: 100\n\nonly part of it"
    parser = Parser()
    assert parser.feed(truncated) == []
    with pytest.raises(ProtocolError):
        parser.eof()  # the caller fails its pending commands instead of waiting forever

    with pytest.raises(UnicodeDecodeError):
        run_greenswitch(api, pending_commands=1)
    with pytest.raises(TimeoutError, match="kept reading at EOF"):
        run_greenswitch(truncated, pending_commands=1)


def test_greenswitch_G6_disconnect_notice_body_is_consumed() -> None:
    """G6: greenswitch does not read the notice's 67-byte body, so its text becomes the header
    block of a phantom frame; harmless only because EOF normally follows."""
    event = switch.event_plain([("Event-Name", "CHANNEL_HANGUP_COMPLETE"), ("Unique-ID", "u")])
    data = switch.final_notice("u") + event + switch.linger_notice("u", "loopback/x", 5) + REPLY_OK
    notice, hangup, linger, ok = parse(byte_by_byte(data))
    assert notice.is_final_notice and len(notice.body) == 67
    assert notice.body == b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    assert hangup.event().name == "CHANNEL_HANGUP_COMPLETE"
    assert linger.is_linger_notice and linger.body == b""
    assert ok.reply_text == "+OK"
    # every captured final notice is followed by EOF and fully consumed
    for capture, conn in (
        ("08_errors", "inbound-badpw"),
        ("13_outbound_gating_first_command_and_timeout", "outbound#3"),
    ):
        parser = Parser()
        frames = [f for read in load(capture)[conn].reads for f in parser.feed(read)]
        assert frames[-1].is_final_notice and parser.buffered == 0
        parser.eof()

    with pytest.raises(AttributeError):  # the goodbye text parsed as headers
        run_greenswitch(switch.final_notice("u") + event)


def test_greenswitch_G7_json_and_xml_events_are_parsed() -> None:
    """G7: greenswitch feeds JSON and XML bodies to its plain parser."""
    frames = frames_of("07_event_formats_plain_json_xml_heartbeat", "inbound")
    json_frame = next(f for f in frames if f.kind is FrameKind.EVENT_JSON)
    xml_frame = next(f for f in frames if f.kind is FrameKind.EVENT_XML)
    for frame, fmt in ((json_frame, "json"), (xml_frame, "xml")):
        event = frame.event()
        assert event.format == fmt
        assert event.name == "CHANNEL_CREATE"
        assert event["FreeSWITCH-IPv6"] == "fd00::2"
        assert event["Channel-Name"] == "loopback/parkit-a"
        assert len(event.headers) == 71
    built = switch.event_xml([("Event-Name", "CUSTOM"), ("X-Note", "a <b> & c")], "body <x> & y\n")
    (frame,) = parse(byte_by_byte(built))
    event = frame.event()
    assert event["X-Note"] == "a <b> & c" and event.body == "body <x> & y\n"

    with pytest.raises(AttributeError):  # a one-line JSON object has no ': ' to split at
        run_greenswitch(json_frame.to_bytes())
