"""Synthetic inputs for the parser, the URL coding and the event payload parsers (spec 1.x, 6, App. A)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transcripts import byte_by_byte, parse, random_chunks, split_everywhere

from esl_app.protocol import (
    Event,
    Frame,
    FrameKind,
    Headers,
    Parser,
    ProtocolError,
    decode_value,
    encode_value,
    parse_json_event,
    parse_plain_event,
    parse_xml_event,
    switch,
)
from esl_app.protocol.parser import MAX_BODY

REPLY_OK = b"Content-Type: command/reply\nReply-Text: +OK\n\n"


def assert_split_invariant(data: bytes) -> list[Frame]:
    """Every two-piece split, byte by byte and random chunks all give the frames of one feed."""
    whole = parse([data])
    for head, tail in split_everywhere(data):
        assert parse([head, tail]) == whole, (head, tail)
    assert parse(byte_by_byte(data)) == whole
    for seed in range(3):
        assert parse(random_chunks(data, seed, max_size=16)) == whole
    return whole


# --------------------------------------------------------------------------------------------------
# Bytes, UTF-8 and splits
# --------------------------------------------------------------------------------------------------


def test_split_inside_a_multibyte_character_of_a_body() -> None:
    body = "Jöhn → 😀 ✓\n".encode()
    data = switch.api_response(body) + REPLY_OK
    api, reply = assert_split_invariant(data)
    assert api.body == body and api.reply_text == "Jöhn → 😀 ✓\n"
    assert reply.reply_text == "+OK"


def test_split_inside_a_multibyte_character_of_a_header_value() -> None:
    # raw (getvar reply) and URL-encoded (connect reply) values
    raw = switch.reply("Jöhn 😀 Smith")
    connect = switch.connect_reply([("Event-Name", "CHANNEL_DATA"), ("Caller-Caller-ID-Name", "Jöhn 😀")])
    reply, connect_frame = assert_split_invariant(raw + connect)
    assert reply.reply_text == "Jöhn 😀 Smith"
    assert connect_frame.is_connect_reply
    assert connect_frame.headers["Caller-Caller-ID-Name"] == "Jöhn 😀"
    assert b"J%C3%B6hn%20%F0%9F%98%80" in connect


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80abc", b"ok\xfe\xff"])
def test_invalid_utf8_in_api_body_and_reply_text_is_kept_losslessly(bad: bytes) -> None:
    data = (
        b"Content-Type: command/reply\nReply-Text: value " + bad + b" end\n\n"
        + switch.api_response(b"-ERR " + bad + b"\n")
        + REPLY_OK
    )
    reply, api, ok = assert_split_invariant(data)
    assert reply.reply_text.encode("utf-8", "surrogateescape") == b"value " + bad + b" end"
    assert api.reply_text.encode("utf-8", "surrogateescape") == b"-ERR " + bad + b"\n"
    assert not api.ok
    assert ok.reply_text == "+OK"
    assert b"".join(f.to_bytes() for f in (reply, api, ok)) == data


def test_invalid_utf8_in_log_data_and_event_bodies() -> None:
    log = b"Content-Type: log/data\nContent-Length: 4\nUser-Data: \xff\n\n\xfe\xffab"
    event = switch.event_plain([("Event-Name", "MESSAGE"), ("from", "J\xf6hn")], b"\xff\xfe body")
    log_frame, event_frame = assert_split_invariant(log + event)
    assert log_frame.kind is FrameKind.LOG and log_frame.body == b"\xfe\xffab"
    assert log_frame.headers["User-Data"].encode("utf-8", "surrogateescape") == b"\xff"
    parsed = event_frame.event()
    assert parsed.body.encode("utf-8", "surrogateescape") == b"\xff\xfe body"
    assert parsed["from"] == "J\xf6hn"


def test_crlf_framing_is_accepted() -> None:
    data = (
        b"Content-Type: auth/request\r\n\r\n"
        b"Content-Type: command/reply\r\nReply-Text: +OK accepted\r\n\r\n"
        b"Content-Type: api/response\r\nContent-Length: 5\r\n\r\nab\r\nc"
        b"Content-Type: command/reply\r\nReply-Text: +OK\r\n\n"  # mixed: CRLF line, LF blank line
    )
    auth, accepted, api, ok = assert_split_invariant(data)
    assert auth.kind is FrameKind.AUTH
    assert accepted.headers.items() == [("Content-Type", "command/reply"), ("Reply-Text", "+OK accepted")]
    assert api.body == b"ab\r\nc"
    assert ok.reply_text == "+OK"


def test_blank_lines_between_frames_are_skipped() -> None:
    data = b"\n\r\n" + REPLY_OK + b"\n\n\n" + switch.api_response("x") + b"\r\n\r\n\n" + REPLY_OK + b"\n"
    frames = assert_split_invariant(data)
    assert [f.kind for f in frames] == [FrameKind.REPLY, FrameKind.API, FrameKind.REPLY]
    assert frames[1].body == b"x"


def test_a_body_starting_with_newlines_is_not_skipped() -> None:
    data = switch.api_response("\n\n0 total.\n") + switch.api_response("\n")
    first, second = assert_split_invariant(data)
    assert first.body == b"\n\n0 total.\n" and second.body == b"\n"


def test_duplicate_headers_are_kept_in_order() -> None:
    data = b"Content-Type: command/reply\nReply-Text: +OK\nX-Dup: one\nx-dup: two\nX-DUP: three\n\n"
    (frame,) = assert_split_invariant(data)
    assert frame.headers.get_all("X-Dup") == ["one", "two", "three"]
    assert frame.headers["x-dup"] == "one"
    assert frame.headers.get_last("X-Dup") == "three"
    # to_dict keeps the first occurrence of each exact name
    assert frame.headers.to_dict()["X-Dup"] == "one" and frame.headers.to_dict()["x-dup"] == "two"


def test_header_line_details() -> None:
    data = (
        b"Content-Type: command/reply\n"
        b"Reply-Text:    +OK spaces skipped, trailing kept  \n"
        b"Empty: \n"
        b"NoSpace:value\n"
        b"Colons: a: b: c\n"
        b"no colon on this line\n"
        b": no name\n\n"
    )
    (frame,) = assert_split_invariant(data)
    assert frame.headers.items() == [
        ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK spaces skipped, trailing kept  "),
        ("Empty", ""),
        ("NoSpace", "value"),
        ("Colons", "a: b: c"),
    ]


def test_getvar_reply_with_a_second_line_without_colon() -> None:
    # spec 1.2: getvar of a two-line value; the second line has raw UTF-8, a tab, quotes, % and +
    data = (
        b"Content-Type: command/reply\n"
        b'Reply-Text: line one\nline two \xc3\xbc\ttab "q" 100% a+b\n\n' + REPLY_OK
    )
    reply, ok = assert_split_invariant(data)
    assert reply.headers.items() == [("Content-Type", "command/reply"), ("Reply-Text", "line one")]
    assert not reply.is_connect_reply
    assert ok.reply_text == "+OK"


def test_only_the_connect_reply_is_url_decoded() -> None:
    raw = assert_split_invariant(switch.reply("a%41b %2BOK%0A 100%"))[0]
    assert raw.reply_text == "a%41b %2BOK%0A 100%"  # raw replies are never decoded
    # a getvar value whose second line looks like an event header does not make it a connect reply
    (tricky,) = parse([b"Content-Type: command/reply\nReply-Text: x%41\nEvent-Name: CHANNEL_DATA\n\n"])
    assert not tricky.is_connect_reply and tricky.reply_text == "x%41"
    with pytest.raises(ProtocolError):
        tricky.event()
    connect = switch.connect_reply([("Event-Name", "CHANNEL_DATA"), ("variable_x", "a%41 b\nc")])
    (frame,) = parse([connect])
    assert frame.is_connect_reply
    assert frame.headers["variable_x"] == "aA b\nc"  # upper-case %41 passed through, then decoded
    assert frame.headers["Reply-Text"] == "+OK\n"
    assert parse([frame.to_bytes()])[0].headers["variable_x"] == "aA b\nc"  # irreversible (spec 1.5)
    reversible = switch.connect_reply([("Event-Name", "CHANNEL_DATA"), ("variable_x", "a%zz b\nc+d")])
    (frame,) = parse([reversible])
    assert frame.headers["variable_x"] == "a%zz b\nc+d"
    assert frame.to_bytes() == reversible
    assert parse([frame.to_bytes()]) == [frame]


def test_unknown_content_type_with_a_body_is_consumed() -> None:
    data = b"Content-Type: text/x-future\nContent-Length: 4\n\n\n\nab" + REPLY_OK
    unknown, ok = assert_split_invariant(data)
    assert unknown.kind is FrameKind.UNKNOWN and unknown.body == b"\n\nab"
    assert ok.kind is FrameKind.REPLY
    (no_type,) = parse([b"X-Header: 1\n\n"])
    assert no_type.kind is FrameKind.UNKNOWN and no_type.content_type == ""


def test_content_type_is_matched_case_insensitively_wherever_it_is() -> None:
    (frame,) = parse([b"Content-Length: 2\ncontent-TYPE: API/Response\n\nok"])
    assert frame.kind is FrameKind.API and frame.body == b"ok"


def test_large_header_block_without_content_length() -> None:
    pairs = [("Event-Name", "CHANNEL_DATA")] + [(f"variable_v{i}", "x" * 200 + " :%") for i in range(1000)]
    data = switch.connect_reply(pairs)
    assert len(data) > 200_000
    whole = parse([data])
    assert parse(random_chunks(data, 7)) == whole
    assert parse([data[i : i + 1000] for i in range(0, len(data), 1000)]) == whole
    (frame,) = whole
    assert frame.is_connect_reply and len(frame.headers) == 1005
    assert frame.headers["variable_v999"] == "x" * 200 + " :%"


def test_event_of_tens_of_kilobytes() -> None:
    headers = [("Event-Name", "CHANNEL_HANGUP_COMPLETE")] + [(f"variable_{i}", "é" * 50) for i in range(500)]
    body = "<cdr>" + "x" * 40_000 + "</cdr>\n"
    data = switch.event_plain(headers, body)
    (frame,) = parse(random_chunks(data, 3))
    event = frame.event()
    assert event.body == body and event["variable_499"] == "é" * 50


# --------------------------------------------------------------------------------------------------
# URL coding and arrays
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        ("%2BOK%0A", "+OK\n"),
        ("a%09b", "a\tb"),
        ("%22Outbound%20Call%22%20%3Cesltest%3E", '"Outbound Call" <esltest>'),
        ("%0D%0A", "\r\n"),
        ("%3a%3A%2b", "::+"),  # lower-case hex too
        ("a+b", "a+b"),  # '+' stays '+', never a space
        ("100%zz", "100%zz"),  # not hex: literal
        ("%", "%"),
        ("50%", "50%"),
        ("%4", "%4"),
        ("%%41", "%A"),
        ("J%C3%B6hn%20Smith", "Jöhn Smith"),
        ("%F0%9F%98%80", "😀"),
        ("", ""),
        ("plain", "plain"),
    ],
)
def test_decode_value(wire: str, value: str) -> None:
    assert decode_value(wire) == value
    assert decode_value(wire.encode()) == value


def test_decode_value_invalid_utf8_is_lossless() -> None:
    value = decode_value("a%FFb%C3")
    assert value == "a\udcffb\udcc3"
    assert value.encode("utf-8", "surrogateescape") == b"a\xffb\xc3"
    assert encode_value(value) == "a%FFb%C3"


def test_decoding_is_per_value_after_splitting_lines() -> None:
    payload = b"Event-Name: CUSTOM\nX-Value: line1%0AFake-Header: injected%0D%0Aline3\nX-Other: 1\n\n"
    event = parse_plain_event(payload)
    assert event.headers.items() == [
        ("Event-Name", "CUSTOM"),
        ("X-Value", "line1\nFake-Header: injected\r\nline3"),
        ("X-Other", "1"),
    ]
    assert "Fake-Header" not in event


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("+OK\n", "%2BOK%0A"),
        ("fd00::2", "fd00%3A%3A2"),
        ("2026-11-26 03:42:47", "2026-11-26%2003%3A42%3A47"),
        ("Jöhn Smith", "J%C3%B6hn%20Smith"),
        ("a b&c=d 100% x+y", "a%20b%26c%3Dd%20100%25%20x%2By"),
        ("tone_stream://%(300,0,440)", "tone_stream%3A//%25(300,0,440)"),
        ("esl::probe", "esl%3A%3Aprobe"),
        ("\t", "%09"),
        ('"', "%22"),
        # irreversible: an upper-case %XX already in the value passes through (spec 1.5)
        ("a%20b 100%25", "a%20b%20100%25"),
        ("a b%20c", "a%20b%20c"),
        ("%2b", "%252b"),  # lower-case hex is not passed through
        ("100%", "100%25"),
        ("%4", "%254"),
    ],
)
def test_encode_value_spec_examples(value: str, wire: str) -> None:
    assert encode_value(value) == wire
    assert encode_value(value.encode()) == wire


def test_encode_value_character_classes() -> None:
    unsafe = "\r\n #%&+:;<=>?@[\\]^`{|}\""
    assert len(unsafe) == 23
    for char in unsafe:
        assert encode_value(char) == f"%{ord(char):02X}", char
    for char in "!$'()*,-./_~azAZ09":
        assert encode_value(char) == char
    for byte in [*range(0x20), 0x7F, 0x80, 0xFF]:
        assert encode_value(bytes([byte])) == f"%{byte:02X}"
    assert encode_value("a%20b") == "a%20b" and decode_value(encode_value("a%20b")) == "a b"


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_encode_then_decode_round_trips_unless_percent_hex_is_present(value: str) -> None:
    wire = encode_value(value)
    assert wire.isascii() and "\n" not in wire and " " not in wire and "+" not in wire
    if not re.search("%[0-9A-F]{2}", value):
        assert decode_value(wire) == value


def test_array_values() -> None:
    payload = b"Event-Name: CUSTOM\nX-List: ARRAY%3A%3Aone%7C%3Atwo%20words%7C%3Athree\nX-One: single\n\n"
    event = parse_plain_event(payload)
    assert event["X-List"] == "ARRAY::one|:two words|:three"
    assert event.headers.get_array("X-List") == ["one", "two words", "three"]
    assert event.headers.get_array("x-one") == ["single"]
    assert event.headers.get_array("missing") == []
    assert Headers([("A", "ARRAY::")]).get_array("a") == [""]


def test_headers_multimap_api() -> None:
    headers = Headers([("A", "1"), ("b", "2"), ("a", "3")])
    assert headers["a"] == "1" and headers.get("A") == "1" and headers.get_last("a") == "3"
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    assert headers.get_all("A") == ["1", "3"] and headers.get_all("x") == []
    assert "B" in headers and "c" not in headers and 1 not in headers
    assert list(headers) == ["A", "b", "a"] and len(headers) == 3
    with pytest.raises(KeyError):
        headers["missing"]
    assert headers == Headers([("A", "1"), ("b", "2"), ("a", "3")])
    assert headers != Headers([("A", "1")])


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [b"abc", b"", b"1_0", b"+5", b"0x10", b"5 5", b"\xef\xbc\x95", b"1e3", b"-1", b"-0", b" -5 "],
)
def test_bad_content_length_is_a_protocol_error(length: bytes) -> None:
    data = b"Content-Type: api/response\nContent-Length: " + length + b"\n\nbody"
    with pytest.raises(ProtocolError, match="Content-Length"):
        Parser().feed(data)
    parser = Parser()
    with pytest.raises(ProtocolError):
        for byte in byte_by_byte(data):
            parser.feed(byte)


def test_content_length_with_surrounding_spaces_or_zero() -> None:
    (frame,) = parse([b"Content-Type: api/response\nContent-Length:  3 \n\nabc"])
    assert frame.body == b"abc"
    zero, ok = parse([b"Content-Type: text/disconnect-notice\nContent-Length: 0\n\n" + REPLY_OK])
    assert zero.body == b"" and ok.kind is FrameKind.REPLY


def test_huge_content_length_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        Parser().feed(f"Content-Type: api/response\nContent-Length: {MAX_BODY + 1}\n\n".encode())
    with pytest.raises(ProtocolError, match="exceeds"):
        Parser(max_body=100).feed(b"Content-Type: api/response\nContent-Length: 101\n\n")
    (frame,) = Parser(max_body=100).feed(b"Content-Type: api/response\nContent-Length: 100\n\n" + b"x" * 100)
    assert len(frame.body) == 100


def test_over_long_header_block_is_a_protocol_error_however_it_arrives() -> None:
    limit = 1000
    line = b"Reply-Text: " + b"x" * (limit - len(b"Content-Type: command/reply\nReply-Text: ")) + b"\n"
    at_limit = b"Content-Type: command/reply\n" + line[:-1]
    assert len(at_limit) == limit
    for block, ok in ((at_limit, True), (at_limit + b"y", False)):
        data = block + b"\n\n"
        for chunks in ([data], byte_by_byte(data), random_chunks(data, 5, max_size=50)):
            parser = Parser(max_header_block=limit)
            if ok:
                frames = [f for chunk in chunks for f in parser.feed(chunk)]
                assert len(frames) == 1
            else:
                with pytest.raises(ProtocolError, match="header block"):
                    for chunk in chunks:
                        parser.feed(chunk)
    # no terminator at all: refused as soon as the limit is passed, not buffered forever
    parser = Parser(max_header_block=limit)
    with pytest.raises(ProtocolError, match="header block"):
        for _ in range(100):
            parser.feed(b"X: " + b"y" * 100 + b"\n")


def test_frames_before_a_protocol_error_are_not_lost() -> None:
    with pytest.raises(ProtocolError) as info:
        Parser().feed(REPLY_OK + switch.api_response("1") + b"Content-Type: api/response\nContent-Length: x\n\n")
    assert [f.kind for f in info.value.frames] == [FrameKind.REPLY, FrameKind.API]


def test_eof_inside_a_body_raises_protocol_error() -> None:
    parser = Parser()
    assert parser.feed(b"Content-Type: api/response\nContent-Length: 10\n\n12345") == []
    with pytest.raises(ProtocolError, match="inside"):
        parser.eof()
    parser = Parser()
    parser.feed(b"Content-Type: api/response\nContent-Length: 10\n\n")
    with pytest.raises(ProtocolError):
        parser.eof()


def test_eof_inside_a_header_block_raises_and_clean_eof_does_not() -> None:
    parser = Parser()
    parser.feed(REPLY_OK + b"Content-Type: command/re")
    with pytest.raises(ProtocolError, match="header block"):
        parser.eof()
    parser = Parser()
    parser.feed(REPLY_OK + b"Content-Type: command/reply\n")  # one LF short
    with pytest.raises(ProtocolError):
        parser.eof()
    parser = Parser()
    assert len(parser.feed(switch.final_notice("u") + b"\r\n\n")) == 1
    parser.eof()  # stray blank lines are not a half frame


# --------------------------------------------------------------------------------------------------
# Event payloads
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"Event-Name: CUSTOM\nContent-Length: 5\n\nabc",  # shorter than declared
        b"Event-Name: CUSTOM\nContent-Length: 2\n\nabc",  # longer than declared
        b"Event-Name: CUSTOM\nContent-Length: 5\n\n",  # declared, no body
        b"Event-Name: CUSTOM\nContent-Length: x\n\nabc",  # not a number
        b"Event-Name: CUSTOM\ncontent-length: 3\nContent-Length: 4\n\nabc",  # the last one counts
    ],
)
def test_event_inner_content_length_mismatch_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_plain_event(payload)
    (frame,) = parse([f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload])
    with pytest.raises(ProtocolError):
        frame.event()


@pytest.mark.parametrize("client_length", [b"0", b"-3", b"junk"])
def test_event_without_body_may_carry_a_client_length_that_read_no_body(client_length: bytes) -> None:
    # sendevent with a content-length FreeSWITCH's atoi() turns into <= 0: no body, no serializer length
    event = parse_plain_event(b"Event-Name: CUSTOM\ncontent-length: " + client_length + b"\n\n")
    assert event.body == "" and event["content-length"] == client_length.decode()


def test_body_less_event_is_read_lazily_unless_its_last_line_is_a_length() -> None:
    # switch_event_serialize writes its own Content-Length last, and only before a body: a length
    # earlier in a body-less block is a client's (sendevent) that read no body, as atoi() <= 0 or a
    # body strlen() found empty. Only the last line is looked at, not the whole ~10 kB block.
    event = parse_plain_event(b"Event-Name: CUSTOM\ncontent-length: 5\nX-Info: a%20b\n\n")
    assert event.headers._index is None  # lazy: nothing split until asked
    assert event.body == "" and event["content-length"] == "5" and event["X-Info"] == "a b"
    with pytest.raises(ProtocolError):  # the serializer's place: a length there needs its body
        parse_plain_event(b"Event-Name: CUSTOM\nX-Info: a\nContent-Length: 5\n\n")


def test_plain_event_inner_body_and_headers_stay_apart_from_the_envelope() -> None:
    payload = (
        b"Event-Name: MESSAGE\ncontent-type: text/html\nContent-Type: x/y\ncontent-length: 9\n"
        b"Content-Length: 9\n\nkey: val\n"
    )
    data = f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload
    (frame,) = parse(byte_by_byte(data))
    assert frame.kind is FrameKind.EVENT_PLAIN and frame.headers["Content-Length"] == str(len(payload))
    event = frame.event()
    assert event.body == "key: val\n" and "key" not in event
    assert event.headers.get_all("content-type") == ["text/html", "x/y"]


def test_plain_event_without_body() -> None:
    event = parse_plain_event(b"Event-Name: HEARTBEAT\nEvent-Info: System%20Ready\n\n")
    assert event.name == "HEARTBEAT" and event["Event-Info"] == "System Ready" and event.body == ""
    assert event.subclass is None and event.unique_id is None
    assert event.get("nope", "d") == "d" and event.variable("x") is None


def test_json_event_details() -> None:
    payload = (
        b'{"Event-Name":"CUSTOM","Caller-Caller-ID-Name":"J\xc3\xb6hn Smith","Bad":"\xff\xfe",'
        b'"Esc":"a\\nb\\tc\\"d\\u00e9","Url":"http://x/y","Multi":["v1","v2"],'
        b'"Content-Length":"7","_body":"b\\u00f6dy\\n"}'
    )
    event = parse_json_event(payload)
    assert event.format == "json" and event.name == "CUSTOM"
    assert event["Caller-Caller-ID-Name"] == "Jöhn Smith"
    assert event["Bad"].encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert event["Esc"] == 'a\nb\tc"dé'
    assert event["Url"] == "http://x/y"
    assert event.headers.get_all("Multi") == ["v1", "v2"]
    assert event["Content-Length"] == "7" and event.body == "bödy\n"
    assert "_body" not in event
    with pytest.raises(ProtocolError):
        parse_json_event(b'{"Event-Name": ')
    with pytest.raises(ProtocolError):
        parse_json_event(b'["not", "an", "object"]')


def test_xml_event_details() -> None:
    payload = (
        b"<event>\n  <headers>\n    <Event-Name>CUSTOM</Event-Name>\n"
        b"    <X-Value>a%20b%3Cc%3E%0A</X-Value>\n    <X-Dup>1</X-Dup>\n    <X-Dup>2</X-Dup>\n"
        b"  </headers>\n  <Content-Length>11</Content-Length>\n  <body>&lt;b&gt; &amp; \xc3\xb6</body>\n</event>\n"
    )
    event = parse_xml_event(payload)
    assert event.format == "xml" and event.name == "CUSTOM"
    assert event["X-Value"] == "a b<c>\n"
    assert event.headers.get_all("X-Dup") == ["1", "2"]
    assert event["Content-Length"] == "11"
    assert event.body == "<b> & ö"
    # invalid UTF-8 in the body does not make the event unreadable
    bad = parse_xml_event(payload.replace(b"\xc3\xb6", b"\xff\xc3\xb6\xfe"))
    assert bad.body.encode("utf-8", "surrogateescape") == b"<b> & \xff\xc3\xb6\xfe"
    assert bad["X-Value"] == "a b<c>\n"
    with pytest.raises(ProtocolError):
        parse_xml_event(b"<event><headers>")
    with pytest.raises(ProtocolError):
        parse_xml_event(b'<?xml version="1.0"?><event>\xff</event')


def test_event_from_frame_requires_an_event_frame() -> None:
    with pytest.raises(ProtocolError):
        parse([REPLY_OK])[0].event()
    with pytest.raises(ProtocolError):
        Event.from_frame(parse([switch.api_response("x")])[0])


# --------------------------------------------------------------------------------------------------
# Property: streams built by the FreeSWITCH-side writers, split anywhere
# --------------------------------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True).filter(
    lambda n: n.lower() not in ("content-length", "content-type", "_body")
)
# values as FreeSWITCH can hold them (no NUL); an upper-case %XX would not survive the encoding
TEXT_CHARS = st.characters(exclude_categories=("Cs",))
VALUES = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=40).filter(
    lambda v: not re.search("%[0-9A-F]{2}", v)
)
RAW_TEXT = st.text(st.characters(exclude_characters="\n\r\0", exclude_categories=("Cs",)), max_size=40)
BODIES = st.binary(max_size=200)


@st.composite
def wire_frames(draw: st.DrawFn) -> tuple[bytes, tuple]:
    kind = draw(st.sampled_from(["reply", "api", "plain", "json", "xml", "final", "linger", "connect"]))
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=6))
    if kind == "reply":
        text = draw(RAW_TEXT)
        return switch.reply(text), ("reply", text.lstrip(" "))
    if kind == "api":
        body = draw(BODIES)
        return switch.api_response(body), ("api", body)
    if kind == "plain":
        body = draw(BODIES)
        return switch.event_plain([("Event-Name", "CUSTOM"), *headers], body), ("event", headers, body)
    if kind == "json":
        body = draw(st.text(TEXT_CHARS, max_size=50))
        return switch.event_json([("Event-Name", "CUSTOM"), *headers], body), ("event", headers, body.encode())
    if kind == "xml":
        body = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=50))
        return switch.event_xml([("Event-Name", "CUSTOM"), *headers], body), ("event", headers, body.encode())
    if kind == "final":
        return switch.final_notice(draw(st.none() | st.uuids().map(str))), ("final",)
    if kind == "linger":
        return switch.linger_notice("u", draw(RAW_TEXT), draw(st.integers(-1, 100))), ("linger",)
    return switch.connect_reply([("Event-Name", "CHANNEL_DATA"), *headers]), ("connect", headers)


def check(frame: Frame, expected: tuple) -> None:
    tag = expected[0]
    if tag == "reply":
        assert frame.kind is FrameKind.REPLY and frame.reply_text == expected[1]
    elif tag == "api":
        assert frame.kind is FrameKind.API and frame.body == expected[1]
    elif tag == "event":
        _, headers, body = expected
        event = frame.event()
        assert event.name == "CUSTOM"
        for name, _value in headers:
            assert event.headers.get_all(name) == [v for n, v in headers if n.lower() == name.lower()]
        assert event.body.encode("utf-8", "surrogateescape") == body
    elif tag == "final":
        assert frame.is_final_notice and len(frame.body) == 67
    elif tag == "linger":
        assert frame.is_linger_notice and frame.body == b""
    else:
        assert frame.is_connect_reply and frame.headers["Reply-Text"] == "+OK\n"
        for name, _value in expected[1]:
            assert frame.headers.get_all(name) == [v for n, v in expected[1] if n.lower() == name.lower()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_frames(), min_size=1, max_size=6), st.integers(0, 2**32), st.booleans())
def test_any_stream_of_switch_frames_parses_the_same_however_split(
    items: list[tuple[bytes, tuple]], seed: int, blank_lines: bool
) -> None:
    separator = b"\n\r\n" if blank_lines else b""
    data = separator.join(wire for wire, _ in items)
    whole = parse([data])
    assert len(whole) == len(items)
    for frame, (_, expected) in zip(whole, items, strict=True):
        check(frame, expected)
    assert parse(random_chunks(data, seed, max_size=64)) == whole
    # re-serializing gives the same frames (not always the same bytes: leading spaces of raw values
    # are dropped by the reader, spec appendix A)
    assert parse([b"".join(frame.to_bytes() for frame in whole)]) == whole


def test_json_payload_of_event_json_is_compact_and_unescaped() -> None:
    data = switch.event_json([("Event-Name", "CUSTOM"), ("Name", "Jöhn/x"), ("Name", "2")], "bödy")
    (frame,) = parse([data])
    assert not frame.body.endswith(b"\n")
    assert "Jöhn/x".encode() in frame.body
    assert json.loads(frame.body)["Name"] == ["Jöhn/x", "2"]
    assert json.loads(frame.body)["Content-Length"] == "5"


def test_envelopes_naming_a_uuid_are_parsed_each_time_and_never_kept() -> None:
    """A disconnect notice or a bgapi reply names a UUID that is new for every call: kept, such blocks
    churned the envelope cache, and their live objects were what the collector's passes walked."""
    import uuid as uuid_module

    from esl_app.protocol import parser as parser_module
    from esl_app.protocol import switch

    parser_module._ENVELOPES.clear()
    parser = Parser()
    frames = []
    for _ in range(50):
        call = str(uuid_module.uuid4())
        data = switch.linger_notice(call, "sofia/internal/1001", 10) + switch.reply(f"+OK Job-UUID: {call}")
        frames += parser.feed(data)
    frames += parser.feed(switch.reply("+OK") * 3)
    assert [f.kind for f in frames[:2]] == [FrameKind.DISCONNECT, FrameKind.REPLY]
    assert frames[0].headers.get("Controlled-Session-UUID") != frames[2].headers.get("Controlled-Session-UUID")
    assert len(frames) == 103
    assert list(parser_module._ENVELOPES) == [b"Content-Type: command/reply\nReply-Text: +OK"]


