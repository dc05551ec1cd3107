"""Frames as read from FreeSWITCH, and the events carried inside them.

A ``Frame`` is one envelope: a header block and, if it had a ``Content-Length``, a body of that many
bytes. Envelope values are raw (not URL-decoded), except the ``connect`` reply, which is a whole
serialized CHANNEL_DATA event and is decoded by the parser. ``Event`` is the parsed payload of a
``text/event-plain``/``-json``/``-xml`` frame; its headers are kept apart from the envelope's.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import ProtocolError
from .headers import Headers, split_header_lines
from .limits import DEFAULT_LIMITS, ProtocolLimits, parse_length, too_many_lines
from .urlcode import decode_value, encode_value


class FrameKind(StrEnum):
    REPLY = "command/reply"
    API = "api/response"
    EVENT_PLAIN = "text/event-plain"
    EVENT_JSON = "text/event-json"
    EVENT_XML = "text/event-xml"
    DISCONNECT = "text/disconnect-notice"
    AUTH = "auth/request"
    REJECTION = "text/rude-rejection"
    LOG = "log/data"
    UNKNOWN = ""


_KINDS = {kind.value: kind for kind in FrameKind if kind is not FrameKind.UNKNOWN}
EVENT_KINDS = frozenset({FrameKind.EVENT_PLAIN, FrameKind.EVENT_JSON, FrameKind.EVENT_XML})


@dataclass(slots=True)
class Frame:
    headers: Headers
    body: bytes = b""
    kind: FrameKind = field(init=False)

    def __post_init__(self) -> None:
        self.kind = _KINDS.get((self.headers.get("Content-Type") or "").strip().lower(), FrameKind.UNKNOWN)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type") or ""

    @property
    def reply_text(self) -> str:
        """``Reply-Text`` of a command/reply, or the body of an api/response, as text."""
        if self.kind is FrameKind.API:
            return self.body.decode("utf-8", "surrogateescape")
        return self.headers.get("Reply-Text") or ""

    @property
    def ok(self) -> bool:
        return not self.reply_text.startswith("-ERR")

    @property
    def is_connect_reply(self) -> bool:
        return self.kind is FrameKind.REPLY and looks_like_connect_reply(self.headers)

    @property
    def is_event(self) -> bool:
        return self.kind in EVENT_KINDS

    @property
    def is_linger_notice(self) -> bool:
        return self.kind is FrameKind.DISCONNECT and (
            (self.headers.get("Content-Disposition") or "").lower() == "linger"
        )

    @property
    def is_final_notice(self) -> bool:
        """A disconnect notice that means FreeSWITCH closes the socket now (not a linger notice)."""
        return self.kind is FrameKind.DISCONNECT and not self.is_linger_notice

    def event(self, limits: ProtocolLimits = DEFAULT_LIMITS) -> Event:
        return Event.from_frame(self, limits)

    def to_bytes(self) -> bytes:
        """Serialize back to wire bytes; the parser reads them back as an equal frame.

        Headers are written as held: raw, except a connect reply, whose values the parser decoded
        and which are therefore URL-encoded again.
        """
        items = self.headers.items()
        if self.is_connect_reply:
            items = [(name, encode_value(value)) for name, value in items]
        lines = "".join(f"{name}: {value}\n" for name, value in items)
        return lines.encode("utf-8", "surrogateescape") + b"\n" + self.body


@dataclass(slots=True)
class Event:
    """One FreeSWITCH event: decoded headers (multimap, wire order) and an optional body."""

    headers: Headers
    body: str = ""
    format: str = "plain"

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name") or ""

    @property
    def subclass(self) -> str | None:
        return self.headers.get("Event-Subclass")

    @property
    def unique_id(self) -> str | None:
        return self.headers.get("Unique-ID")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.headers

    def variable(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get("variable_" + name, default)

    @classmethod
    def from_frame(cls, frame: Frame, limits: ProtocolLimits = DEFAULT_LIMITS) -> Event:
        if frame.kind is FrameKind.EVENT_PLAIN:
            return parse_plain_event(frame.body, limits)
        if frame.kind is FrameKind.EVENT_JSON:
            return parse_json_event(frame.body, limits)
        if frame.kind is FrameKind.EVENT_XML:
            return parse_xml_event(frame.body, limits)
        if frame.is_connect_reply:
            return cls(frame.headers, "", "plain")
        raise ProtocolError(f"frame of type {frame.content_type!r} does not carry an event")


def looks_like_connect_reply(headers: Headers) -> bool:
    """True for the reply to ``connect``: a ``command/reply`` block that is a serialized event.

    FreeSWITCH serializes CHANNEL_DATA (``Event-Name`` first) and appends ``Content-Type`` near the
    end (spec 2.2). A plain reply starts with ``Content-Type``, so an ``Event-Name`` line that only
    comes after it (a ``getvar`` value with a newline, spec 1.2) does not make it a connect reply.
    """
    if headers.event_block:
        return True
    event_at = content_type_at = -1
    for index, (name, value) in enumerate(headers.items()):
        lowered = name.lower()
        if lowered == "event-name" and event_at < 0:
            event_at = index
        elif lowered == "content-type" and content_type_at < 0:
            if value.strip().lower() != "command/reply":
                return False
            content_type_at = index
    return 0 <= event_at < content_type_at


# A compiled search for the blank line: bytes.find is ~3x slower for a needle of two LFs in text
# with an LF every ~40 bytes (CPython 3.11's fastsearch), and this runs over every event (~10 kB).
_BLOCK_END = re.compile(rb"\n\n")
# Any spelling of "content-length" contains this (a superset: the exact check is the eager parse).
_ANY_LENGTH = re.compile(rb"-[lL][eE][nN][gG][tT][hH]")


def _ends_with_a_length(block: bytes) -> bool:
    """Whether the block's last line may be a length header: where ``switch_event_serialize`` writes
    its own ``Content-Length``, and only before a body. A body-less event then carries no length of
    FreeSWITCH's, and one a client sent (sendevent, earlier in the block) read no body. Looking at the
    last line only, not the whole ~10 kB block, was 6% of a call's CPU (benchmark flow, py-spy)."""
    return _ANY_LENGTH.search(block, block.rfind(b"\n") + 1) is not None


