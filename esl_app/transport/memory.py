"""Give freed heap back to the OS after a burst of calls has ended.

When thousands of calls end together, each receives its hangup sequence (~55 kB of frames on a real
SIP call) at the same moment; Python and glibc keep the freed arenas, so RSS stays at the burst's peak.
``release_memory`` collects garbage and asks glibc to trim (``malloc_trim(0)``); ``IdleTrimmer`` calls it
once the number of active calls has fallen to a small fraction of its peak, debounced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

import gevent

log = logging.getLogger("esl_app.transport")

_libc = None
_name = ctypes.util.find_library("c")
if _name:
    try:
        _libc = ctypes.CDLL(_name)
        _libc.malloc_trim  # noqa: B018 - glibc only; other libcs have no such call
    except (OSError, AttributeError):
        _libc = None


def release_memory() -> bool:
    """Collect garbage and return free heap to the OS; False where the C library cannot trim."""
    gc.collect()
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


class IdleTrimmer:
    """Trim when active calls drop to ``fraction`` of the peak since the last trim (at least ``minimum``
    calls must have been active), ``delay`` seconds after the drop, if it still holds then."""

    def __init__(self, fraction: float = 0.1, minimum: int = 100, delay: float = 1.0) -> None:
        self.fraction = fraction
        self.minimum = minimum
        self.delay = delay
        self.peak = 0
        self.trims = 0
        self._pending: gevent.Greenlet | None = None

    def update(self, active: int) -> None:
        if active > self.peak:
            self.peak = active
            return
        if self.peak >= self.minimum and active <= self.peak * self.fraction and self._pending is None:
            self._pending = gevent.spawn_later(self.delay, self._trim, active)

    def _trim(self, active: int) -> None:
        self._pending = None
        if release_memory():
            self.trims += 1
            log.debug("returned free heap to the OS after %d calls ended (peak %d)", self.peak - active, self.peak)
        self.peak = active
