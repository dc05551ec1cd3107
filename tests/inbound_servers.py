"""Servers that play FreeSWITCH's side of an inbound connection from a script, for the client tests.

``ScriptedServer(handler)`` listens on 127.0.0.1 and runs ``handler(conn, index)`` for each
connection (``index`` counts from 0), so a test can misbehave on the first connection and behave on
the next one (to check the reconnect). ``ServerConn`` reads whole commands the way FreeSWITCH does
(``CommandReader``). ``replay(capture, conn)`` answers with the bytes a real FreeSWITCH 1.10.12 wrote,
command for command, from ``fixtures/transcripts``.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.socket
from gevent.server import StreamServer

from esl_app.protocol import switch
from esl_app.protocol.switch import Command, CommandReader

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
ACCEPTED = switch.reply("+OK accepted")


class ServerConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = CommandReader()
        self.pending: list[Command] = []
        self.received: list[Command] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, timeout: float = 10.0) -> Command | None:
        """The next command, or None at EOF / after ``timeout``."""
        with gevent.Timeout(timeout, False):
            while not self.pending:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.pending.extend(self.reader.feed(data))
        if not self.pending:
            return None
        command = self.pending.pop(0)
        self.received.append(command)
        return command

    def login(self) -> None:
        """auth/request, accept the password, accept every setup command (event, filter)."""
        self.send(switch.auth_request())
        command = self.command()
        assert command is not None and command.name == "auth"
        self.send(ACCEPTED)

    def serve_setup(self, commands: int = 1) -> None:
        """Answer the client's setup: ``event`` (and ``filter`` lines when it has filters)."""
        for _ in range(commands):
            command = self.command()
            if command is None:
                return
            if command.name == "event":
                self.send(switch.reply("+OK event listener enabled plain"))
            elif command.name == "filter":
                self.send(switch.reply("+OK filter added."))
            else:
                raise AssertionError(f"expected a setup command, got {command.line!r}")

    def serve_api(self, answers: Callable[[Command], bytes] | None = None, timeout: float = 10.0) -> None:
        """Answer commands until EOF: api with ``answers`` (default: echo the argument)."""
        while True:
            command = self.command(timeout)
            if command is None:
                return
            if answers is not None:
                self.send(answers(command))
            elif command.name == "api":
                self.send(switch.api_response(command.arg.partition(" ")[2]))
            elif command.name == "exit":
                self.send(switch.reply("+OK bye") + switch.final_notice())
                return
            else:
                self.send(switch.reply("+OK"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class ScriptedServer:
    def __init__(self, handler: Callable[[ServerConn, int], None]) -> None:
        self.handler = handler
        self.connections: list[ServerConn] = []
        self.errors: list[BaseException] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    def _handle(self, sock: socket.socket, address: tuple[str, int]) -> None:
        conn = ServerConn(sock)
        index = len(self.connections)
        self.connections.append(conn)
        try:
            self.handler(conn, index)
        except Exception as exc:  # surfaced by the test through ``errors``
            self.errors.append(exc)
        finally:
            conn.close()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.server_port)

    def __enter__(self) -> ScriptedServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)


def capture_steps(capture: str, conn: str) -> list[tuple[str, bytes]]:
    """One connection of a capture in wire order: ("in", bytes FreeSWITCH wrote) / ("out", bytes sent to it)."""
    steps: list[tuple[str, bytes]] = []
    with (TRANSCRIPTS / f"{capture}.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("conn") != conn:
                continue
            data = record["bytes_latin1"].encode("latin-1")
            steps.append(("in" if record["dir"].startswith("FS->") else "out", data))
    return steps


def replay(capture: str, conn_name: str, *, hold: float = 5.0) -> Callable[[ServerConn, int], None]:
    """A handler that writes FreeSWITCH's captured bytes, each batch after the command that caused it.

    Commands are matched by count: the Nth command the client sends gets what FreeSWITCH wrote after
    the Nth command of the capture (in the same read boundaries). The commands themselves are kept
    in ``ServerConn.received`` for the test to compare. Then the connection is held ``hold`` seconds.
    """
    steps = capture_steps(capture, conn_name)

    def handler(conn: ServerConn, index: int) -> None:
        # what FreeSWITCH wrote before the first command (auth/request)
        position = 0
        while position < len(steps) and steps[position][0] == "in":
            conn.send(steps[position][1])
            position += 1
        while position < len(steps):
            # the capture's next command (one write can hold one command)
            position += 1
            command = conn.command()
            if command is None:
                return
            while position < len(steps) and steps[position][0] == "in":
                conn.send(steps[position][1])
                position += 1
        conn.command(hold)

    return handler
