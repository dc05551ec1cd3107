"""A pool's shared scoreboard: one 64-byte slot per worker process, in a memory-mapped file.

Each worker writes only its own slot (active calls, its calls-per-second window, state, heartbeat);
everybody reads all of them. That is how admission sees the whole pool without a lock a crashed
process could leave held, and how the supervisor sees which workers are up and what a dead one held.
Aligned 8-byte stores are single instructions on the platforms we run on, so a reader sees old or
new values, never a torn one; two workers admitting at the same instant can overshoot the pool's
capacity by at most one call each, which is documented rather than locked away.
"""

from __future__ import annotations

import mmap
import os
import time
from enum import IntEnum

FIELDS = 8
SLOT_BYTES = FIELDS * 8

# field offsets within a slot
PID, STATE, ACTIVE, WINDOW, WINDOW_COUNT, PREV_COUNT, HEARTBEAT_MS, GENERATION = range(FIELDS)


class SlotState(IntEnum):
    FREE = 0
    STARTING = 1
    READY = 2
    DRAINING = 3


class SlotTable:
    """``slots`` slots over ``buffer`` (a bytearray for one process, an mmap shared by a pool)."""

    def __init__(self, buffer: bytearray | mmap.mmap, slots: int, path: str | None = None) -> None:
        if len(buffer) < slots * SLOT_BYTES:
            raise ValueError(f"slot buffer holds {len(buffer)} bytes, {slots} slots need {slots * SLOT_BYTES}")
        self.buffer = buffer
        self.slots = slots
        self.path = path
        self.view = memoryview(buffer).cast("q")

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def local(cls, slots: int = 1) -> SlotTable:
        return cls(bytearray(slots * SLOT_BYTES), slots)

    @classmethod
    def create(cls, path: str, slots: int) -> SlotTable:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, slots * SLOT_BYTES)
            buffer = mmap.mmap(fd, slots * SLOT_BYTES)
        finally:
            os.close(fd)
        return cls(buffer, slots, path)

    @classmethod
    def open(cls, path: str) -> SlotTable:
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(buffer, size // SLOT_BYTES, path)

    def close(self) -> None:
        self.view.release()
        if isinstance(self.buffer, mmap.mmap):
            self.buffer.close()

    # -- one slot --------------------------------------------------------------------------------
    def get(self, slot: int, field: int) -> int:
        return self.view[slot * FIELDS + field]

    def set(self, slot: int, field: int, value: int) -> None:
        self.view[slot * FIELDS + field] = value

    def claim(self, slot: int, pid: int, generation: int = 0) -> None:
        base = slot * FIELDS
        for field in range(FIELDS):
            self.view[base + field] = 0
        self.view[base + GENERATION] = generation
        self.view[base + HEARTBEAT_MS] = now_ms()
        self.view[base + STATE] = SlotState.STARTING
        self.view[base + PID] = pid

    def clear(self, slot: int) -> None:
        base = slot * FIELDS
        for field in range(FIELDS):
            self.view[base + field] = 0

    def free_slot(self) -> int | None:
        for slot in range(self.slots):
            if self.view[slot * FIELDS + PID] == 0 and self.view[slot * FIELDS + STATE] == SlotState.FREE:
                return slot
        return None

    def snapshot(self, slot: int) -> dict[str, int]:
        base = slot * FIELDS
        names = ("pid", "state", "active", "window", "window_count", "prev_count", "heartbeat_ms", "generation")
        return {name: self.view[base + i] for i, name in enumerate(names)}

    # -- the whole pool --------------------------------------------------------------------------
    def active_total(self) -> int:
        view = self.view
        return sum(view[slot * FIELDS + ACTIVE] for slot in range(self.slots))

    def ready_count(self) -> int:
        view = self.view
        return sum(1 for slot in range(self.slots) if view[slot * FIELDS + STATE] == SlotState.READY)


def now_ms() -> int:
    return int(time.monotonic() * 1000)
