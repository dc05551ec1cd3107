"""One node's health as a pure state machine: observations in, state changes and restarts out.

No sockets and no clock: every method takes ``now`` (monotonic seconds), so tests drive it with a fake
clock. The registry feeds it what the node's connection sees and drains ``take_notices()``.

States, first match wins:

- ``down``: not connected, the last probe failed or timed out, no HEARTBEAT for ``heartbeat_grace``
  intervals, or nothing read since (re)connecting (a node of unknown health gets no calls);
- ``draining``: drained by an operator, paused (``fsctl pause``; seen only through
  ``fsctl pause_check``, since a node paused inbound still says "ready" and keeps sending heartbeats)
  in a direction it serves, or ``api status`` says "not ready";
- ``busy``: Session-Count at ``busy_sessions_ratio`` of Max-Sessions, or Idle-CPU below ``min_idle_cpu``;
- ``up``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from .inflight import InFlightLedger
from .readings import LoadReading
from .restart import Restart, RestartDetector
from .settings import ClusterSettings, NodeSettings, Role


class NodeState(StrEnum):
    UP = "up"
    BUSY = "busy"
    DRAINING = "draining"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class StateChange:
    node: str
    old: NodeState
    new: NodeState
    reason: str
    at: float


class NodeHealth:
    def __init__(self, node: NodeSettings, settings: ClusterSettings, now: float) -> None:
        self.node = node
        self.name = node.name
        self.settings = settings
        self.state = NodeState.DOWN
        self.reason = "not connected yet"
        self.since = now
        self.connected = False
        self.connected_at: float | None = None
        self.disconnect_reason = "not connected yet"
        self.operator_drain = node.drain
        self.paused: dict[Role, bool | None] = {role: None for role in Role}
        self.load: LoadReading | None = None
        self.load_at: float | None = None
        self.last_heartbeat_at: float | None = None
        self.probe_error: str | None = None
        self.probe_rtt: float | None = None
        self.probe_at: float | None = None
        self.in_flight = InFlightLedger()
        self.restarts = RestartDetector(node.name)
        self.core_uuid: str | None = None
        self._notices: list[StateChange | Restart] = []

    # -- observations ----------------------------------------------------------------------------
    def connected_now(self, now: float) -> None:
        self.connected = True
        self.connected_at = now
        self.probe_error = None
        self._evaluate(now)

    def disconnected(self, now: float, reason: str) -> None:
        self.connected = False
        self.connected_at = None
        self.disconnect_reason = reason
        # what was read over the lost connection says nothing about the node that may come back
        self.load = self.load_at = self.last_heartbeat_at = None
        self.paused = {role: None for role in Role}
        self._evaluate(now)

    def heartbeat(self, now: float, reading: LoadReading) -> None:
        self.last_heartbeat_at = now
        self._reading(now, reading)

    def probe_succeeded(
        self, now: float, rtt: float, reading: LoadReading, paused: dict[Role, bool | None] | None = None
    ) -> None:
        self.probe_error = None
        self.probe_rtt = rtt
        self.probe_at = now
        if paused is not None:
            self.paused = {role: paused.get(role, False) for role in Role}
        self._reading(now, reading)

    def probe_failed(self, now: float, reason: str) -> None:
        self.probe_error = reason
        self.probe_at = now
        self._evaluate(now)

    def set_operator_drain(self, now: float, drain: bool) -> None:
        self.operator_drain = drain
        self._evaluate(now)

    def tick(self, now: float) -> None:
        """Time passed: a heartbeat may have become stale."""
        self._evaluate(now)

    def take_notices(self) -> list[StateChange | Restart]:
        notices, self._notices = self._notices, []
        return notices

    # -- derived ---------------------------------------------------------------------------------
    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat_at is None else now - self.last_heartbeat_at

    def busy_reason(self) -> str | None:
        load = self.load
        if load is None:
            return None
        if load.max_sessions <= 0 or load.sessions >= self.settings.busy_sessions_ratio * load.max_sessions:
            return f"{load.sessions}/{load.max_sessions} sessions"
        if load.idle_cpu < self.settings.min_idle_cpu:
            return f"idle CPU {load.idle_cpu:.1f}% < {self.settings.min_idle_cpu:g}%"
        return None

    # -- internals -------------------------------------------------------------------------------
    def _reading(self, now: float, reading: LoadReading) -> None:
        restart = self.restarts.observe(now, reading.core_uuid, reading.uptime_msec)
        if reading.core_uuid:
            self.core_uuid = reading.core_uuid
        if restart is not None:
            self.in_flight.clear()
            self._notices.append(restart)
        if reading.ready is None and self.load is not None:
            # a heartbeat carries no "ready" flag: keep what the last status said
            reading = replace(reading, ready=self.load.ready)
        self.load = reading
        self.load_at = now
        self.in_flight.reading_arrived(now)
        self._evaluate(now)

    def _classify(self, now: float) -> tuple[NodeState, str]:
        if not self.connected:
            return NodeState.DOWN, self.disconnect_reason
        if self.probe_error is not None:
            return NodeState.DOWN, f"probe failed: {self.probe_error}"
        max_age = self.settings.heartbeat_max_age
        heard = self.last_heartbeat_at if self.last_heartbeat_at is not None else self.connected_at
        if heard is not None and now - heard > max_age:
            expected = self.settings.heartbeat_interval
            return NodeState.DOWN, (
                f"no HEARTBEAT for {now - heard:.1f} s (expected every {expected:g} s: "
                "event-heartbeat-interval in the node's switch.conf must match heartbeat_interval)"
            )
        if self.load is None or any(self.paused[role] is None for role in self.node.roles):
            return NodeState.DOWN, "no reading since connecting"
        if self.operator_drain:
            return NodeState.DRAINING, "drained by operator"
        paused = sorted(role.value for role in self.node.roles if self.paused[role])
        if paused:
            return NodeState.DRAINING, f"paused ({', '.join(paused)})"
        if self.load.ready is False:
            return NodeState.DRAINING, "status says not ready"
        busy = self.busy_reason()
        if busy is not None:
            return NodeState.BUSY, busy
        return NodeState.UP, "ok"

    def _evaluate(self, now: float) -> None:
        state, why = self._classify(now)
        if state is not self.state:
            self._notices.append(StateChange(self.name, self.state, state, why, now))
            self.state, self.since = state, now
        self.reason = why