def parse_plain_event(payload: bytes, limits: ProtocolLimits = DEFAULT_LIMITS) -> Event:
    found = _BLOCK_END.search(payload)
    if found is None:
        block, rest = payload, b""
    else:
        end = found.start()
        block, rest = payload[:end], payload[end + 2 :]
    # the inner header block is bounded like an envelope's (the inner body is not: an XML CDR)
    if len(block) > limits.max_header_block:
        raise ProtocolError(f"event header block exceeds {limits.max_header_block} bytes")
    if too_many_lines(block, limits.max_headers):
        raise ProtocolError(f"event header block has more than {limits.max_headers} lines")
    if not rest and not _ends_with_a_length(block):
        # the common case (no inner body): headers are found in the raw block when asked for
        return Event(Headers.from_block(block, encoded=True, short_lived=True), "", "plain")
    headers = Headers((name, decode_value(raw)) for name, raw in split_header_lines(block))
    # The inner body is the rest of the payload. The last length header is the serializer's own (a
    # sendevent-created event also carries the client's lower-case one, spec 1.4); it must agree.
    # Without a body, FreeSWITCH writes no length of its own, so a client-supplied one that read no
    # body (``content-length: 0``, ``-1`` or junk via sendevent) may be the last: accepted as is.
    length = headers.get_last("Content-Length")
    if length is not None:
        text = length.strip()
        numeric = text.isascii() and text.isdigit()
        if rest and not numeric:
            raise ProtocolError(f"event has a non-numeric inner Content-Length {length[:40]!r}")
        # digits counted before int(): past 4,300 of them int() raises ValueError
        if numeric and parse_length(text, limits.max_body, "inner Content-Length") != len(rest):
            raise ProtocolError(f"event inner body is {len(rest)} bytes but its Content-Length says {text}")
    return Event(headers, rest.decode("utf-8", "surrogateescape"), "plain")


# JSON values (a bound on them) per header allowed before parsing: see parse_json_event
_JSON_VALUES_PER_HEADER = 8