def test_a_full_envelope_cache_keeps_its_entries_and_parses_new_blocks_uncached(monkeypatch) -> None:
    """Every event length is another envelope on a real switch: a full cache stops growing instead of
    being cleared and refilled (churn the collector would walk)."""
    from esl_app.protocol import parser as parser_module
    from esl_app.protocol import switch

    parser_module._ENVELOPES.clear()
    monkeypatch.setattr(parser_module, "_ENVELOPES_KEPT", 3)
    parser = Parser()
    events = [switch.event_plain([("Event-Name", "CUSTOM"), ("Pad", "x" * n)]) for n in range(1, 8)]
    frames = parser.feed(b"".join(events))
    assert [f.event().get("Pad") for f in frames] == ["x" * n for n in range(1, 8)]
    kept = list(parser_module._ENVELOPES)
    assert len(kept) == 3
    parser.feed(b"".join(events))
    assert list(parser_module._ENVELOPES) == kept


SPELLINGS = ["Unique-ID", "unique-id", "UNIQUE-ID", "Hangup-Cause", "hangup-cause", "Other"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(SPELLINGS), VALUES), max_size=8),  # values that survive the encoding
    st.integers(0, 60),
    st.sampled_from(SPELLINGS),
)
def test_a_lazy_lookup_finds_the_first_line_in_any_case_as_the_full_parse_does(
    lines: list[tuple[str, str]], padding: int, asked: str
) -> None:
    # padding lines after them put the looked-up lines in the block's first quarter, where a name
    # spelled as asked is found without lower-casing the whole block
    pairs = [("Event-Name", "CUSTOM"), *lines, *[(f"Pad-{k}", "x" * 30) for k in range(padding)]]
    block = "".join(f"{name}: {encode_value(value)}\n" for name, value in pairs).encode()[:-1]
    lazy = Headers.from_block(block, encoded=True, short_lived=True)
    eager = Headers(pairs)
    assert lazy.get(asked) == eager.get(asked)
    assert lazy.get(asked.swapcase()) == eager.get(asked)  # a spelling no line has: the lower-cased copy
