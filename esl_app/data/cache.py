"""The in-process tier: a bounded LRU of revisioned entries, touched only from the gevent thread.

An entry remembers when it was stored and under which listener *epoch*. While the Postgres listener
that was connected when it was stored is still connected, every change to it is pushed here, so it is
fresh whatever its age; otherwise it is fresh for ``ttl`` (``negative_ttl`` for "no such object").
Expired entries are kept (within the size bound) so they can still be served, marked stale, when
Redis and Postgres are both unreachable. A put never replaces a higher revision with a lower one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (kind, key): ("number", did), ("tenant", id), ("global", "*")


@dataclass(slots=True)
class Entry:
    value: Any  # a model, or None for "known not to exist"
    rev: int
    stored: float  # monotonic seconds when last known current (the age of stale data counts from here)
    epoch: int  # the listener epoch when stored; 0 = not backed by invalidations
    expired: bool = False  # known to have changed: go to the next tier (but may still be served stale)


class LocalCache:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self.evictions = 0

    def get(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def peek(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def put(self, key: Key, value: Any, rev: int, now: float, epoch: int) -> bool:
        """Store unless a higher revision is already here; returns whether it was stored."""
        current = self._entries.get(key)
        if current is not None and current.rev > rev:
            return False
        self._entries[key] = Entry(value, rev, now, epoch)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
            self.evictions += 1
        return True

    def expire(self, key: Key) -> None:
        """Known to have changed but not reloaded: the next read goes to the next tier."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.expired = True

    def unpin(self, epoch: int, now: float) -> int:
        """The listener of ``epoch`` is gone: its entries were current until ``now``, TTLs run from here."""
        count = 0
        for entry in self._entries.values():
            if entry.epoch == epoch:
                entry.epoch = 0
                entry.stored = now
                count += 1
        return count

    def clear(self) -> None:
        self._entries.clear()

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries
