"""Wake FreeSWITCH's idle listener so completions are not held for its 20 ms poll (spec 9).

An idle mod_event_socket listener waits for input in a 20 ms poll before it writes queued events,
so the CHANNEL_EXECUTE_COMPLETE a flow waits for can sit there up to 20 ms. Any byte from the client
ends the poll, and a bare LF is discarded without a reply. While a completion is awaited, the waker
writes single LFs: every ``interval`` for the first ``burst`` seconds (most verbs complete within a
park tick or two), then every ``slow_interval`` (long verbs such as playback), never in the middle
of a command (it shares the connection's write lock and skips a tick when the lock is taken).
"""

from __future__ import annotations

from dataclasses import dataclass

import gevent

WAKE = b"\n"


@dataclass(slots=True)
class WakerSettings:
    enabled: bool = True
    interval: float = 0.001
    burst: float = 0.060
    slow_interval: float | None = 0.005  # None: stop after the burst


class Waker:
    __slots__ = ("_connection", "_greenlet", "_pending", "_settings", "bytes_written")

    def __init__(self, connection, settings: WakerSettings) -> None:
        self._connection = connection
        self._settings = settings
        self._pending = 0
        self._greenlet: gevent.Greenlet | None = None
        self.bytes_written = 0

    def __enter__(self) -> Waker:
        self._pending += 1
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        return self

    def __exit__(self, *exc: object) -> None:
        self._pending -= 1
        if self._pending == 0 and self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        settings = self._settings
        loop = gevent.get_hub().loop
        started = loop.now()
        while self._pending > 0:
            if loop.now() - started < settings.burst:
                gevent.sleep(settings.interval)
            elif settings.slow_interval is not None:
                gevent.sleep(settings.slow_interval)
            else:
                return
            if self._connection.write_nowait(WAKE):
                self.bytes_written += 1
