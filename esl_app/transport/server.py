"""The outbound Event Socket server: FreeSWITCH's ``socket`` application connects here, one call each.

Built on gevent's ``StreamServer``: its accept loop is event driven and greedy (it accepts up to
``max_accept`` connections per wake-up, without polling), unlike greenswitch's, which sleeps 0.1 s
when idle (G16). The listen backlog is deep, and every accepted connection gets its own greenlet at
once: FreeSWITCH speaks second, so a connection left in the accept queue is a silent caller.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from .keepalive import KeepaliveSettings, enable_keepalive
from .memory import IdleTrimmer
from .peers import PeerFilter

log = logging.getLogger("esl_app.transport")

Handler = Callable[[Any, tuple[str, int]], None]
# Admission hook: called in the accept callback (must not block). Returns the socket to hand to the
# handler (possibly wrapped), or None when it has refused the call and taken care of the socket.
Door = Callable[[Any, tuple[str, int]], Any]
# Told of each connection closed at accept because its peer is not on the allow-list (e.g. a metric).
Denied = Callable[[str], None]


def listen_socket(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening TCP socket; a bind failure names the address (no exit, unlike greenswitch)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(backlog)
    return sock


class _Server(StreamServer):
    """StreamServer whose ``do_handle`` (run in the accept callback) first checks who is calling
    (``peers``), then asks the door; always given ``spawn``, and a ``handle`` that closes the socket."""

    door: Door | None = None
    peers: PeerFilter | None = None
    deny: Callable[[Any, str], None] | None = None

    def do_handle(self, *args: Any) -> None:
        peers, door = self.peers, self.door
        if peers is not None or door is not None:
            sock, address = args
            if peers is not None and not peers.allows(address[0]):
                assert self.deny is not None
                self.deny(sock, address[0])
                return
            if door is not None:
                try:
                    admitted = door(sock, address)
                except Exception:
                    log.exception("admission failed for %s; the call is admitted", address)
                    admitted = sock
                if admitted is None:
                    return
                args = (admitted, address)
        try:
            # the handler itself, not gevent's wrapper around it: the wrapper's ``handle(*args)`` adds
            # an interpreter frame to the C stack that a held call's greenlet keeps (copied to the
            # heap); OutboundServer._handle closes the socket when the call is done, as the wrapper would
            self._spawn(self._handle, *args)
        except BaseException:
            self.do_close(*args)
            raise


class OutboundServer:
    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 8084,
        *,
        backlog: int = 4096,
        max_accept: int = 1024,
        reuse_port: bool = False,
        listener: socket.socket | None = None,
        door: Door | None = None,
        peers: PeerFilter | None = None,
        on_denied: Denied | None = None,
        keepalive: KeepaliveSettings | None = None,
    ) -> None:
        """``peers``: who may connect (None: anybody); others are closed at accept, before any byte
        is written, and reported to ``on_denied``. ``door``: admission, after that check.
        ``keepalive``: the app's sessions' keepalive, set once on the listener, which every accepted
        socket inherits on Linux (as TCP_NODELAY), so a session finds it on and sets nothing per call;
        None: each session sets its own."""
        self.handler = handler
        self.host = host
        self.port = port
        self.backlog = backlog
        self.max_accept = max_accept
        self.reuse_port = reuse_port
        self.listener = listener  # an already bound and listening socket (shared by a pool's workers)
        self.door = door
        self.peers = peers
        self.on_denied = on_denied
        self.keepalive = keepalive
        # Linux copies a listener's socket options to the sockets it accepts; elsewhere set them per call
        self._options_inherited = False
        self.denied = 0
        self._denied_since_log = 0
        self._last_denied_log = 0.0
        self._server: StreamServer | None = None
        self._calls: set[gevent.Greenlet] = set()
        self.trimmer = IdleTrimmer()  # RSS back to the OS after a burst of calls ended
        self._stopped = Event()
        self.accepted = 0

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return (self.host, self.port)
        return self._server.address[:2]

    @property
    def active(self) -> int:
        return len(self._calls)

    def _listener(self) -> socket.socket:
        sock = listen_socket(self.host, self.port, self.backlog, reuse_port=self.reuse_port)
        sock.setblocking(False)
        return sock

    def start(self) -> None:
        if self.listener is not None:
            self.listener.setblocking(False)
        listener = self.listener or self._listener()
        self._options_inherited = sys.platform.startswith("linux") and self._set_options(listener)
        server = _Server(listener, self._handle, spawn=self._spawn)
        server.door = self.door
        server.peers = self.peers
        server.deny = self._deny
        server.max_accept = self.max_accept
        server.start()
        self._server = server
        log.info("listening on %s:%s (backlog %d)", *self.address, self.backlog)

    def _set_options(self, listener: socket.socket) -> bool:
        """TCP_NODELAY and keepalive on the listener, for the sockets it accepts; True when set."""
        try:
            # our commands are small and latency bound: never let Nagle hold them back
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            return False
        if self.keepalive is not None:
            enable_keepalive(listener, self.keepalive)
        return True

    def serve_forever(self) -> None:
        if self._server is None:
            self.start()
        self._stopped.wait()

    def _deny(self, sock: Any, host: str) -> None:
        """Close a connection from a peer not on the allow-list: nothing written, so the switch sees
        the socket close and goes on with its dialplan (its fallback)."""
        with contextlib.suppress(OSError):
            sock.close()
        self.denied += 1
        if self.on_denied is not None:
            try:
                self.on_denied(host)
            except Exception:
                log.exception("counting a denied connection failed")
        # one line per second at most: a scan must not become a flood of log lines
        self._denied_since_log += 1
        now = time.monotonic()
        if now - self._last_denied_log >= 1.0:
            log.warning(
                "closed %d connection(s) from peers not allowed to connect (latest %s; allowed: %s)",
                self._denied_since_log, host, self.peers.describe() if self.peers else "any",
            )  # fmt: skip
            self._denied_since_log = 0
            self._last_denied_log = now

    def _spawn(self, func: Callable[..., None], *args: Any) -> gevent.Greenlet:
        greenlet = gevent.spawn(func, *args)
        self._calls.add(greenlet)
        greenlet.link(self._call_done)
        return greenlet

    def _call_done(self, greenlet: gevent.Greenlet) -> None:
        self._calls.discard(greenlet)
        self.trimmer.update(len(self._calls))

    def _handle(self, sock: Any, address: tuple[str, int]) -> None:
        self.accepted += 1
        if not self._options_inherited:
            # our commands are small and latency bound: never let Nagle hold them back
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.handler(sock, address)
        except Exception:
            log.exception("call handler for %s:%s failed", *address[:2])
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def stop_accepting(self) -> None:
        """Stop taking new connections (established calls go on)."""
        if self._server is not None:
            self._server.close()

    def stop(self, deadline: float = 30.0) -> int:
        """Stop accepting, let active calls finish for up to ``deadline`` seconds, then kill the rest.

        Returns how many calls had to be killed.
        """
        self.stop_accepting()
        remaining = list(self._calls)
        if remaining:
            log.info("draining %d active calls (deadline %.1f s)", len(remaining), deadline)
            gevent.joinall(remaining, timeout=deadline)
        still = [g for g in self._calls if not g.dead]
        if still:
            log.warning("killing %d calls still active after %.1f s", len(still), deadline)
            gevent.killall(still, block=True, timeout=5)
        if self._server is not None:
            self._server.stop(timeout=0)
        self._stopped.set()
        return len(still)
