"""Baseline: a minimal hand-written gevent server that fully parses every frame into a dict.

One greenlet per call, reading synchronously: every header block is split into lines and every
value of the connect reply and of every event is URL-decoded into a dict (what most hand-rolled ESL
code does). Executes carry an ``Event-UUID`` and wait for the COMPLETE with that Application-UUID.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import unquote

from gevent.server import StreamServer

from ._common import PROMPT, parse_args, ready


def parse_block(block: bytes, decode: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        name, _, value = line.partition(": ")
        if name:
            headers.setdefault(name, unquote(value) if decode else value)
    return headers


class Conn:
    def __init__(self, sock) -> None:  # type: ignore[no-untyped-def]
        self.sock = sock
        self.buffer = b""

    def read_frame(self) -> tuple[dict[str, str], bytes]:
        while True:
            end = self.buffer.find(b"\n\n")
            if end >= 0:
                headers = parse_block(self.buffer[:end], False)
                length = int(headers.get("Content-Length", "0") or 0)
                total = end + 2 + length
                while len(self.buffer) < total:
                    self._fill()
                body = self.buffer[end + 2 : total]
                self.buffer = self.buffer[total:]
                return headers, body
            self._fill()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buffer += data

    def command(self, text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Send a command; return its reply and the events read before it."""
        self.sock.sendall(text.encode() + b"\n\n")
        events = []
        while True:
            headers, body = self.read_frame()
            kind = headers.get("Content-Type", "")
            if kind == "command/reply" and "Event-Name" not in headers:
                return headers, events
            if "Event-Name" in headers:  # the connect reply: a whole encoded event
                return {k: unquote(v) for k, v in headers.items()}, events
            events.append(self.event(headers, body))

    def event(self, headers: dict[str, str], body: bytes) -> dict[str, str]:
        if headers.get("Content-Type") == "text/event-plain":
            end = body.find(b"\n\n")
            return parse_block(body if end < 0 else body[:end], True)
        return headers

    def wait_event(self, pending: list[dict[str, str]], match) -> dict[str, str]:  # type: ignore[no-untyped-def]
        for event in pending:
            if match(event):
                return event
        while True:
            headers, body = self.read_frame()
            event = self.event(headers, body)
            if match(event):
                return event

    def execute(self, app: str, arg: str | None = None) -> dict[str, str]:
        event_uuid = str(uuid.uuid4())
        text = f"sendmsg\ncall-command: execute\nexecute-app-name: {app}\nevent-lock: true\nEvent-UUID: {event_uuid}"
        if arg:
            text += f"\nexecute-app-arg: {arg}"
        _, events = self.command(text)
        return self.wait_event(
            events,
            lambda e: e.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-UUID") == event_uuid,
        )


def handle(sock, address) -> None:  # type: ignore[no-untyped-def]
    conn = Conn(sock)
    try:
        conn.command("connect")
        conn.command("myevents")
        conn.command("linger")
        conn.execute("answer")
        conn.execute("playback", PROMPT)
        _, events = conn.command("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING")
        conn.wait_event(
            events,
            lambda e: (
                e.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE" or e.get("Content-Type") == "text/disconnect-notice"
            ),
        )
        sock.sendall(b"exit\n\n")
    except (EOFError, OSError):
        pass
    except Exception:
        logging.exception("call failed")
    finally:
        sock.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    server = StreamServer((args.host, args.port), handle, backlog=4096)
    server.start()
    ready(server.address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
