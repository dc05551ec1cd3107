"""A pool's shared scoreboard: one 128-byte slot per worker process, in a memory-mapped file.

Each worker writes only its own slot (active calls, its calls-per-second window, state, heartbeat,
its latest hand-off), and the supervisor the slot of a worker that died;
everybody reads all of them. That is how the supervisor sees which workers are up and what a dead
one held. Aligned 8-byte stores are single instructions on the platforms we run on, so a reader sees
old or new values, never a torn one.

Admission must also be exact: reading the pool's total and counting one more has to be one step, or
two workers admitting at the same instant both see room for the last call. ``locked()`` makes it one
step with an exclusive ``flock`` on the scoreboard file: the kernel drops the lock of a process that
dies, so a worker killed inside the door can never leave the pool locked (a POSIX semaphore or a
``multiprocessing.Lock`` would stay held forever). It costs two system calls (about 1 µs) per
admission; releasing a call needs no lock, since a worker only ever lowers its own count.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
from collections.abc import Iterator
from enum import IntEnum

FIELDS = 16
SLOT_BYTES = FIELDS * 8  # 128: two cache lines, room to grow

# field offsets within a slot (HANDOFF_MS: when this worker last handed a call off to an async socket,
# so that any worker of the pool knows a second leg may be on its way; DIED_MS: when a worker in this
# slot last died holding calls, which may come back resumed (esl_app.recovery); the rest are spare)
PID, STATE, ACTIVE, WINDOW, WINDOW_COUNT, PREV_COUNT, HEARTBEAT_MS, GENERATION, HANDOFF_MS, DIED_MS = range(10)


class SlotState(IntEnum):
    FREE = 0
    STARTING = 1
    READY = 2
    DRAINING = 3


class SlotTable:
    """``slots`` slots over ``buffer`` (a bytearray for one process, an mmap shared by a pool).

    ``lock_fd``: an open descriptor of the shared file, whose ``flock`` serialises admissions across
    the pool's processes (None for a table only this process uses: nothing to serialise).
    """

    def __init__(
        self, buffer: bytearray | mmap.mmap, slots: int, path: str | None = None, lock_fd: int | None = None
    ) -> None:
        if len(buffer) < slots * SLOT_BYTES:
            raise ValueError(f"slot buffer holds {len(buffer)} bytes, {slots} slots need {slots * SLOT_BYTES}")
        self.buffer = buffer
        self.slots = slots
        self.path = path
        self.lock_fd = lock_fd
        self.view = memoryview(buffer).cast("q")

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def local(cls, slots: int = 1) -> SlotTable:
        return cls(bytearray(slots * SLOT_BYTES), slots)

    @classmethod
    def create(cls, path: str, slots: int) -> SlotTable:
        # O_CLOEXEC: each process opens the file itself, so each has its own lock (flock is per open file)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, slots * SLOT_BYTES)
            buffer = mmap.mmap(fd, slots * SLOT_BYTES)
        except BaseException:
            os.close(fd)
            raise
        return cls(buffer, slots, path, fd)

    @classmethod
    def open(cls, path: str) -> SlotTable:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            buffer = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(buffer, size // SLOT_BYTES, path, fd)

    def close(self) -> None:
        self.view.release()
        if isinstance(self.buffer, mmap.mmap):
            self.buffer.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the pool-wide admission lock (no-op for a table of one process)."""
        fd = self.lock_fd
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    # -- one slot --------------------------------------------------------------------------------
    def get(self, slot: int, field: int) -> int:
        return self.view[slot * FIELDS + field]

    def set(self, slot: int, field: int, value: int) -> None:
        self.view[slot * FIELDS + field] = value

    def claim(self, slot: int, pid: int, generation: int = 0) -> None:
        self.clear(slot)
        base = slot * FIELDS
        self.view[base + GENERATION] = generation
        self.view[base + HEARTBEAT_MS] = now_ms()
        self.view[base + STATE] = SlotState.STARTING
        self.view[base + PID] = pid

    def clear(self, slot: int) -> None:
        """Empty the slot, all but ``DIED_MS``: a dead worker's mark outlives its replacement's start."""
        base = slot * FIELDS
        for field in range(FIELDS):
            if field != DIED_MS:
                self.view[base + field] = 0

    def mark_died(self, slot: int) -> None:
        """The worker in ``slot`` died holding calls (the supervisor, after ``clear``)."""
        self.view[slot * FIELDS + DIED_MS] = now_ms()

    def free_slot(self) -> int | None:
        for slot in range(self.slots):
            if self.view[slot * FIELDS + PID] == 0 and self.view[slot * FIELDS + STATE] == SlotState.FREE:
                return slot
        return None

    def snapshot(self, slot: int) -> dict[str, int]:
        base = slot * FIELDS
        names = (
            "pid", "state", "active", "window", "window_count", "prev_count", "heartbeat_ms", "generation",
            "handoff_ms", "died_ms",
        )  # fmt: skip
        return {name: self.view[base + i] for i, name in enumerate(names)}

    # -- the whole pool --------------------------------------------------------------------------
    def active_total(self) -> int:
        view = self.view
        return sum(view[slot * FIELDS + ACTIVE] for slot in range(self.slots))

    def latest_handoff_ms(self) -> int:
        """When a worker of the pool last handed a call off (monotonic ms; 0: never)."""
        view = self.view
        return max(view[slot * FIELDS + HANDOFF_MS] for slot in range(self.slots))

    def latest_death_ms(self) -> int:
        """When a worker of the pool last died holding calls (monotonic ms; 0: never)."""
        view = self.view
        return max(view[slot * FIELDS + DIED_MS] for slot in range(self.slots))

    def ready_count(self) -> int:
        view = self.view
        return sum(1 for slot in range(self.slots) if view[slot * FIELDS + STATE] == SlotState.READY)


def now_ms() -> int:
    return int(time.monotonic() * 1000)
