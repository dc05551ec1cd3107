"""A readable trace of one Event Socket conversation, taken from the bytes on the wire.

``TracingSocket`` wraps FreeSWITCH's end of a connection (the fake peer's socket): what the peer
reads is the application's commands, what it writes is FreeSWITCH's frames. Both are decoded with the
project's own codec, so the trace shows exactly what crossed the socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..protocol import Frame, FrameKind, Parser, ProtocolError
from ..protocol.switch import Command, CommandReader


def describe_command(command: Command) -> str:
    if command.name == "sendmsg":
        h = command.headers
        what = h.get("call-command") or "?"
        if what == "execute":
            arg = h.get("execute-app-arg")
            if arg is None and command.body:
                arg = command.body.decode("utf-8", "replace") + "  [text/plain body]"
            text = f"sendmsg execute {h.get('execute-app-name')}" + (f" {arg!r}" if arg is not None else "")
            if h.get("event-lock"):
                text += " (event-lock)"
            return text
        if what == "hangup":
            return f"sendmsg hangup {h.get('hangup-cause') or ''}".rstrip()
        return f"sendmsg {what}"
    return command.line


def describe_frame(frame: Frame) -> str:
    if frame.is_connect_reply:
        h = frame.headers
        return (
            f"connect reply: {h.get('Caller-Caller-ID-Number')} -> {h.get('Caller-Destination-Number')} "
            f"context {h.get('Caller-Context')} uuid {h.get('Unique-ID')} "
            f"({h.get('Socket-Mode')}, {h.get('Control')}, {len(frame.headers)} headers)"
        )
    if frame.kind is FrameKind.REPLY:
        return f"reply {frame.reply_text!r}"
    if frame.kind is FrameKind.API:
        return f"api/response {frame.reply_text[:80]!r}"
    if frame.is_event:
        try:
            event = frame.event()
        except ProtocolError as exc:
            return f"malformed event: {exc}"
        text = f"event {event.name}"
        if event.name.startswith("CHANNEL_EXECUTE"):
            text += f" {event.get('Application')}"
            if event.get("Application-Data"):
                text += f" {event.get('Application-Data')!r}"
            if event.name == "CHANNEL_EXECUTE_COMPLETE":
                text += f" -> {event.get('Application-Response')}"
        elif event.name == "DTMF":
            text += f" {event.get('DTMF-Digit')}"
        elif event.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            text += f" {event.get('Hangup-Cause')}"
        elif event.name == "CHANNEL_STATE":
            text += f" {event.get('Channel-State')}"
        return text
    if frame.kind is FrameKind.DISCONNECT:
        if frame.is_linger_notice:
            return f"linger notice (Linger-Time {frame.headers.get('Linger-Time')})"
        return "final disconnect notice"
    return f"{frame.content_type or 'frame'} ({len(frame.body)} bytes)"


class TracingSocket:
    """Wraps a socket-like object; reports each command read and each frame written, as text."""

    def __init__(self, sock: Any, emit: Callable[[str], None]) -> None:
        self._sock = sock
        self._emit = emit
        self._commands = CommandReader()
        self._frames = Parser()
        self._start = time.perf_counter()

    def _line(self, arrow: str, text: str) -> None:
        self._emit(f"{(time.perf_counter() - self._start) * 1000:9.2f} ms  {arrow}  {text}")

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if data:
            for command in self._commands.feed(data):
                self._line("APP -> FS", describe_command(command))
        else:
            self._line("APP -> FS", "(socket closed by the application)")
        return data

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        try:
            frames = self._frames.feed(data)
        except ProtocolError as exc:
            self._line("FS -> APP", f"unparseable bytes: {exc}")
            return
        for frame in frames:
            self._line("FS -> APP", describe_frame(frame))

    send = sendall

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
