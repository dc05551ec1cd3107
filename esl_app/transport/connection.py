"""One Event Socket connection on gevent: a read watcher (or reader greenlet), FIFO replies, locked writes.

FreeSWITCH answers every command with exactly one reply, in order, and may write events before a
reply (spec 4.3). So replies go to the oldest pending command and every other frame goes to
``on_frame``. The reader never runs user code: ``on_frame`` must only hand frames over.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from gevent.socket import socket as _GeventSocket

from ..errors import CommandTimeout, ConnectionClosed
from ..protocol import Frame, FrameKind, Parser, ProtocolError

log = logging.getLogger("esl_app.transport")

RECV_SIZE = 65536
# A bare LF is discarded by FreeSWITCH without a reply and wakes its 20 ms event poll (spec 9).
WAKE = b"\n"


class InterruptedWrite(ConnectionClosed):
    """A command was cut off mid-write; the connection was closed rather than left misframed."""


class Connection:
    """Reads frames from ``sock`` (from the event loop for a gevent socket, else in a greenlet);
    writes whole commands under a lock."""

    __slots__ = (
        "_on_close", "_on_frame", "_parser", "_pending", "_raw", "_reader", "_watcher", "_write_lock",
        "bytes_written", "close_reason", "closed", "name", "sock", "write_timeout",
    )  # fmt: skip

    def __init__(
        self,
        sock: Any,
        on_frame: Callable[[Frame], None],
        on_close: Callable[[BaseException | None], None] | None = None,
        *,
        name: str = "",
        write_timeout: float = 10.0,
        parser: Parser | None = None,
    ) -> None:
        self.sock = sock
        self.name = name
        self.write_timeout = write_timeout
        self._on_frame = on_frame
        self._on_close = on_close
        # a caller may bring its own limits (the inbound client caps event sizes tighter)
        self._parser = parser if parser is not None else Parser()
        # replies owed, oldest first; rarely more than 3, and a list is ~500 bytes smaller than a deque
        self._pending: list[AsyncResult] = []
        self._write_lock = Semaphore()
        self._reader: gevent.Greenlet | None = None
        self._watcher: Any = None  # the read watcher, when reading without a greenlet
        self._raw: Any = None
        self.closed = False
        self.close_reason: BaseException | None = None
        self.bytes_written = 0

    def start(self) -> None:
        raw = _raw_socket(self.sock)
        if raw is None:
            self._reader = gevent.spawn(self._read_loop)
            return
        # A real gevent socket: no reader greenlet. The event loop calls ``_on_readable`` when bytes
        # arrive, which saves a greenlet (its stacks: ~8 kB per held call) and a switch per read.
        self._raw = raw
        self._watcher = gevent.get_hub().loop.io(raw.fileno(), 1)
        self._watcher.start(self._on_readable)

    # -- writing ---------------------------------------------------------------------------------
    def send(self, data: bytes, *, expect_reply: bool = True) -> AsyncResult | None:
        """Write one serialized command; return the AsyncResult its reply will resolve."""
        results = self._write([data] if expect_reply else [], data)
        return results[0] if results else None

    def send_batch(self, datas: list[bytes]) -> list[AsyncResult]:
        """Several serialized commands in one write (one syscall for small ones); their replies, in
        order. A pipelined checkpoint rides on it: it reaches FreeSWITCH with the command after it."""
        return self._write(datas, b"".join(datas))

    def _write(self, commands: list[bytes], data: bytes) -> list[AsyncResult]:
        if self.closed:
            raise ConnectionClosed(f"connection {self.name} is closed") from self.close_reason
        results = [AsyncResult() for _ in commands]
        with self._write_lock:
            # queueing and writing happen together, so the FIFO order is the wire order (greenswitch G8)
            self._pending.extend(results)
            try:
                sent = 0
                raw = self._raw
                if raw is not None:
                    # the OS socket is non-blocking: a command that fits the send buffer (nearly all)
                    # goes out in one syscall, without arming a timer
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        sent = raw.send(data)
                if sent < len(data):
                    with gevent.Timeout(self.write_timeout, CommandTimeout(f"write to {self.name} timed out")):
                        self.sock.sendall(data[sent:] if sent else data)
            except BaseException as exc:
                for result in results:
                    if result in self._pending:
                        self._pending.remove(result)
                if isinstance(exc, OSError):
                    self._closed(exc)
                    raise ConnectionClosed(f"write to {self.name} failed: {exc}") from exc
                # Interrupted mid-write (write_timeout, a kill, a flow's own gevent.Timeout): part of the
                # command may be on the wire, and the next command would continue inside it, shifting
                # every later reply onto the wrong command. The stream cannot be trusted any more.
                log.warning("%s: a write was interrupted (%r): closing the connection", self.name, exc)
                self._closed(InterruptedWrite(f"write to {self.name} interrupted by {exc!r}"))
                raise
        self.bytes_written += len(data)
        return results

    def wake(self) -> bool:
        """Write one bare LF unless a command is being written (never splits one) or the socket buffer
        is full. Safe from an event-loop callback: it never blocks."""
        if self.closed or self._write_lock.locked():
            return False
        try:
            if self._raw is not None:
                if self._raw.send(WAKE) != 1:
                    return False
            else:
                self.sock.sendall(WAKE)
        except BlockingIOError:
            return False
        except OSError:
            return False  # the reader sees the broken connection and reports it
        self.bytes_written += 1
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

    def close(self, reason: BaseException | None = None) -> None:
        """Close the socket (FreeSWITCH then continues the dialplan, spec 2.7)."""
        self._closed(reason)

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
                self._deliver(data)
        except ProtocolError as exc:
            log.error("%s: malformed frame from FreeSWITCH, closing the connection: %s", self.name, exc)
            reason = exc
        except OSError as exc:
            if not self.closed:
                reason = exc
        except gevent.GreenletExit:
            pass
        except Exception as exc:  # a bug in a frame handler: end the call rather than leave waits hanging
            log.exception("%s: frame handling failed, closing the connection", self.name)
            reason = exc
        self._closed(reason, from_reader=True)

    def _deliver(self, data: bytes) -> None:
        """Frame ``data``; replies go to the oldest pending command, everything else to ``on_frame``."""
        for frame in self._parser.feed(data):
            if frame.kind is FrameKind.REPLY or frame.kind is FrameKind.API:
                if self._pending:
                    self._pending.pop(0).set(frame)
                else:
                    # FreeSWITCH never sends one; log instead of crashing (greenswitch G18)
                    log.warning("%s: reply with no pending command: %r", self.name, frame.reply_text)
            else:
                self._on_frame(frame)

    def _on_readable(self) -> None:
        """One read, run by the event loop (never blocks, never runs user code: like ``_read_loop``)."""
        try:
            data = self._raw.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop_reading(None if self.closed else exc)
            return
        reason: BaseException | None = None
        try:
            if not data:
                self._parser.eof()
                self._stop_reading(None)
                return
            self._deliver(data)
            return
        except ProtocolError as exc:
            log.error("%s: malformed frame from FreeSWITCH, closing the connection: %s", self.name, exc)
            reason = exc
        except Exception as exc:  # a bug in a frame handler: end the call rather than read on blindly
            log.exception("%s: frame handling failed, closing the connection", self.name)
            reason = exc
        self._stop_reading(reason)

    def _stop_reading(self, reason: BaseException | None) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        self._closed(reason, from_reader=True)

    def _closed(self, reason: BaseException | None, from_reader: bool = False) -> None:
        watcher = self._watcher
        if watcher is not None and not from_reader:
            # closed from our side: stop watching the fd before it is closed, then report the close
            # from the loop, as the reader greenlet would when its recv fails
            self._watcher = None
            watcher.close()
            gevent.get_hub().loop.run_callback(self._closed, None, True)
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
            self._pending.pop(0).set_exception(error)
        # only the reader reports: it sees EOF or an error on the closed socket in any case
        if from_reader:
            on_close = self._on_close
            # nothing more will be read: drop the owner's callbacks, which would otherwise keep the
            # owner and this connection in a reference cycle (freed only by the cyclic collector, with
            # the call's ~11 kB connect reply and its last events)
            self._on_frame = _ignore_frame
            self._on_close = None
            if on_close is not None:
                on_close(reason)


def _ignore_frame(frame: Frame) -> None:
    """The frame handler of a connection whose reading has ended."""


def _raw_socket(sock: Any) -> Any:
    """The OS-level socket of a plain gevent socket (None for wrappers and in-memory pipes)."""
    if type(sock) is not _GeventSocket:
        return None
    raw = getattr(sock, "_sock", None)
    return raw if raw is not None and hasattr(raw, "fileno") else None
