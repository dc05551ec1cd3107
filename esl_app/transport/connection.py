"""One Event Socket connection on gevent: a reader greenlet, FIFO reply matching, locked writes.

FreeSWITCH answers every command with exactly one reply, in order, and may write events before a
reply (spec 4.3). So replies go to the oldest pending command and every other frame goes to
``on_frame``. The reader never runs user code: ``on_frame`` must only hand frames over.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from ..errors import CommandTimeout, ConnectionClosed
from ..protocol import Frame, FrameKind, Parser, ProtocolError

log = logging.getLogger("esl_app.transport")

RECV_SIZE = 65536


class Connection:
    """Reads frames from ``sock`` in its own greenlet; writes whole commands under a lock."""

    def __init__(
        self,
        sock: Any,
        on_frame: Callable[[Frame], None],
        on_close: Callable[[BaseException | None], None] | None = None,
        *,
        name: str = "",
        write_timeout: float = 10.0,
    ) -> None:
        self.sock = sock
        self.name = name
        self.write_timeout = write_timeout
        self._on_frame = on_frame
        self._on_close = on_close
        self._parser = Parser()
        self._pending: deque[AsyncResult] = deque()
        self._write_lock = Semaphore()
        self._reader: gevent.Greenlet | None = None
        self.closed = False
        self.close_reason: BaseException | None = None
        self.bytes_written = 0

    def start(self) -> None:
        self._reader = gevent.spawn(self._read_loop)

    # -- writing ---------------------------------------------------------------------------------
    def send(self, data: bytes, *, expect_reply: bool = True) -> AsyncResult | None:
        """Write one serialized command; return the AsyncResult its reply will resolve."""
        if self.closed:
            raise ConnectionClosed(f"connection {self.name} is closed") from self.close_reason
        result = AsyncResult() if expect_reply else None
        with self._write_lock:
            # queueing and writing happen together, so the FIFO order is the wire order (greenswitch G8)
            if result is not None:
                self._pending.append(result)
            try:
                with gevent.Timeout(self.write_timeout, CommandTimeout(f"write to {self.name} timed out")):
                    self.sock.sendall(data)
            except BaseException as exc:
                if result is not None and result in self._pending:
                    self._pending.remove(result)
                if isinstance(exc, OSError):
                    self._closed(exc)
                    raise ConnectionClosed(f"write to {self.name} failed: {exc}") from exc
                raise
        self.bytes_written += len(data)
        return result

    def write_nowait(self, data: bytes) -> bool:
        """Write ``data`` only if no command is being written right now (never splits a command)."""
        if self.closed or self._write_lock.locked():
            return False
        with self._write_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self._closed(exc)
                return False
        self.bytes_written += len(data)
        return True

    def request(self, data: bytes, timeout: float | None) -> Frame:
        """Send a command and wait for its reply frame."""
        result = self.send(data)
        assert result is not None
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            command = data.split(b"\n", 1)[0].decode(errors="replace")
            raise CommandTimeout(f"no reply to {command!r} within {timeout} s") from None

    def close(self) -> None:
        """Close the socket (FreeSWITCH then continues the dialplan, spec 2.7)."""
        self._closed(None)

    # -- reading ---------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        parser = self._parser
        reason: BaseException | None = None
        try:
            while True:
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    parser.eof()
                    break
                for frame in parser.feed(data):
                    if frame.kind is FrameKind.REPLY or frame.kind is FrameKind.API:
                        if self._pending:
                            self._pending.popleft().set(frame)
                        else:
                            # FreeSWITCH never sends one; log instead of crashing (greenswitch G18)
                            log.warning("%s: reply with no pending command: %r", self.name, frame.reply_text)
                    else:
                        self._on_frame(frame)
        except ProtocolError as exc:
            log.error("%s: malformed frame from FreeSWITCH, closing the connection: %s", self.name, exc)
            reason = exc
        except OSError as exc:
            if not self.closed:
                reason = exc
        except gevent.GreenletExit:
            pass
        self._closed(reason, from_reader=True)

    def _closed(self, reason: BaseException | None, from_reader: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self.sock.close()
        # every pending command fails: no reply will ever come (spec 4.3, greenswitch G9)
        error = ConnectionClosed(f"connection {self.name} closed" + (f": {reason}" if reason else ""))
        while self._pending:
            self._pending.popleft().set_exception(error)
        # only the reader reports: it sees EOF or an error on the closed socket in any case
        if from_reader and self._on_close is not None:
            self._on_close(reason)
