"""FreeSWITCH's side of the codec: how mod_event_socket reads commands and writes frames.

Used by the fake FreeSWITCH peer in ``esl_app.testing``; it lives here because it is pure bytes in,
bytes out, like the client side. It follows ``read_packet`` (spec 1.3) and the serializers (1.2, 1.4).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import json

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
    """Sans-IO version of ``read_packet``: leading CR/LF skipped, block ends at two LFs (CR ignored)."""

    __slots__ = ("_buffer", "_pending")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: tuple[str, Headers, int] | None = None

    def feed(self, data: bytes) -> list[Command]:
        self._buffer += data
        commands: list[Command] = []
        buffer = self._buffer
        while True:
            if self._pending is not None:
                line, headers, length = self._pending
                if len(buffer) < length:
                    break
                body = bytes(buffer[:length])
                del buffer[:length]
                self._pending = None
                # FreeSWITCH keeps the body as a C string: a NUL truncates it
                commands.append(Command(line, headers, body.split(b"\0", 1)[0]))
                continue
            start = 0
            while start < len(buffer) and buffer[start] in (10, 13):
                start += 1
            if start:
                del buffer[:start]
            end = _command_end(buffer)
            if end < 0:
                if len(buffer) >= MAX_COMMAND_BLOCK:
                    end = len(buffer)  # FreeSWITCH cuts the block there and parses it anyway
                else:
                    break
            block = bytes(buffer[:end])
            del buffer[:end]
            lines = block.replace(b"\r", b"").split(b"\n")
            line = lines[0].decode("utf-8", "surrogateescape").strip()
            pairs = []
            for raw in lines[1:]:
                name, colon, value = raw.partition(b":")
                if colon:
                    pairs.append((name.decode("latin-1"), value.lstrip(b" ").decode("utf-8", "surrogateescape")))
            headers = Headers(pairs)
            length_text = headers.get("Content-Length")
            length = 0
            if length_text is not None:
                try:
                    length = int(length_text)
                except ValueError:
                    length = 0
            if length > 0:
                self._pending = (line, headers, length)
                continue
            commands.append(Command(line, headers))
        return commands


def _command_end(buffer: bytearray) -> int:
    """Index just past the second consecutive LF (a CR in between does not reset the count)."""
    newlines = 0
    for index in range(len(buffer)):
        byte = buffer[index]
        if byte == 10:
            newlines += 1
            if newlines == 2:
                return index + 1
        elif byte != 13:
            newlines = 0
    return -1


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
    data = text.encode("ascii")
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


def connect_reply(channel_data: Iterable[tuple[str, str]], *, mode: str = "async", full: bool = True) -> bytes:
    """The reply to ``connect``: a CHANNEL_DATA event with no envelope and no Content-Length."""
    pairs = [
        *channel_data,
        ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK\n"),
        ("Socket-Mode", mode),
        ("Control", "full" if full else "single-channel"),
    ]
    return "".join(f"{name}: {encode_value(value)}\n" for name, value in pairs).encode("ascii") + b"\n"


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


def is_true(value: str | None) -> bool:
    """FreeSWITCH's ``switch_true``: leading spaces skipped, trailing ones make it false."""
    if value is None:
        return False
    text = value.lstrip(" ")
    if text.lower() in ("true", "yes", "on", "t", "enabled", "active", "allow"):
        return True
    try:
        return int(text) != 0
    except ValueError:
        return False


__all__ = [
    "FINAL_NOTICE_BODY",
    "Command",
    "CommandReader",
    "ProtocolError",
    "api_response",
    "auth_request",
    "connect_reply",
    "event_json",
    "event_plain",
    "final_notice",
    "is_true",
    "linger_notice",
    "reply",
    "rude_rejection",
    "serialize_event",
]
