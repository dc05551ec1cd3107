"""Originates this process has sent to a node that the node's load readings do not count yet.

Between two heartbeats a node's Session-Count is old news; without this ledger every originate in
that window would go to the same "least loaded" node. An originate counts from the moment it is sent
until either it failed (no session left behind) or a load reading that arrived after it was placed
(and so already counts its session). Pure logic; times are the caller's monotonic clock.
"""

from __future__ import annotations

import itertools


class InFlightLedger:
    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._placed: dict[int, float] = {}  # token -> when the node answered +OK
        self._tokens = itertools.count(1)

    def start(self, now: float) -> int:
        token = next(self._tokens)
        self._started[token] = now
        return token

    def finish(self, token: int, now: float, *, placed: bool) -> None:
        """The originate is over: ``placed`` means a session now exists on the node."""
        if self._started.pop(token, None) is None:
            return
        if placed:
            self._placed[token] = now

    def reading_arrived(self, now: float) -> None:
        """A load reading arrived at ``now``: it counts every call placed before it."""
        for token, placed_at in list(self._placed.items()):
            if placed_at < now:
                del self._placed[token]

    def clear(self) -> None:
        """The node restarted or was lost: nothing sent to it is running there any more."""
        self._placed.clear()

    def __len__(self) -> int:
        return len(self._started) + len(self._placed)
