"""Wake FreeSWITCH's idle listener so completions are not held for its 20 ms poll (spec 9).

An idle mod_event_socket listener waits for input in a 20 ms poll before it writes queued events,
so the CHANNEL_EXECUTE_COMPLETE a flow waits for can sit there up to 20 ms. Any byte from the client
ends the poll, and a bare LF is discarded without a reply. While a completion is awaited, the waker
writes single LFs every ``interval`` for the first ``burst`` seconds (most verbs complete within a
park tick or two), or at intervals doubling up to ``max_interval`` if that is set higher (1, 2, 4, 4,
... ms: 16 writes in 60 ms instead of 60, each a syscall and a wake-up on both sides, for a completion
held up to ``max_interval``). Applications that play media or wait for the caller (the session's
``LONG_RUNNING_APPS``) back off that way by default (``long_max_interval``, 4 ms), the others keep
1 ms; then every ``slow_interval`` if set (off by default: a long playback would cost a write every
few ms for its whole length, on every call). It runs on an event-loop timer, not a greenlet, and
never writes in the middle of a command (it skips a tick while a command is written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gevent


@dataclass(slots=True)
class WakerSettings:
    enabled: bool = True
    interval: float = 0.001
    # the interval doubles after each write up to this; = interval (the default): fixed. 0.004 writes 16
    # LFs in the 60 ms burst instead of 60 (less CPU on both sides) but holds a completion up to 4 ms:
    # under the timing model the async completion p50 went from ~1 to ~2.8 ms
    max_interval: float = 0.001
    # the same cap for applications that play media or wait for the caller (``Waker.around(long=True)``):
    # they complete seconds later, and 60 writes in their first 60 ms cost both sides CPU for nothing
    # (measured: a 2 s playback's call, 5.6 -> 2.9 ms of server CPU with no waker at all)
    long_max_interval: float = 0.004
    burst: float = 0.060
    slow_interval: float | None = None  # e.g. 0.005 to keep long verbs prompt too, at that cost


class Waker:
    __slots__ = ("_cap", "_connection", "_interval", "_pending", "_settings", "_started", "_timer", "bytes_written")

    def __init__(self, connection: Any, settings: WakerSettings) -> None:
        self._connection = connection
        self._settings = settings
        self._pending = 0
        self._timer: Any = None
        self._interval = 0.0  # the running timer's (gevent's timer does not say)
        self._cap = settings.max_interval
        self._started = 0.0
        self.bytes_written = 0

    def around(self, *, long: bool) -> Waker:
        """``with waker.around(long=...)``: the next wait's cadence (``long``: an application that
        usually runs for seconds backs off to ``long_max_interval``); a wait already under way keeps its
        timer."""
        if self._timer is None:
            self._cap = self._settings.long_max_interval if long else self._settings.max_interval
        return self

    def __enter__(self) -> Waker:
        self._pending += 1
        if self._timer is None:
            self._start(self._settings.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._stop()

    def _start(self, interval: float) -> None:
        loop = gevent.get_hub().loop
        if self._timer is None:
            # the loop's clock is only read once per iteration: after a long stretch without yielding it
            # is stale, and the first tick would find the burst over
            loop.update_now()
            self._started = loop.now()
        else:
            self._timer.close()
        self._timer = loop.timer(interval, interval)
        self._interval = interval
        self._timer.start(self._tick)

    def _stop(self) -> None:
        self._cap = self._settings.max_interval
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()

    def _tick(self) -> None:
        settings = self._settings
        if gevent.get_hub().loop.now() - self._started >= settings.burst:
            if settings.slow_interval is None:
                self._stop()
                return
            if self._interval != settings.slow_interval:
                self._start(settings.slow_interval)
        elif self._interval < self._cap:
            self._start(min(2 * self._interval, self._cap))
        if self._connection.wake():
            self.bytes_written += 1
