"""Hostile frames: each input here once escaped as a generic exception or cost far more than its size.

Issue 16 part 4 (the first fuzzing run's findings) and issue 15 part 7 (one oversized frame froze a
worker). Only ``ProtocolError`` may come out of the codec, and one frame's memory stays bounded.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable

import pytest
from transcripts import byte_by_byte, parse, random_chunks

from esl_app.bench.traffic import CallTemplates
from esl_app.protocol import (
    Frame,
    Parser,
    ProtocolError,
    parse_json_event,
    parse_plain_event,
    parse_xml_event,
    switch,
)
from esl_app.protocol.limits import MAX_HEADER_BLOCK, MAX_HEADERS, ProtocolLimits

REPLY_OK = b"Content-Type: command/reply\nReply-Text: +OK\n\n"


def peak_bytes(work: Callable[[], object]) -> int:
    """Peak of Python allocations (tracemalloc) while ``work`` runs, above what was held before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with contextlib.suppress(ProtocolError):
            work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


# --------------------------------------------------------------------------------------------------
# Lengths: int()'s digit limit, negative and huge values
# --------------------------------------------------------------------------------------------------


def test_content_length_of_thousands_of_digits_is_a_protocol_error() -> None:
    for digits in (b"1" * 5000, b"1" * 4300, b"9" * 20):
        data = b"Content-Type: api/response\nContent-Length: " + digits + b"\n\n"
        with pytest.raises(ProtocolError, match="Content-Length"):
            Parser().feed(data)
    # leading zeros are still a number (atoi reads them so), however many
    (frame,) = Parser().feed(b"Content-Type: api/response\nContent-Length: " + b"0" * 5000 + b"3\n\nabc")
    assert frame.body == b"abc"


@pytest.mark.parametrize("length", [b"-1", b"-" + b"9" * 5000, b"99999999999999999999999", b"1" * 5000])
def test_inner_content_length_of_a_plain_event_is_checked_before_int(length: bytes) -> None:
    payload = b"Event-Name: CUSTOM\nContent-Length: " + length + b"\n\nbody"
    with pytest.raises(ProtocolError):
        parse_plain_event(payload)
    data = f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload
    (frame,) = parse([data])
    with pytest.raises(ProtocolError):
        frame.event()


def test_negative_and_huge_envelope_lengths_are_protocol_errors() -> None:
    for length in (b"-5", b"-" + b"1" * 5000, b"18446744073709551617"):
        with pytest.raises(ProtocolError, match="Content-Length"):
            Parser().feed(b"Content-Type: api/response\nContent-Length: " + length + b"\n\n")


# --------------------------------------------------------------------------------------------------
# Event payloads: JSON nesting, XML declarations and DTDs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"[" * 1000, b'{"a":' + b"[" * 1000, b'{"a":' * 1000, b"[" * 100_000])
def test_deeply_nested_json_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_json_event(payload)


