"""Keep the cyclic garbage collector's pauses off the calls of a server process.

A pass of CPython's collector stops the event loop: every call waits. A full pass walks every
tracked object, and after start-up a worker holds ~35,000 (gevent, pydantic, the app's modules and
data): ~20 ms per full pass. Objects allocated per call trigger a full pass every few seconds
under load, so at 50% of capacity ~1% of new calls waited through one: that was the setup p99
(docs/benchmarks.md, "Tail latency").

``settle()``, called once when start-up is done and before the first call: one collection, then
``gc.freeze()`` (the start-up objects move to the permanent generation, which no later pass walks).
A call leaves no cyclic garbage (the connection drops its owner's callbacks once closed), so the
passes that remain walk little more than the calls in progress. The young generation keeps
CPython's size: without garbage a young pass only runs once that many new objects are alive, and
walks them all, so a larger one made longer pauses when calls queued up (a 20,000 threshold: 13-20
ms passes at 70% load on a busy machine).

``PauseMeter`` records each pass (generation, duration) through ``gc.callbacks``, for the benchmark
and for anyone checking a deployment.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any


def settle() -> int:
    """Collect, then freeze what start-up left; returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@dataclass
class PauseMeter:
    """Durations of the collector's passes, per generation (seconds, wall clock and CPU)."""

    passes: list[tuple[int, float, float]] = field(default_factory=list)  # (generation, wall, cpu)
    _started: tuple[float, float] = (0.0, 0.0)

    def start(self) -> PauseMeter:
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
            return
        wall, cpu = self._started
        self.passes.append((info["generation"], time.perf_counter() - wall, time.thread_time() - cpu))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per generation: passes, and their CPU milliseconds (median, max, total)."""
        out: dict[str, dict[str, float]] = {}
        for generation in (0, 1, 2):
            cpu = sorted(p[2] for p in self.passes if p[0] == generation)
            if cpu:
                out[f"gen{generation}"] = {
                    "passes": len(cpu),
                    "cpu_ms_p50": round(1000 * cpu[len(cpu) // 2], 3),
                    "cpu_ms_max": round(1000 * cpu[-1], 3),
                    "cpu_ms_total": round(1000 * sum(cpu), 2),
                }
        return out
