"""One inbound Event Socket connection to a fake FreeSWITCH node (port 8021): FreeSWITCH's listener side.

A ``NodeSession`` plays mod_event_socket's ``listener_run`` for one client of a ``FakeNode``
(``esl_app.testing.fake_node``), byte for byte as in the inbound captures (07, 08, 14, 15):

* on accept: ``auth/request``, or ``text/rude-rejection`` and close when the node's ACL refuses the
  client (spec 5.1);
* ``auth <password>``: ``+OK accepted``, or ``-ERR invalid`` then the final notice without session
  headers and close; every other command before ``auth`` gets ``-ERR command not found``;
* one reply per command, in order; ``api`` runs on the listener (it blocks the connection, as
  ``api originate`` does on a real switch); ``bgapi`` replies ``+OK Job-UUID: <id>`` (the client's
  ``Job-UUID`` header honoured, cut to 36 characters) and fires BACKGROUND_JOB when the job ends;
* ``event``/``nixevent``/``noevents``/``filter`` with FreeSWITCH's filter semantics (positive filters
  OR-ed, a negative match vetoes, only-negative passes nothing, spec 5.2);
* events are written only between commands, never between reading a command and writing its reply;
* ``exit``: ``+OK bye``, the final notice, close.

The node decides what commands do (``FakeNode.run_api``); the session only speaks the protocol.
"""

from __future__ import annotations

import contextlib
import re
import socket
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event as Signal

from ..protocol import switch
from ..protocol.switch import Command, CommandReader
from .peer import EVENT_NAMES, LOG_LEVELS, EventSubscriptions, _command_word

if TYPE_CHECKING:
    from .fake_node import FakeNode

Pairs = list[tuple[str, str]]

__all__ = ["NodeSession", "filters_pass"]

# Commands that need a session bound to a call (inbound ``myevents <uuid>``); on an unbound socket
# they answer as the real switch does (capture 15).
_NOT_CONTROLLING = {
    "divert_events": "-ERR not controlling a session.",
    "linger": "-ERR not controlling a session",
    "nolinger": "-ERR not controlling a session",
}


def filters_pass(filters: list[tuple[str, str]], headers: Pairs) -> bool:
    """mod_event_socket's filter rule: at least one positive filter matches and no negative one does.

    Values starting with ``-`` are negative, ``/re/`` a regular expression (positive only); plain
    values compare case-insensitively; a filter on a header the event lacks is skipped (spec 5.2).
    """
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    positive = False
    for name, value in filters:
        actual = first.get(name.lower())
        if actual is None:
            continue
        negative = value.startswith("-")
        wanted = value[1:] if value[:1] in ("+", "-") else value
        if wanted.startswith("/") and not negative:
            pattern = wanted[1:-1] if wanted.endswith("/") and len(wanted) > 1 else wanted[1:]
            try:
                matched = re.search(pattern, actual) is not None
            except re.error:
                matched = False
        else:
            matched = actual.lower() == wanted.lower()
        if matched and negative:
            return False
        positive = positive or matched
    return positive


