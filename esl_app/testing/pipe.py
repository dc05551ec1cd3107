"""An in-memory, socket-like byte pipe for gevent: run a call with no sockets at all.

``memory_socket_pair()`` returns two connected ends. Each end offers the subset of the socket API
the transport uses (``recv``, ``sendall``, ``close``, ``shutdown``), so the same connection and fake
peer code runs over TCP and in memory. An optional ``chunker`` splits what is written into
arbitrary pieces, because real reads split and merge frames.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

from gevent.queue import Queue

_EOF = b""


class MemorySocket:
    def __init__(self, inbox: Queue, name: str) -> None:
        self._inbox = inbox
        self._peer: MemorySocket | None = None
        self._pending = b""
        self._closed = False
        self._eof = False
        self.name = name
        self.chunker: Callable[[bytes], list[bytes]] | None = None
        self.bytes_sent = 0

    def recv(self, size: int) -> bytes:
        if self._closed:
            raise OSError("recv on a closed memory socket")
        if not self._pending:
            if self._eof:
                return _EOF
            data = self._inbox.get()
            if data is _EOF or data == _EOF:
                self._eof = True
                return _EOF
            self._pending = data
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def sendall(self, data: bytes) -> None:
        if self._closed:
            raise OSError("send on a closed memory socket")
        peer = self._peer
        if peer is None or peer._closed:
            raise BrokenPipeError("the other end of the memory socket is closed")
        if not data:
            return
        self.bytes_sent += len(data)
        pieces = self.chunker(bytes(data)) if self.chunker else [bytes(data)]
        for piece in pieces:
            if piece:
                peer._inbox.put(piece)

    send = sendall

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        if how in (socket.SHUT_WR, socket.SHUT_RDWR) and self._peer is not None:
            self._peer._inbox.put(_EOF)

    def close(self) -> None:
        if self._closed:
            return
        self.shutdown(socket.SHUT_WR)
        self._closed = True
        self._inbox.put(_EOF)  # wake a reader blocked on this end

    def fileno(self) -> int:
        return -1

    def getpeername(self) -> tuple[str, int]:
        return ("memory", 0)

    def setsockopt(self, *args: object) -> None:
        return None


def memory_socket_pair(name: str = "memory") -> tuple[MemorySocket, MemorySocket]:
    a = MemorySocket(Queue(), f"{name}:a")
    b = MemorySocket(Queue(), f"{name}:b")
    a._peer, b._peer = b, a
    return a, b


def random_chunker(seed: int | None = None, max_chunk: int = 700) -> Callable[[bytes], list[bytes]]:
    """Split writes at random points, as TCP reads do."""
    rng = random.Random(seed)

    def chunk(data: bytes) -> list[bytes]:
        pieces, i = [], 0
        while i < len(data):
            step = rng.randint(1, max_chunk)
            pieces.append(data[i : i + step])
            i += step
        return pieces

    return chunk
