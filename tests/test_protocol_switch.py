"""FreeSWITCH's side of the codec (``switch``): what the fake peer writes reads back through ``Parser``."""

from __future__ import annotations

import json

from transcripts import byte_by_byte, parse

from esl_app.protocol import FrameKind, switch
from esl_app.protocol.switch import FINAL_NOTICE_BODY, REJECTION_BODY

UUID = "014cfed0-74be-4ac4-bfba-fc2dc5a444f9"
CHANNEL = [
    ("Event-Name", "CHANNEL_EXECUTE_COMPLETE"),
    ("Unique-ID", UUID),
    ("Caller-Caller-ID-Name", "Jöhn Smith"),
    ("Application-Data", "tone_stream://%(300,0,440)"),
    ("Application-Response", "FILE PLAYED"),
    ("variable_multi", "line1\nline2: x\r\n+%"),
    ("Hangup-Cause", "NORMAL_CLEARING"),
    ("Hangup-Cause", "USER_BUSY"),
    ("variable_empty", ""),
]


def test_event_plain_round_trip() -> None:
    data = switch.event_plain(CHANNEL, "result: 42\nü")
    assert data.startswith(b"Content-Length: ")
    assert b"Caller-Caller-ID-Name: J%C3%B6hn%20Smith\n" in data
    assert b"Application-Data: tone_stream%3A//%25(300,0,440)\n" in data
    assert b"variable_multi: line1%0Aline2%3A%20x%0D%0A%2B%25\n" in data
    assert data.endswith("Content-Length: 13\n\nresult: 42\nü".encode())
    (frame,) = parse(byte_by_byte(data))
    assert frame.kind is FrameKind.EVENT_PLAIN and frame.is_event
    event = frame.event()
    assert event.headers.items() == [*CHANNEL, ("Content-Length", "13")]
    assert event.body == "result: 42\nü"
    assert event.format == "plain"


def test_event_plain_without_body_ends_with_a_blank_line() -> None:
    data = switch.event_plain([("Event-Name", "HEARTBEAT"), ("Event-Info", "System Ready")])
    assert data.endswith(b"Event-Info: System%20Ready\n\n")
    (frame,) = parse([data])
    assert frame.event().headers.items() == [("Event-Name", "HEARTBEAT"), ("Event-Info", "System Ready")]
    assert switch.serialize_event([("A", "b c")]) == b"A: b%20c\n\n"
    assert switch.serialize_event([("A", "b")], b"\xff") == b"A: b\nContent-Length: 1\n\n\xff"


def test_event_json_round_trip() -> None:
    data = switch.event_json(CHANNEL, 'body "q"\n/ü')
    (frame,) = parse(byte_by_byte(data))
    assert frame.kind is FrameKind.EVENT_JSON
    assert not frame.body.endswith(b"\n")
    obj = json.loads(frame.body)
    assert obj["Hangup-Cause"] == ["NORMAL_CLEARING", "USER_BUSY"]  # duplicates become an array
    assert obj["Content-Length"] == str(len('body "q"\n/ü'.encode()))
    assert b"J\xc3\xb6hn Smith" in frame.body  # raw UTF-8, not \u escapes
    assert b'body \\"q\\"\\n/' in frame.body  # '/' is not escaped
    event = frame.event()
    assert event.format == "json"
    assert event.body == 'body "q"\n/ü'
    for name, _ in CHANNEL:
        assert event.headers.get_all(name) == [v for n, v in CHANNEL if n == name]


