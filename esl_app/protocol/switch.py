"""FreeSWITCH's side of the codec: how mod_event_socket reads commands and writes frames.

Used by the fake FreeSWITCH peer in ``esl_app.testing``; it lives here because it is pure bytes in,
bytes out, like the client side. It follows ``read_packet`` (spec 1.3) and the serializers (1.2, 1.4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import escape as _xml_escape

from .errors import ProtocolError
from .headers import Headers
from .urlcode import encode_value

FINAL_NOTICE_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
REJECTION_BODY = b"Access Denied, go away.\n"
MAX_COMMAND_BLOCK = 10 * 1024 * 1024


@dataclass(slots=True)
class Command:
    """A command as FreeSWITCH read it: first line, headers (values not decoded), body."""

    line: str
    headers: Headers
    body: bytes = b""

    @property
    def name(self) -> str:
        return self.line.split(" ", 1)[0].lower()

    @property
    def arg(self) -> str:
        parts = self.line.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""


class CommandReader:
    """Sans-IO version of mod_event_socket's ``read_packet`` (1.10.12), byte for byte.

    * CR and LF bytes before a command are skipped.
    * The block ends at the second LF in a row; CR bytes in between do not reset the count, so
      ``\r\n\r\n`` ends it too. A block that reaches 10 MiB is cut there and parsed anyway.
    * The block is then a C string: a NUL byte ends it. ``Command.line`` is the text up to the first
      CR or LF. FreeSWITCH then walks the rest line by line, but finds each next line by searching
      for a CR first and an LF only when no CR is left, so a block mixing LF and CRLF line ends
      loses the lines in between (reproduced here on purpose).
    * Each header line is split at the first ``:``, spaces after it are skipped, the value ends at
      the first CR or LF, lines without a colon are ignored and duplicates are kept. Nothing is
      URL-decoded.
    * Every ``content-length`` line (any case) with ``atoi(value) > 0`` makes FreeSWITCH read that
      many bytes right after the block; the last one read is the body, cut at its first NUL.

    Matching the command word (case-insensitive, by prefix) is the caller's business.
    """

    __slots__ = ("_buffer", "_newlines", "_pending", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: tuple[str, Headers, list[int]] | None = None
        # resumable scan for the end of the current block
        self._scanned = 0
        self._newlines = 0

    def feed(self, data: bytes) -> list[Command]:
        self._buffer += data
        commands: list[Command] = []
        buffer = self._buffer
        while True:
            if self._pending is not None:
                line, headers, lengths = self._pending
                total = sum(lengths)
                if len(buffer) < total:
                    break
                body = bytes(buffer[total - lengths[-1] : total])
                del buffer[:total]
                self._pending = None
                # FreeSWITCH keeps the body as a C string: a NUL truncates it
                commands.append(Command(line, headers, body.split(b"\0", 1)[0]))
                continue
            if self._scanned == 0:
                start = 0
                while start < len(buffer) and buffer[start] in (10, 13):
                    start += 1
                if start:
                    del buffer[:start]
            end = self._command_end(buffer)
            if end < 0:
                break
            block = bytes(buffer[:end])
            del buffer[:end]
            line, headers, lengths = _parse_command_block(block)
            if lengths:
                self._pending = (line, headers, lengths)
                continue
            commands.append(Command(line, headers))
        return commands

    def _command_end(self, buffer: bytearray) -> int:
        """Index just past the second consecutive LF (a CR in between does not reset the count)."""
        newlines = self._newlines
        limit = min(len(buffer), MAX_COMMAND_BLOCK)
        index = self._scanned
        while index < limit:
            byte = buffer[index]
            index += 1
            if byte == 10:
                newlines += 1
                if newlines == 2:
                    break
            elif byte != 13:
                newlines = 0
        else:
            if index < MAX_COMMAND_BLOCK:
                self._scanned, self._newlines = index, newlines
                return -1
            # FreeSWITCH cuts the block at max_len and parses it as if it had ended
        self._scanned = self._newlines = 0
        return index


def _parse_command_block(block: bytes) -> tuple[str, Headers, list[int]]:
    text = block.split(b"\0", 1)[0]
    line = _FIRST_LINE.match(text).group()  # type: ignore[union-attr]  # always matches
    pairs: list[tuple[str, str]] = []
    lengths: list[int] = []
    size = len(text)
    cr = text.find(b"\r")  # the first CR at or after cur, kept up to date (no rescans)
    cur: int | None = 0
    first = True
    while cur is not None:
        # cut = strchr(cur, '\r') || strchr(cur, '\n'): both where strip_cr ends this line and
        # where the next one is searched from (after the run of CR/LF bytes there)
        if 0 <= cr < cur:
            cr = text.find(b"\r", cur)
        cut = cr if cr >= 0 else text.find(b"\n", cur)
        var = text[cur:] if cut < 0 else text[cur:cut]
        if first:
            first = False  # the command line itself
        elif var:
            name, colon, value = var.partition(b":")
            if colon:
                name_text = name.decode("utf-8", "surrogateescape")
                pairs.append((name_text, value.lstrip(b" ").decode("utf-8", "surrogateescape")))
                if name_text.lower() == "content-length":
                    length = _atoi(value)
                    if length > 0:
                        lengths.append(length)
        if cut < 0:
            cur = None
        else:
            cur = cut
            while cur < size and text[cur] in (10, 13):
                cur += 1
    return line.decode("utf-8", "surrogateescape"), Headers(pairs), lengths


_FIRST_LINE = re.compile(rb"[^\r\n]*")
_ATOI = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _atoi(value: bytes) -> int:
    """glibc ``atoi``: ``(int) strtol(value, NULL, 10)`` on a 64-bit system (clamped, then truncated)."""
    match = _ATOI.match(value)
    if not match:
        return 0
    number = max(-(2**63), min(2**63 - 1, int(match.group(1))))
    return (number + 2**31) % 2**32 - 2**31


def _block(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name}: {value}\n" for name, value in pairs)


def reply(text: str, *extra: tuple[str, str]) -> bytes:
    return (_block([("Content-Type", "command/reply"), ("Reply-Text", text), *extra]) + "\n").encode(
        "utf-8", "surrogateescape"
    )


def api_response(body: str | bytes) -> bytes:
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    return f"Content-Type: api/response\nContent-Length: {len(data)}\n\n".encode() + data


def serialize_event(headers: Iterable[tuple[str, str]], body: str | bytes | None = None) -> bytes:
    """An event serialized as ``switch_event_serialize`` does: values encoded, body raw."""
    text = "".join(f"{name}: {encode_value(value)}\n" for name, value in headers)
    data = text.encode("utf-8", "surrogateescape")  # names are never encoded (spec 1.5)
    if body:
        raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
        return data + f"Content-Length: {len(raw)}\n\n".encode() + raw
    return data + b"\n"


def event_plain(headers: Iterable[tuple[str, str]], body: str | bytes | None = None) -> bytes:
    payload = serialize_event(headers, body)
    return f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload


def event_json(headers: Iterable[tuple[str, str]], body: str | None = None) -> bytes:
    obj: dict[str, object] = {}
    for name, value in headers:
        if name in obj:
            previous = obj[name]
            obj[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            obj[name] = value
    if body:
        obj["Content-Length"] = str(len(body.encode("utf-8", "surrogateescape")))
        obj["_body"] = body
    payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return f"Content-Length: {len(payload)}\nContent-Type: text/event-json\n\n".encode() + payload


def event_xml(headers: Iterable[tuple[str, str]], body: str | bytes | None = None) -> bytes:
    """An event as ``switch_event_xmlize`` + ``switch_xml_toxml`` write it (spec 1.4).

    Two-space indentation, no prolog, a trailing newline; element text URL-encoded; a body adds
    ``<Content-Length>`` and ``<body>`` (XML-escaped, not URL-encoded) beside ``<headers>``.
    """
    lines = ["<event>", "  <headers>"]
    lines += [f"    <{name}>{encode_value(value)}</{name}>" for name, value in headers]
    lines.append("  </headers>")
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    if raw:
        lines.append(f"  <Content-Length>{len(raw)}</Content-Length>")
        # switch_xml_ampencode: & < > as entities, CR as &#xD; (an XML parser would drop a raw CR)
        text = _xml_escape(raw.decode("utf-8", "surrogateescape"), {"\r": "&#xD;"})
        lines.append(f"  <body>{text}</body>")
    lines.append("</event>")
    payload = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    return f"Content-Length: {len(payload)}\nContent-Type: text/event-xml\n\n".encode() + payload


def connect_reply(channel_data: Iterable[tuple[str, str]], *, mode: str = "async", full: bool = True) -> bytes:
    """The reply to ``connect``: a CHANNEL_DATA event with no envelope and no Content-Length."""
    pairs = [
        *channel_data,
        ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK\n"),
        ("Socket-Mode", mode),
        ("Control", "full" if full else "single-channel"),
    ]
    text = "".join(f"{name}: {encode_value(value)}\n" for name, value in pairs)
    return text.encode("utf-8", "surrogateescape") + b"\n"


def final_notice(session_uuid: str | None = None) -> bytes:
    pairs = [("Content-Type", "text/disconnect-notice")]
    if session_uuid:
        pairs += [("Controlled-Session-UUID", session_uuid), ("Content-Disposition", "disconnect")]
    pairs.append(("Content-Length", str(len(FINAL_NOTICE_BODY))))
    return (_block(pairs) + "\n").encode() + FINAL_NOTICE_BODY


def linger_notice(session_uuid: str, channel_name: str, linger_time: int = -1) -> bytes:
    pairs = [
        ("Content-Type", "text/disconnect-notice"),
        ("Controlled-Session-UUID", session_uuid),
        ("Content-Disposition", "linger"),
        ("Channel-Name", channel_name),
        ("Linger-Time", str(linger_time)),
        ("Content-Length", "0"),
    ]
    return (_block(pairs) + "\n").encode("utf-8", "surrogateescape")


def auth_request() -> bytes:
    return b"Content-Type: auth/request\n\n"


def rude_rejection() -> bytes:
    return f"Content-Type: text/rude-rejection\nContent-Length: {len(REJECTION_BODY)}\n\n".encode() + REJECTION_BODY


_NUMBER = re.compile(r"[+-]?[0-9.]*")


def is_true(value: str | None) -> bool:
    """FreeSWITCH's ``switch_true`` on a header value as stored (leading spaces already skipped).

    True for ``true``/``yes``/``on``/``t``/``enabled``/``active``/``allow`` (any case) or a number
    (``switch_is_number``: digits and dots after an optional sign) whose ``atoi`` is not zero.
    Trailing spaces make it false (``true `` is false).
    """
    if value is None:
        return False
    text = value.lstrip(" ")
    if not text:
        return False
    if text.lower() in ("true", "yes", "on", "t", "enabled", "active", "allow"):
        return True
    return bool(_NUMBER.fullmatch(text)) and _atoi(text.encode()) != 0


__all__ = [
    "FINAL_NOTICE_BODY",
    "MAX_COMMAND_BLOCK",
    "REJECTION_BODY",
    "Command",
    "CommandReader",
    "ProtocolError",
    "api_response",
    "auth_request",
    "connect_reply",
    "event_json",
    "event_plain",
    "event_xml",
    "final_notice",
    "is_true",
    "linger_notice",
    "reply",
    "rude_rejection",
    "serialize_event",
]