@pytest.mark.parametrize("value", [b'{"a":{"b":"c"}}', b'{"a":["x",["y"]]}', b'{"a":[{"b":"c"}]}', b'{"_body":[1]}'])
def test_json_values_freeswitch_never_writes_are_refused(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_json_event(value)


@pytest.mark.parametrize("encoding", ["u", "hex", "utf-32", "idna", "punycode", "utf-16", "rot13", "ISO-8859-1"])
def test_an_xml_encoding_declaration_never_reaches_python_codecs(encoding: str) -> None:
    # FreeSWITCH writes UTF-8 and no declaration; a declared encoding is ignored, never looked up
    for version in ("1.0", ""):
        payload = (
            f'<?xml version="{version}" encoding="{encoding}"?>'
            "<event><headers><Event-Name>CUSTOM</Event-Name><X>J%C3%B6hn</X></headers></event>"
        ).encode()
        event = parse_xml_event(payload)
        assert event.name == "CUSTOM" and event["X"] == "Jöhn"


def billion_laughs(levels: int = 9) -> bytes:
    doc = b'<!DOCTYPE l [<!ENTITY a "' + b"a" * 100 + b'">'
    previous = b"a"
    for letter in b"bcdefghijklmnop"[:levels]:
        name = bytes([letter])
        doc += b"<!ENTITY " + name + b' "' + (b"&" + previous + b";") * 10 + b'">'
        previous = name
    return doc + b"]><event><headers><x>&" + previous + b";</x></headers></event>"


def test_xml_dtd_and_entities_are_refused_before_any_expansion() -> None:
    payload = billion_laughs()
    assert len(payload) < 1000
    with pytest.raises(ProtocolError, match="DOCTYPE"):
        parse_xml_event(payload)
    assert peak_bytes(lambda: parse_xml_event(payload)) < 256 * 1024
    # refused in any form: an external DTD, an empty internal subset, a parameter entity
    for doc in (
        b'<!DOCTYPE event SYSTEM "file:///etc/passwd"><event/>',
        b"<!DOCTYPE event []><event/>",
        b'<!DOCTYPE event [<!ENTITY % p "x">]><event/>',
        b'<?xml version="1.0"?>\n<!DOCTYPE event [<!ENTITY x "y">]><event><headers><a>&x;</a></headers></event>',
        "<!DOCTYPE event []><event>\xff</event>".encode("latin-1"),  # the latin-1 second reading too
    ):
        with pytest.raises(ProtocolError, match="DOCTYPE"):
            parse_xml_event(doc)
    # an undeclared entity is an XML error, not an expansion
    with pytest.raises(ProtocolError):
        parse_xml_event(b"<event><headers><a>&x;</a></headers></event>")


def test_xml_reader_keeps_the_element_tree_semantics() -> None:
    payload = (
        b"<event><headers><A>1<i>no</i>tail</A><B/><A>2</A></headers><headers><C>3</C></headers>"
        b"<Content-Length>4</Content-Length><Content-Length>9</Content-Length><body>a&amp;b&#xD;</body>"
        b"<body>second</body></event>"
    )
    event = parse_xml_event(payload)
    assert event.headers.items() == [("A", "1"), ("B", ""), ("A", "2"), ("Content-Length", "4")]
    assert event.body == "a&b\r"


# --------------------------------------------------------------------------------------------------
# Header blocks: size and line count bounded near real maxima (issue 15 part 7)
# --------------------------------------------------------------------------------------------------


def test_limits_leave_generous_headroom_over_a_real_sip_call() -> None:
    templates = CallTemplates()
    (reply,) = Parser().feed(templates.render(templates.connect_reply, b"0b6c9c1e-5f0e-4d55-9a55-0123456789ab"))
    assert reply.is_connect_reply and len(reply.headers) >= 200
    assert len(reply.to_bytes()) * 50 < MAX_HEADER_BLOCK and len(reply.headers) * 20 < MAX_HEADERS


def test_a_header_block_of_tiny_headers_is_refused_before_it_is_split() -> None:
    # 8 MB of "a:" lines cost 2.3 s in one feed() and +400 MB; the line count is refused in C first
    block = b"Content-Type: command/reply\n" + b"a:\n" * MAX_HEADERS + b"\n"
    assert len(block) < MAX_HEADER_BLOCK
    with pytest.raises(ProtocolError, match="lines"):
        Parser().feed(block)
    assert peak_bytes(lambda: Parser().feed(block)) < 4 * len(block)
    lazy = b"Event-Name: CHANNEL_DATA\n" + block  # the connect-reply shape, parsed lazily otherwise
    with pytest.raises(ProtocolError, match="lines"):
        Parser().feed(lazy)
    # one line fewer than the limit is accepted
    ok = b"Content-Type: command/reply\n" + b"a:\n" * (MAX_HEADERS - 2) + b"\n"
    (frame,) = Parser().feed(ok)
    assert len(frame.headers) == MAX_HEADERS - 1


def test_an_oversized_header_block_is_refused_as_soon_as_it_passes_the_limit() -> None:
    parser = Parser()
    chunk = b"X-Big: " + b"y" * 65_000 + b"\n"
    fed = 0
    with pytest.raises(ProtocolError, match="header block"):
        for _ in range(8 * 1024 * 1024 // len(chunk)):
            parser.feed(chunk)
            fed += len(chunk)
    assert MAX_HEADER_BLOCK - len(chunk) <= fed <= MAX_HEADER_BLOCK + len(chunk)


def test_limits_are_configurable() -> None:
    limits = ProtocolLimits(max_header_block=4096, max_headers=20, max_body=10)
    block = b"Content-Type: command/reply\n" + b"a: b\n" * 25 + b"\n"
    Parser().feed(block)
    for parser in (Parser(limits=limits), Parser(max_headers=20)):
        with pytest.raises(ProtocolError, match="lines"):
            parser.feed(block)
    with pytest.raises(ProtocolError, match="exceeds"):
        Parser(limits=limits).feed(b"Content-Type: api/response\nContent-Length: 11\n\n")
    with pytest.raises(ProtocolError):
        Parser(limits=limits).feed(b"X: " + b"y" * 5000 + b"\n\n")
    (event_frame,) = Parser().feed(switch.event_plain([("Event-Name", "CUSTOM")] + [("A", "b")] * 25))
    assert len(event_frame.event().headers) == 26
    with pytest.raises(ProtocolError):
        event_frame.event(limits)


def test_event_payloads_are_bounded_like_header_blocks() -> None:
    many = [(f"h{i}", "v") for i in range(MAX_HEADERS + 1)]
    plain, json_, xml = (
        Parser(max_body=1 << 30).feed(writer([("Event-Name", "CUSTOM"), *many]))[0]
        for writer in (switch.event_plain, switch.event_json, switch.event_xml)
    )
    for frame in (plain, json_, xml):
        with pytest.raises(ProtocolError):
            frame.event()
    # an 8 MB plain event of tiny lines cost +417 MB once its headers were read
    body = b"a:\n" * (8 * 1024 * 1024 // 3)
    assert peak_bytes(lambda: len(parse_plain_event(body).headers)) < 3 * len(body)
    # ... and an 8 MB JSON object of tiny members +458 MB: bounded before json.loads builds it
    payload = b"{" + b",".join(b'"a%d":""' % i for i in range(700_000)) + b"}"
    assert peak_bytes(lambda: parse_json_event(payload)) < len(payload)
    with pytest.raises(ProtocolError, match="members"):
        parse_json_event(payload)
    # a real-sized body full of commas is still read (the bound counts only a loose upper limit)
    text = "a,b;" * 10_000
    assert parse_json_event(switch.event_json([("Event-Name", "CUSTOM")], text).split(b"\n\n", 1)[1]).body == text


def test_a_big_inner_body_is_not_a_big_header_block() -> None:
    cdr = b"<cdr>" + b"x" * (2 * MAX_HEADER_BLOCK) + b"</cdr>"
    (frame,) = Parser().feed(switch.event_plain([("Event-Name", "CHANNEL_HANGUP_COMPLETE")], cdr))
    assert frame.event().body.encode() == cdr


def test_a_big_body_is_copied_once() -> None:
    size = 8 * 1024 * 1024
    chunks = [b"Content-Type: api/response\nContent-Length: %d\n\n" % size] + [b"x" * 65536] * (size // 65536)
    frames: list[Frame] = []

    def feed() -> None:
        parser = Parser()
        for chunk in chunks:
            frames.extend(parser.feed(chunk))

    peak = peak_bytes(feed)
    assert len(frames[0].body) == size
    assert peak < 2.5 * size, peak / size  # the receive buffer and the body; was 3x (two copies)


def test_a_flood_of_blank_lines_between_frames_is_skipped() -> None:
    data = b"\r\n" * 500_000 + REPLY_OK + b"\n" * 100_000
    (frame,) = parse([data])
    assert frame.reply_text == "+OK"


# --------------------------------------------------------------------------------------------------
# A duplicated Content-Length: framing and serialization agree
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        b"Event-Name: X\n Content-Length: 3\nContent-Length: 0\nContent-Type: command/reply\n",
        b"Event-Name: X\nContent-Type: command/reply\n Content-Length: 3\nContent-Length: 0\n",
        b"Event-Name: X\nContent-Type: command/reply\nContent-Length : 3\nContent-Length: 0\n",
        b" Content-Length: 3\nContent-Length: 0\nContent-Type: api/response\n",
    ],
)
def test_duplicated_content_length_frames_and_serializes_with_one_value(block: bytes) -> None:
    data = block + b"\nabc" + REPLY_OK
    frames = parse([data])
    assert [f.body for f in frames] == [b"abc", b""]
    assert frames[0].headers["Content-Length"] == "3"
    # however split, and read back from its own serialization, the same frames
    assert parse(byte_by_byte(data)) == frames == parse(random_chunks(data, 1, max_size=7))
    assert parse([b"".join(frame.to_bytes() for frame in frames)]) == frames