def parse_json_event(payload: bytes, limits: ProtocolLimits = DEFAULT_LIMITS) -> Event:
    """``{"Name": "value", "Multi": ["v1", "v2"], "_body": "..."}`` as ``switch_event_serialize_json`` writes.

    ``json.loads`` builds everything before anything can be counted (an 8 MB object of tiny members
    cost +175 MB), so the members are bounded first, in C: every JSON value but the first of its
    container follows a comma, and the first follows a bracket, so their sum bounds the values
    (commas inside strings only make the bound looser). Nesting is refused (FreeSWITCH writes
    strings and arrays of strings), and so is depth that would exhaust the recursion limit.
    """
    max_values = _JSON_VALUES_PER_HEADER * limits.max_headers
    # a value and its separator take two bytes at least: a shorter payload (any real one) is not counted
    if len(payload) >= 2 * max_values and payload.count(b",") + payload.count(b"[") + payload.count(b"{") > max_values:
        raise ProtocolError(f"text/event-json body has more than {limits.max_headers} members")
    try:
        data = json.loads(payload.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise ProtocolError(f"text/event-json body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ProtocolError("text/event-json body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise ProtocolError("text/event-json body is not a JSON object")
    body = data.pop("_body", "")
    items: list[tuple[str, str]] = []
    append = items.append
    for name, value in data.items():
        if value.__class__ is str:  # nearly every value
            append((name, value))
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, (list, dict)):
                    raise ProtocolError(f"text/event-json header {name[:40]!r} holds a nested value")
                append((name, str(v)))
        elif isinstance(value, dict):
            raise ProtocolError(f"text/event-json header {name[:40]!r} holds an object")
        else:
            append((name, str(value)))
    if len(items) > limits.max_headers:
        raise ProtocolError(f"text/event-json body has more than {limits.max_headers} headers")
    if isinstance(body, (list, dict)):
        raise ProtocolError("text/event-json _body is not a string")
    return Event(Headers(items), str(body), "json")


def parse_xml_event(payload: bytes, limits: ProtocolLimits = DEFAULT_LIMITS) -> Event:
    """``<event><headers><Name>encoded</Name>...</headers>[<Content-Length>n</Content-Length><body>..]``.

    FreeSWITCH puts ``Content-Length`` and ``body`` beside ``headers`` (``switch_event_xmlize``);
    ``Content-Length`` is returned among the headers, as for plain and JSON events. A body with
    invalid UTF-8 (SIP text, spec 1.7) is read byte-transparently instead of failing.

    Hardened before expat sees a byte. FreeSWITCH writes UTF-8, no declaration, no DTD, and escapes
    ``<`` in text, so: a DOCTYPE is refused (a 0.6 kB "billion laughs" cost +155 MB before expat's own
    guard stopped it); so is a NUL byte, which every UTF-16/32 document has (expat would honour
    their byte-order mark and could then read a DOCTYPE the byte check cannot see); the document's
    encoding declaration is overridden (a declared ``hex``, ``utf-32`` or ``idna`` raised
    LookupError, ValueError or UnicodeError from Python's codecs); and the elements are bounded by
    counting ``<`` (a tree element costs ~50 times its four bytes ``<a/>``).
    """
    if b"<!DOCTYPE" in payload:
        raise ProtocolError("text/event-xml body has a DOCTYPE (DTDs and entities are refused)")
    if b"\0" in payload:
        raise ProtocolError("text/event-xml body has a NUL byte")
    max_tags = 2 * limits.max_headers + 16  # an element is two tags (or one: <a/>, four bytes)
    if len(payload) >= 4 * max_tags and payload.count(b"<") > max_tags:
        raise ProtocolError(f"text/event-xml body has more than {limits.max_headers} elements")
    text_of = _plain_text
    try:
        root = _xml_root(payload, "UTF-8")
    except ElementTree.ParseError as exc:
        if payload.lstrip().startswith(b"<?xml"):
            raise ProtocolError(f"text/event-xml body is not valid XML: {exc}") from exc
        try:
            # every byte is one latin-1 character, so nothing can be invalid; undone by _latin1_text
            root = _xml_root(payload, "ISO-8859-1")
        except ElementTree.ParseError:
            raise ProtocolError(f"text/event-xml body is not valid XML: {exc}") from exc
        text_of = _latin1_text
    items: list[tuple[str, str]] = []
    headers_el = root.find("headers")
    if headers_el is not None and len(headers_el) > limits.max_headers:
        raise ProtocolError(f"text/event-xml body has more than {limits.max_headers} headers")
    for element in headers_el if headers_el is not None else ():
        items.append((text_of(element.tag), decode_value(text_of(element.text or ""))))
    length_el = root.find("Content-Length")
    if length_el is not None:
        items.append(("Content-Length", decode_value(text_of(length_el.text or ""))))
    body_el = root.find("body")
    body = text_of(body_el.text or "") if body_el is not None else ""
    return Event(Headers(items), body, "xml")


def _xml_root(payload: bytes, encoding: str) -> ElementTree.Element:
    # ``encoding`` overrides the document's declaration: Python's codecs are never looked up
    parser = ElementTree.XMLParser(encoding=encoding)
    parser.feed(payload)
    return parser.close()


def _plain_text(text: str) -> str:
    return text


def _latin1_text(text: str) -> str:
    """Undo the latin-1 reading: back to bytes, then lenient UTF-8 (character references stay)."""
    try:
        return text.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a character reference above U+00FF
        data = b"".join(bytes((ord(c),)) if ord(c) < 256 else c.encode("utf-8") for c in text)
        return data.decode("utf-8", "surrogateescape")
