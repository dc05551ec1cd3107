"""Returning freed heap after a burst of calls (glibc malloc_trim)."""

from __future__ import annotations

import gevent

from esl_app.transport import memory
from esl_app.transport.memory import IdleTrimmer


def test_release_memory_trims_on_glibc():
    assert memory.release_memory() is True  # these machines run glibc


def test_trims_once_after_active_calls_fall_below_a_fraction_of_the_peak(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    trimmer = IdleTrimmer(fraction=0.1, minimum=100, delay=0.01)
    for active in range(0, 501):
        trimmer.update(active)
    for active in range(500, 60, -1):
        trimmer.update(active)
    gevent.sleep(0.05)
    assert calls == []  # still above 10% of the peak
    for active in range(60, -1, -1):
        trimmer.update(active)
    gevent.sleep(0.05)
    assert calls == [1]
    assert trimmer.peak == 50  # the count when the drop was seen: the next burst is measured from there


def test_small_peaks_never_trim(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    trimmer = IdleTrimmer(minimum=100, delay=0.01)
    for active in [*range(50), *range(50, -1, -1)]:
        trimmer.update(active)
    gevent.sleep(0.05)
    assert calls == []
