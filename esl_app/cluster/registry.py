"""The live picture of the cluster: one inbound Event Socket connection per node, its heartbeats and an
active probe, fed into each node's ``NodeHealth``; ``pick(role)`` chooses where the next call goes.

Every node gets:

- an ``InboundClient`` subscribed to HEARTBEAT (and BACKGROUND_JOB for originate results), reconnecting
  with jittered backoff; losing it makes the node ``down`` at once (a killed FreeSWITCH closes its
  sockets within ~0.1 s);
- a probe greenlet: every ``probe_interval`` it runs ``api status`` (load, "ready", round-trip time)
  and ``fsctl pause_check inbound|outbound`` (a node paused inbound says nothing anywhere else), plus
  ``global_getvar core_uuid`` once per connection (a restart is seen before the first heartbeat), and
  re-checks heartbeat age. A probe slower than ``probe_timeout`` makes the node ``down``.

State changes are logged, counted for Prometheus (``esl_app.cluster.metrics``) and handed to
subscribers (``on_change``, ``on_restart``) on a dispatcher greenlet, so a slow subscriber never
holds up a node's connection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import gevent
import gevent.queue
from gevent.event import Event as Signal
from pydantic import BaseModel

from ..protocol import Event
from .choice import choose, node_cost
from .health import NodeHealth, NodeState, StateChange
from .readings import ReadingError, heartbeat_reading, pause_reading, status_reading
from .restart import Restart
from .settings import ClusterSettings, NodeSettings, Role

log = logging.getLogger("esl_app.cluster")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ClientFactory = Callable[..., Any]
Clock = Callable[[], float]


class NodeStatus(BaseModel):
    """One node as this process sees it (``esl-app cluster status``, ``/metrics``)."""

    name: str
    host: str
    port: int
    roles: list[str]
    weight: float
    state: NodeState
    reason: str
    state_age: float
    connected: bool
    sessions: int | None = None
    max_sessions: int | None = None
    in_flight: int = 0
    idle_cpu: float | None = None
    sessions_per_second: int | None = None
    heartbeat_age: float | None = None
    probe_rtt: float | None = None
    core_uuid: str | None = None
    uptime_msec: int | None = None
    paused: list[str] = []
    operator_drain: bool = False


def default_client_factory() -> ClientFactory:
    from ..transport.inbound import InboundClient

    return InboundClient


class NodeMonitor:
    """One node: its connection, its probe greenlet and its ``NodeHealth``."""

    def __init__(self, registry: ClusterRegistry, node: NodeSettings, client_factory: ClientFactory) -> None:
        self.registry = registry
        self.node = node
        self.name = node.name
        settings = registry.settings
        self.health = NodeHealth(node, settings, registry.clock())
        self.client = client_factory(
            node.host,
            node.port,
            node.password.get_secret_value(),
            name=node.name,
            events=("HEARTBEAT",),  # the client adds BACKGROUND_JOB for bgapi results itself
            on_event=self._on_event,
            on_state=self._on_state,
            connect_timeout=settings.connect_timeout,
            command_timeout=settings.command_timeout,
            backoff_min=settings.reconnect_min,
            backoff_max=settings.reconnect_max,
            # ClueCon on a node off loopback is refused (DefaultPasswordRefused) unless the node allows it
            allow_default_password=node.allow_default_password,
            # a connection silent for this long is dead (a half-open TCP after a network cut): reconnect
            idle_timeout=max(settings.heartbeat_max_age, 3 * settings.probe_timeout),
        )
        self._probe_now = Signal()
        self._probe: gevent.Greenlet | None = None
        self._stopping = False
        self._ask_core_uuid = True  # once per connection: restarts are seen even before a heartbeat
        self._status_rtt: float | None = None

    def start(self) -> None:
        self.client.start()
        self._probe = gevent.spawn(self._probe_loop)

    def stop(self) -> None:
        self._stopping = True  # closing our own connection is not news about the node
        if self._probe is not None:
            self._probe.kill(block=False)
        with contextlib.suppress(Exception):
            self.client.stop()

    # -- what the connection sees ----------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if event.name != "HEARTBEAT":
            return
        try:
            reading = heartbeat_reading(event)
        except ReadingError as exc:
            log.warning("cluster node %s: unreadable HEARTBEAT: %s", self.name, exc)
            return
        self.health.heartbeat(self.registry.clock(), reading)
        self.registry._flush(self)

    def _on_state(self, client: Any, state: str, error: BaseException | None) -> None:
        if self._stopping or state == "connecting":
            return
        now = self.registry.clock()
        if getattr(client, "connected", False):
            if not self.health.connected:
                self.health.connected_now(now)
                self._ask_core_uuid = True
                self._probe_now.set()  # read the node at once rather than at the next interval
        else:
            what = "connection lost" if self.health.connected else "cannot connect"
            reason = f"{what}: {error}" if error is not None else f"{what} ({state})"
            self.health.disconnected(now, reason)
        self.registry._flush(self)

    # -- the probe --------------------------------------------------------------------------------
    def _probe_loop(self) -> None:
        settings = self.registry.settings
        clock = self.registry.clock
        while True:
            started = clock()
            self._probe_now.clear()
            if self.health.connected:
                self.probe_once()
            self.health.tick(clock())
            self.registry._flush(self)
            self._probe_now.wait(max(0.0, started + settings.probe_interval - clock()))

    def probe_once(self) -> None:
        settings = self.registry.settings
        clock = self.registry.clock
        timeout = settings.probe_timeout
        commands = ["status", "fsctl pause_check inbound", "fsctl pause_check outbound"]
        if self._ask_core_uuid:
            # the global variable core_uuid is the Core-UUID every event carries (switch_core.c)
            commands.append("global_getvar core_uuid")
        self._status_rtt = None
        began = clock()
        # pipelined: the commands go out together, the replies come back in order
        jobs = [gevent.spawn(self._ask, command, timeout) for command in commands]
        try:
            gevent.joinall(jobs, timeout=timeout)
        finally:
            for job in jobs:
                job.kill(block=False)
        if not self.health.connected:
            return  # the connection went while probing: on_state has said so
        replies = [job.value if job.successful() else None for job in jobs]
        status_text = replies[0]
        if status_text is None:
            self.health.probe_failed(clock(), f"no reply within {timeout:g} s")
            return
        if isinstance(status_text, BaseException):
            self.health.probe_failed(clock(), f"{type(status_text).__name__}: {status_text}")
            return
        rtt = self._status_rtt - began if self._status_rtt is not None else clock() - began
        try:
            reading = status_reading(status_text)
        except ReadingError as exc:
            self.health.probe_failed(clock(), str(exc))
            return
        for reply in replies[1:3]:
            if not isinstance(reply, str):  # unknown pause state: fail safe, no calls
                self.health.probe_failed(clock(), f"fsctl pause_check: {reply or 'no reply'}")
                return
        paused = {Role.INBOUND: self._paused(replies[1]), Role.OUTBOUND: self._paused(replies[2])}
        if len(replies) > 3:
            self._ask_core_uuid = False  # asked; a node that does not know the command is not asked again
            core_uuid = replies[3].strip() if isinstance(replies[3], str) else ""
            if _UUID.match(core_uuid):
                reading = replace(reading, core_uuid=core_uuid)
        self.health.probe_succeeded(clock(), rtt, reading, paused)

    def _ask(self, command: str, timeout: float) -> str | BaseException:
        """One probe command; its failure is returned, not raised (nobody joins a failed greenlet)."""
        try:
            reply = self.client.api(command, timeout=timeout)
        except Exception as exc:
            return exc
        if command == "status":
            self._status_rtt = self.registry.clock()
        return reply

    def _paused(self, text: str) -> bool:
        try:
            return pause_reading(text)
        except ReadingError as exc:
            # e.g. an ESL user whose Allowed-API lacks fsctl: pausing cannot be seen, say so once
            if not getattr(self, "_pause_warned", False):
                self._pause_warned = True
                log.warning("cluster node %s: cannot read its pause state (%s); taken as not paused", self.name, exc)
            return False

    # -- a view ------------------------------------------------------------------------------------
    def status(self, now: float) -> NodeStatus:
        health = self.health
        load = health.load
        return NodeStatus(
            name=self.name,
            host=self.node.host,
            port=self.node.port,
            roles=sorted(role.value for role in self.node.roles),
            weight=self.node.weight,
            state=health.state,
            reason=health.reason,
            state_age=now - health.since,
            connected=health.connected,
            sessions=load.sessions if load else None,
            max_sessions=load.max_sessions if load else None,
            in_flight=len(health.in_flight),
            idle_cpu=load.idle_cpu if load else None,
            sessions_per_second=load.sessions_per_second if load else None,
            heartbeat_age=health.heartbeat_age(now),
            probe_rtt=health.probe_rtt,
            core_uuid=health.core_uuid,
            uptime_msec=load.uptime_msec if load else None,
            paused=sorted(role.value for role, paused in health.paused.items() if paused),
            operator_drain=health.operator_drain,
        )


class ClusterRegistry:
    """Watches every node of ``settings``; ``start()`` it once per process (or use ``with``)."""

    def __init__(
        self,
        settings: ClusterSettings | None = None,
        *,
        client_factory: ClientFactory | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        history: int = 1000,
    ) -> None:
        self.settings = settings if settings is not None else ClusterSettings()
        self.clock = clock
        self.rng = rng or random.Random()
        factory = client_factory or default_client_factory()
        self.monitors: dict[str, NodeMonitor] = {
            node.name: NodeMonitor(self, node, factory) for node in self.settings.nodes
        }
        self.history: deque[StateChange | Restart] = deque(maxlen=history)
        self._change_listeners: list[Callable[[StateChange], None]] = []
        self._restart_listeners: list[Callable[[Restart], None]] = []
        self._changed = Signal()
        self._outbox: gevent.queue.Queue = gevent.queue.Queue()
        self._dispatcher: gevent.Greenlet | None = None
        self.state_changes_total: dict[tuple[str, str], int] = {}
        self.restarts_total: dict[str, int] = {}
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ClusterRegistry:
        if not self.started:
            self.started = True
            self._dispatcher = gevent.spawn(self._dispatch)
            for monitor in self.monitors.values():
                monitor.start()
        return self

    def stop(self) -> None:
        for monitor in self.monitors.values():
            monitor.stop()
        if self._dispatcher is not None:
            self._dispatcher.kill(block=False)
        self.started = False

    def __enter__(self) -> ClusterRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- subscriptions ---------------------------------------------------------------------------
    def on_change(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``callback(StateChange)`` on every state change; returns the unsubscribe function."""
        self._change_listeners.append(callback)
        return lambda: self._change_listeners.remove(callback)

    def on_restart(self, callback: Callable[[Restart], None]) -> Callable[[], None]:
        """Call ``callback(Restart)`` when a node restarted (its calls are gone: re-sync)."""
        self._restart_listeners.append(callback)
        return lambda: self._restart_listeners.remove(callback)

    # -- queries ---------------------------------------------------------------------------------
    def health(self, name: str) -> NodeHealth:
        return self.monitors[name].health

    def state(self, name: str) -> NodeState:
        return self.monitors[name].health.state

    def client(self, name: str) -> Any:
        return self.monitors[name].client

    def node(self, name: str) -> NodeSettings:
        return self.monitors[name].node

    def pick(self, role: Role | str, *, exclude: Iterable[str] = ()) -> NodeSettings | None:
        """The least-loaded node that may take a call for ``role`` (never busy, draining or down)."""
        now = self.clock()
        for monitor in self.monitors.values():
            monitor.health.tick(now)  # a heartbeat that went stale since the last probe counts now
            self._flush(monitor)
        chosen = choose(
            [monitor.health for monitor in self.monitors.values()], role, exclude=frozenset(exclude), rng=self.rng
        )
        return chosen.node if chosen is not None else None

    def call_exists(self, name: str, uuid: str, timeout: float | None = None) -> bool | None:
        """Ask node ``name`` whether a channel exists (``uuid_exists``): True, False, or None when the
        node cannot be asked now. How a dialer settles an originate whose result was ``unknown``."""
        from ..transport.inbound import InboundError

        if not _UUID.match(uuid):
            raise ValueError(f"not a channel UUID: {uuid!r}")
        client = self.monitors[name].client
        try:
            answer = client.api(f"uuid_exists {uuid}", timeout=timeout).strip()
        except InboundError:
            return None
        return {"true": True, "false": False}.get(answer)

    def cost(self, name: str) -> float | None:
        return node_cost(self.monitors[name].health)

    def snapshot(self) -> list[NodeStatus]:
        now = self.clock()
        return [monitor.status(now) for monitor in self.monitors.values()]

    def drain(self, name: str, drain: bool = True) -> None:
        """Operator drain in this process: the node stays watched and keeps its calls, gets no new ones."""
        monitor = self.monitors[name]
        monitor.health.set_operator_drain(self.clock(), drain)
        self._flush(monitor)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate()`` holds; re-checked on every state change or restart."""
        deadline = self.clock() + timeout
        while not predicate():
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            self._changed.clear()
            if predicate():
                return True
            self._changed.wait(min(remaining, 0.05))
        return True

    # -- in-flight originates --------------------------------------------------------------------
    def begin_originate(self, name: str) -> int:
        return self.monitors[name].health.in_flight.start(self.clock())

    def end_originate(self, name: str, token: int, *, placed: bool) -> None:
        self.monitors[name].health.in_flight.finish(token, self.clock(), placed=placed)

    # -- internals -------------------------------------------------------------------------------
    def _flush(self, monitor: NodeMonitor) -> None:
        notices = monitor.health.take_notices()
        if not notices:
            return
        for notice in notices:
            self.history.append(notice)
            if isinstance(notice, StateChange):
                key = (notice.node, notice.new.value)
                self.state_changes_total[key] = self.state_changes_total.get(key, 0) + 1
                log.log(
                    logging.WARNING if notice.new is NodeState.DOWN else logging.INFO,
                    "cluster node %s: %s -> %s (%s)", notice.node, notice.old.value, notice.new.value, notice.reason,
                )  # fmt: skip
            else:
                self.restarts_total[notice.node] = self.restarts_total.get(notice.node, 0) + 1
                log.warning("cluster node %s restarted: %s", notice.node, notice.reason)
            self._outbox.put(notice)
        self._changed.set()

    def _dispatch(self) -> None:
        for notice in self._outbox:
            listeners = self._change_listeners if isinstance(notice, StateChange) else self._restart_listeners
            for callback in list(listeners):
                try:
                    callback(notice)
                except Exception:
                    log.exception("cluster listener %r failed on %r", callback, notice)
