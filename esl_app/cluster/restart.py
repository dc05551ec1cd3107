"""Restart detection: a node that restarted lost every call it had, so whoever tracks calls there
(the dialer's attempts, the queue's callers) must re-sync. Pure logic.

A restart shows as a new ``Core-UUID`` (new on every start) or as ``Uptime-msec`` going backwards.
Uptime is compared with a tolerance: a HEARTBEAT queued before an ``api status`` reply can be
written after it, so two readings may arrive slightly out of order.
"""

from __future__ import annotations

from dataclasses import dataclass

UPTIME_TOLERANCE_MS = 1500


@dataclass(frozen=True, slots=True)
class Restart:
    """Raised once per restart seen; ``at`` is the monotonic time it was noticed."""

    node: str
    at: float
    reason: str
    old_core_uuid: str | None
    new_core_uuid: str | None


class RestartDetector:
    def __init__(self, node: str) -> None:
        self.node = node
        self.core_uuid: str | None = None
        self.uptime_msec: int | None = None

    def observe(self, now: float, core_uuid: str | None, uptime_msec: int | None) -> Restart | None:
        """Feed one reading; returns a ``Restart`` when this reading shows the node restarted."""
        restart: Restart | None = None
        if core_uuid and self.core_uuid and core_uuid != self.core_uuid:
            restart = Restart(self.node, now, f"Core-UUID changed to {core_uuid}", self.core_uuid, core_uuid)
        elif (
            uptime_msec is not None
            and self.uptime_msec is not None
            and uptime_msec + UPTIME_TOLERANCE_MS < self.uptime_msec
        ):
            restart = Restart(
                self.node, now, f"Uptime-msec went back from {self.uptime_msec} to {uptime_msec}",
                self.core_uuid, core_uuid or None,
            )  # fmt: skip
            if not core_uuid:
                # known only from a status reply: the next heartbeat brings the new Core-UUID, which
                # must not count as a second restart
                self.core_uuid = None
        if core_uuid:
            self.core_uuid = core_uuid
        if uptime_msec is not None:
            keep_highest = restart is None and self.uptime_msec is not None
            self.uptime_msec = max(uptime_msec, self.uptime_msec) if keep_highest else uptime_msec
        return restart