class NodeSession(EventSubscriptions):
    """FreeSWITCH's side of one inbound connection; ``run()`` serves it until it is closed."""

    def __init__(
        self,
        node: FakeNode,
        sock: Any,
        peer: tuple[str, int],
        *,
        chunker: Callable[[bytes], list[bytes]] | None = None,
    ) -> None:
        self.node = node
        self.sock = sock
        self.peer = peer
        self.chunker = chunker
        self.authenticated = False
        self.closed = False
        self.commands: list[str] = []  # first line of every command read, for assertions
        self._reader = CommandReader()
        self._commands: deque[Command] = deque()
        self._events: deque[bytes] = deque()
        self._signal = Signal()
        self._eof = False
        self._exit = False
        self._reader_greenlet: gevent.Greenlet | None = None
        self.greenlet: gevent.Greenlet | None = None  # the one running ``run`` (set by the node)
        # subscription state
        self._names: set[str] = set()
        self._all = False
        self._subclasses: set[str] = set()
        self._format = "plain"
        self._filters: list[tuple[str, str]] = []
        self._logging = False

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            if not self.node.acl_allows(self.peer):
                # ACL denial: the rejection instead of auth/request, then close (spec 5.1)
                self._write(switch.rude_rejection())
                return
            self._write(switch.auth_request())
            self._reader_greenlet = gevent.spawn(self._read_loop)
            self._serve()
        finally:
            self.close()

    def close(self, *, abort: bool = False) -> None:
        """Close the connection; ``abort`` resets it at once (a crashing process), else FIN after the writes."""
        if self.closed:
            return
        self.closed = True
        self._signal.set()
        if abort:
            with contextlib.suppress(OSError):
                # SO_LINGER 0: the kernel drops the socket with RST, as when the process dies
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        reader = self._reader_greenlet
        if reader is not None and reader is not gevent.getcurrent() and not reader.dead:
            reader.kill(block=False)
        self.node._session_closed(self)

    def notice_and_close(self, body: bytes = switch.FINAL_NOTICE_BODY) -> None:
        """Write a disconnect notice (without session headers: an unbound socket) and close."""
        if self.closed:
            return
        self._write(
            f"Content-Type: text/disconnect-notice\nContent-Length: {len(body)}\n\n".encode() + body
        )
        self.close()

    # -- events ---------------------------------------------------------------------------------

    def offer(self, name: str, headers: Pairs, body: str | None = None) -> None:
        """An event fired on the node: queued for this socket if subscribed and the filters pass it."""
        if self.closed or not self.authenticated:
            return
        if not (self._all or name in self._names):
            return
        if name == "CUSTOM" and not self._all:
            subclass = next((v for h, v in headers if h.lower() == "event-subclass"), None)
            if subclass and subclass not in self._subclasses:
                return
        if self._filters and not filters_pass(self._filters, headers):
            return
        if self._format == "json":
            data = switch.event_json(headers, body)
        elif self._format == "xml":
            data = switch.event_xml(headers, body)
        else:
            data = switch.event_plain(headers, body)
        self._events.append(data)
        self._signal.set()

    def write_raw(self, data: bytes) -> None:
        """Queue raw bytes as if they were an event (hostile-input tests)."""
        self._events.append(data)
        self._signal.set()

    # -- the listener loop ----------------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (OSError, ValueError):
                data = b""
            if not data:
                self._eof = True
                self._signal.set()
                return
            try:
                commands = self._reader.feed(data)
            except Exception:  # never let the reader die silently
                self._eof = True
                self._signal.set()
                return
            if commands:
                self._commands.extend(commands)
                self._signal.set()

    def _serve(self) -> None:
        # FreeSWITCH drops an inbound client that sends no auth within 25 s (spec 5.1)
        deadline = gevent.get_hub().loop.now() + self.node.auth_timeout
        while not self.closed:
            if self._commands:
                self._dispatch(self._commands.popleft())
                if self._exit:
                    return
                continue
            self._flush()
            if self._eof:
                return
            if not self.authenticated and not self.commands:
                remaining = deadline - gevent.get_hub().loop.now()
                if remaining <= 0:
                    self.notice_and_close()
                    return
            else:
                remaining = 5.0
            self._signal.clear()
            if self._commands or self._events or self._eof or self.closed:
                continue
            self._signal.wait(min(remaining, 5.0))

    def _flush(self) -> None:
        while self._events and not self.closed:
            self._write(self._events.popleft())

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        pieces = self.chunker(data) if self.chunker else [data]
        try:
            for piece in pieces:
                if piece:
                    self.sock.sendall(piece)
        except OSError:
            self._eof = True
            self._signal.set()

    # -- commands -------------------------------------------------------------------------------

    def _dispatch(self, command: Command) -> None:
        self.commands.append(command.line)
        word = _command_word(command.line)
        if word == "exit":
            self._write(switch.reply("+OK bye"))
            self._exit = True
            self.notice_and_close()
            return
        if not self.authenticated:
            if word == "auth":
                self._auth(command)
            else:
                self._write(switch.reply("-ERR command not found"))
            return
        handler = getattr(self, f"_cmd_{word}", None)
        if handler is None:
            self._write(switch.reply("-ERR command not found"))
            return
        reply = handler(command)
        if reply is not None:
            self._write(reply)

    def _auth(self, command: Command) -> None:
        if command.arg == self.node.password:
            self.authenticated = True
            self._write(switch.reply("+OK accepted"))
            return
        self._write(switch.reply("-ERR invalid"))
        self._exit = True
        self.notice_and_close()

    def _cmd_auth(self, command: Command) -> bytes:
        return switch.reply("-ERR command not found")  # already authenticated

    _cmd_userauth = _cmd_auth

    def _cmd_api(self, command: Command) -> bytes:
        text = command.arg.strip()
        # api runs on the listener thread: nothing else is read or written until it returns (4.1)
        return switch.api_response(self.node.run_api(text))

    def _cmd_bgapi(self, command: Command) -> bytes:
        text = command.arg.strip()
        job = (command.headers.get("Job-UUID") or "").strip()[:36] or str(uuidlib.uuid4())
        self.node.start_job(job, text)
        return switch.reply(f"+OK Job-UUID: {job}", ("Job-UUID", job))

    def _cmd_event(self, command: Command) -> bytes:
        tokens = command.arg.split()
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            self._format = tokens.pop(0).lower()
        keys = 0
        custom = False
        for token in tokens:
            if custom:
                self._subclasses.add(token)
                continue
            name = token.upper()
            if name not in EVENT_NAMES:
                continue
            keys += 1
            if name == "ALL":
                self._all = True
            else:
                self._names.add(name)
            custom = custom or name == "CUSTOM"
        if not keys:
            return switch.reply("-ERR no keywords supplied")
        return switch.reply(f"+OK event listener enabled {self._format}")

    def _cmd_log(self, command: Command) -> bytes:
        level = command.arg.strip() or "debug"
        number = int(level) if level.isdigit() else LOG_LEVELS.get(level.lower())
        if number is None or number > 7:
            return switch.reply("-ERR invalid log level")
        self._logging = True
        return switch.reply(f"+OK log level {level} [{number}]")

    def _cmd_nolog(self, command: Command) -> bytes:
        if self._logging:
            self._logging = False
            return switch.reply("+OK no longer logging")
        return switch.reply("-ERR not loging")

    def _cmd_myevents(self, command: Command) -> bytes:
        # binding an inbound socket to a call is not modelled; without a UUID the real answer is this
        return switch.reply("-ERR command not found")

    def _cmd_sendmsg(self, command: Command) -> bytes:
        target = command.arg.strip() or (command.headers.get("session-id") or "").strip()
        return switch.reply(f"-ERR invalid session id [{target}]")

    def _cmd_getvar(self, command: Command) -> bytes:
        return switch.reply("-ERR command not found")

    def _cmd_resume(self, command: Command) -> bytes:
        return switch.reply("-ERR command not found")

    def _cmd_divert_events(self, command: Command) -> bytes:
        return switch.reply(_NOT_CONTROLLING["divert_events"])

    def _cmd_linger(self, command: Command) -> bytes:
        return switch.reply(_NOT_CONTROLLING["linger"])

    def _cmd_nolinger(self, command: Command) -> bytes:
        return switch.reply(_NOT_CONTROLLING["nolinger"])