def test_event_xml_round_trip() -> None:
    data = switch.event_xml(CHANNEL, "<b> & c\r\nü")
    (frame,) = parse(byte_by_byte(data))
    assert frame.kind is FrameKind.EVENT_XML
    assert frame.body.startswith(b"<event>\n  <headers>\n    <Event-Name>CHANNEL_EXECUTE_COMPLETE</Event-Name>\n")
    assert b"    <Caller-Caller-ID-Name>J%C3%B6hn%20Smith</Caller-Caller-ID-Name>\n" in frame.body
    assert frame.body.endswith(b"  <body>&lt;b&gt; &amp; c&#xD;\n\xc3\xbc</body>\n</event>\n")
    event = frame.event()
    assert event.format == "xml"
    assert event.headers.items() == [*CHANNEL, ("Content-Length", str(len("<b> & c\r\nü".encode())))]
    assert event.body == "<b> & c\r\nü"
    plain = switch.event_xml([("Event-Name", "HEARTBEAT")])
    assert plain.endswith(b"\n\n<event>\n  <headers>\n    <Event-Name>HEARTBEAT</Event-Name>\n  </headers>\n</event>\n")


def test_connect_reply_round_trip() -> None:
    data = switch.connect_reply(CHANNEL[:-3], mode="static", full=False)
    assert b"Content-Length" not in data
    assert data.endswith(
        b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: static\nControl: single-channel\n\n"
    )
    (frame,) = parse(byte_by_byte(data))
    assert frame.is_connect_reply and frame.kind is FrameKind.REPLY
    assert frame.headers.items() == [
        *CHANNEL[:-3],
        ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK\n"),
        ("Socket-Mode", "static"),
        ("Control", "single-channel"),
    ]
    assert frame.to_bytes() == data
    event = frame.event()
    assert event.name == "CHANNEL_EXECUTE_COMPLETE" and event.unique_id == UUID
    full = parse([switch.connect_reply([("Event-Name", "CHANNEL_DATA")])])[0]
    assert full.headers["Socket-Mode"] == "async" and full.headers["Control"] == "full"


def test_final_notice_round_trip() -> None:
    bound = switch.final_notice(UUID)
    assert bound == (
        b"Content-Type: text/disconnect-notice\n"
        b"Controlled-Session-UUID: " + UUID.encode() + b"\n"
        b"Content-Disposition: disconnect\n"
        b"Content-Length: 67\n\n" + FINAL_NOTICE_BODY
    )
    unbound = switch.final_notice()
    assert unbound == b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n" + FINAL_NOTICE_BODY
    frames = parse(byte_by_byte(bound + unbound))
    assert [f.is_final_notice for f in frames] == [True, True]
    assert [len(f.body) for f in frames] == [67, 67]
    assert frames[0].headers["Controlled-Session-UUID"] == UUID
    assert "Content-Disposition" not in frames[1].headers


def test_linger_notice_round_trip() -> None:
    data = switch.linger_notice(UUID, "sofia/internal/Jöhn@x", 30)
    assert data.endswith(b"Channel-Name: sofia/internal/J\xc3\xb6hn@x\nLinger-Time: 30\nContent-Length: 0\n\n")
    (frame,) = parse(byte_by_byte(data + switch.auth_request()))[:1]
    assert frame.is_linger_notice and not frame.is_final_notice and frame.body == b""
    assert frame.headers["Channel-Name"] == "sofia/internal/Jöhn@x"  # raw, not encoded
    assert frame.headers["Linger-Time"] == "30"
    assert parse([switch.linger_notice(UUID, "loopback/a")])[0].headers["Linger-Time"] == "-1"


def test_small_frames() -> None:
    reply, bgapi, api, auth, rejection = parse(
        [switch.reply("+OK")
        + switch.reply("+OK Job-UUID: j", ("Job-UUID", "j"))
        + switch.api_response("\n0 total.\n")
        + switch.auth_request()
        + switch.rude_rejection()]
    )
    assert reply.headers.items() == [("Content-Type", "command/reply"), ("Reply-Text", "+OK")]
    assert bgapi.headers["Job-UUID"] == "j"
    assert api.kind is FrameKind.API and api.body == b"\n0 total.\n"
    assert auth.kind is FrameKind.AUTH and auth.body == b""
    assert rejection.kind is FrameKind.REJECTION and rejection.body == REJECTION_BODY
    assert len(REJECTION_BODY) == 24 and len(FINAL_NOTICE_BODY) == 67
