"""Frames as read from FreeSWITCH, and the events carried inside them.

A ``Frame`` is one envelope: a header block and, if it had a ``Content-Length``, a body of that many
bytes. Envelope values are raw (not URL-decoded), except the ``connect`` reply, which is a whole
serialized CHANNEL_DATA event and is decoded by the parser. ``Event`` is the parsed payload of a
``text/event-plain``/``-json``/``-xml`` frame; its headers are kept apart from the envelope's.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from enum import Enum

from .errors import ProtocolError
from .headers import Headers
from .urlcode import decode_value


class FrameKind(str, Enum):
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
        return self.kind is FrameKind.REPLY and "Event-Name" in self.headers

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

    def event(self) -> Event:
        return Event.from_frame(self)

    def to_bytes(self) -> bytes:
        """Serialize back to wire bytes (headers as held: raw, or decoded for a connect reply)."""
        lines = "".join(f"{name}: {value}\n" for name, value in self.headers.items())
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
    def from_frame(cls, frame: Frame) -> Event:
        if frame.kind is FrameKind.EVENT_PLAIN:
            return parse_plain_event(frame.body)
        if frame.kind is FrameKind.EVENT_JSON:
            return parse_json_event(frame.body)
        if frame.kind is FrameKind.EVENT_XML:
            return parse_xml_event(frame.body)
        if frame.is_connect_reply:
            return cls(frame.headers, "", "plain")
        raise ProtocolError(f"frame of type {frame.content_type!r} does not carry an event")


def split_header_lines(block: bytes) -> list[tuple[str, bytes]]:
    """Split a header block into (name, raw value) pairs, FreeSWITCH style.

    Split on ``\\n`` only (never ``splitlines``), strip one trailing ``\\r``, split at the first ``:``
    and skip the spaces after it. Lines without a colon are ignored, empty values are kept.
    """
    pairs: list[tuple[str, bytes]] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        name, colon, value = line.partition(b":")
        if not colon or not name:
            continue
        pairs.append((name.decode("latin-1").strip(), value.lstrip(b" ")))
    return pairs


def parse_plain_event(payload: bytes) -> Event:
    end = payload.find(b"\n\n")
    if end < 0:
        block, rest = payload, b""
    else:
        block, rest = payload[:end], payload[end + 2 :]
    headers = Headers((name, decode_value(raw)) for name, raw in split_header_lines(block))
    body = b""
    if rest:
        length = headers.get_last("Content-Length")
        body = rest
        if length is not None:
            try:
                declared = int(length)
            except ValueError as exc:
                raise ProtocolError(f"event has a non-numeric inner Content-Length {length!r}") from exc
            if declared != len(rest):
                raise ProtocolError(
                    f"event inner body is {len(rest)} bytes but its Content-Length says {declared}"
                )
    return Event(headers, body.decode("utf-8", "surrogateescape"), "plain")


def parse_json_event(payload: bytes) -> Event:
    try:
        data = json.loads(payload.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise ProtocolError(f"text/event-json body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("text/event-json body is not a JSON object")
    body = data.pop("_body", "")
    items: list[tuple[str, str]] = []
    for name, value in data.items():
        if isinstance(value, list):
            items.extend((name, str(v)) for v in value)
        else:
            items.append((name, str(value)))
    return Event(Headers(items), str(body), "json")


def parse_xml_event(payload: bytes) -> Event:
    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError as exc:
        raise ProtocolError(f"text/event-xml body is not valid XML: {exc}") from exc
    items: list[tuple[str, str]] = []
    headers_el = root.find("headers")
    for element in headers_el if headers_el is not None else ():
        items.append((element.tag, decode_value(element.text or "")))
    body_el = root.find("body")
    body = body_el.text or "" if body_el is not None else ""
    return Event(Headers(items), body, "xml")
