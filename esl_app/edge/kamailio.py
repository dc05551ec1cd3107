"""Load feedback from the cluster monitor into Kamailio's dispatcher.

``KamailioFeedback(registry).start()`` subscribes to the registry's state changes and, on its own
greenlet (never on the registry's dispatcher), tells Kamailio over JSON-RPC:

- a node ``busy``, ``draining`` or ``down``: ``dispatcher.set_state d <set> <uri>`` — disabled: not
  chosen for new calls and not probed, so an OPTIONS 200 from a node esl-app knows is full or paused
  does not bring it back; in-dialog requests still reach it (they follow Record-Route, not the set);
- a node ``up``: ``dispatcher.set_state ap <set> <uri>`` — active, probed with OPTIONS again, so
  Kamailio still takes it out on its own when SIP dies while the Event Socket lives.

Each change goes out as soon as the registry reports it (milliseconds; the bound is the registry's own
detection, under 1 s with ``probe_interval`` 0.25). Kamailio unreachable: retried every
``retry_interval`` until it answers, and the latest state wins.

Weights by load (``dispatcher_list`` set): every ``weight_interval`` the node's ``rweight`` (dispatcher
algorithm 11) becomes its configured weight times its free capacity below the busy threshold, in steps
of 10; when a step moves, the list file is rewritten (with each node's state as its flags, since a
reload forgets RPC-set states) and ``dispatcher.reload`` is called. No RPC changes ``rweight`` in place,
and algorithm 10 (call load) refuses ``dispatcher.reload``; hence algorithm 11 and a rewritten file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gevent
from gevent.event import Event as Signal

from ..cluster.health import NodeState, StateChange
from ..cluster.registry import ClusterRegistry
from .dispatcher_list import DispatcherEntry, dispatcher_list_text, load_rweight
from .jsonrpc import KamailioRPC, KamailioRPCError
from .settings import EdgeSettings

log = logging.getLogger("esl_app.edge")

ACTIVE = "ap"  # active, probed with OPTIONS
DISABLED = "d"  # not chosen, not probed


@dataclass(frozen=True, slots=True)
class Applied:
    """One state Kamailio accepted: ``applied_at - changed_at`` is the feedback's delay."""

    node: str
    state: NodeState
    kamailio_state: str
    changed_at: float | None
    applied_at: float


class KamailioFeedback:
    def __init__(
        self,
        registry: ClusterRegistry,
        settings: EdgeSettings | None = None,
        *,
        rpc: KamailioRPC | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings if settings is not None else EdgeSettings()
        self.rpc = rpc or KamailioRPC(self.settings.rpc_url, self.settings.rpc_timeout)
        self.clock = clock
        self.applied: deque[Applied] = deque(maxlen=1000)
        self.reloads = 0
        self._dirty: set[str] = set()
        self._changed_at: dict[str, float] = {}
        self._wake = Signal()
        self._worker: gevent.Greenlet | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._started_at = 0.0
        self._written_list: str | None = None
        self._next_weights_at = 0.0
        self._last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> KamailioFeedback:
        if self._worker is None:
            self._started_at = self.clock()
            self._unsubscribe = self.registry.on_change(self._on_change)
            self._dirty.update(self.registry.monitors)  # the first sync: every node
            self._worker = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._worker is not None:
            self._worker.kill(block=True, timeout=2)
            self._worker = None

    def __enter__(self) -> KamailioFeedback:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_applied(self, predicate: Callable[[Applied], bool], timeout: float) -> Applied | None:
        """The first applied state matching ``predicate`` (already applied or within ``timeout``)."""
        deadline = self.clock() + timeout
        while True:
            for applied in self.applied:
                if predicate(applied):
                    return applied
            if self.clock() >= deadline:
                return None
            gevent.sleep(0.01)

    # -- the registry's side -----------------------------------------------------------------------
    def _on_change(self, change: StateChange) -> None:
        self._changed_at[change.node] = change.at
        self._dirty.add(change.node)
        self._wake.set()

    def _wanted(self, name: str) -> str | None:
        """What Kamailio should have for ``name``; None: not decided yet."""
        state = self.registry.state(name)
        if state is NodeState.UP:
            return ACTIVE
        if state is NodeState.DOWN and not self._past_grace():
            # every node starts down ("not connected yet"): disabling them all would refuse calls each time
            # esl-app restarts. Kamailio's own OPTIONS probes cover a node that really is dead meanwhile.
            return None
        return DISABLED

    def _past_grace(self) -> bool:
        return self.clock() - self._started_at >= self.settings.startup_grace

    # -- the worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                ok = self._push_states()
                if ok and self.settings.dispatcher_list is not None and self.clock() >= self._next_weights_at:
                    ok = self._push_weights()
            except Exception:  # a bug must not end the feedback for good: say it, retry
                log.exception("edge: feedback to Kamailio failed")
                ok = False
            if not ok:
                self._wake.wait(self.settings.retry_interval)
                continue
            waits = [self.settings.retry_interval if self._dirty else None]
            if not self._past_grace():
                waits.append(self._started_at + self.settings.startup_grace - self.clock())
            if self.settings.dispatcher_list is not None:
                waits.append(self._next_weights_at - self.clock())
            timeout = min((w for w in waits if w is not None), default=None)
            self._wake.wait(None if timeout is None else max(0.0, timeout))

    def _push_states(self) -> bool:
        for name in sorted(self._dirty):
            self._dirty.discard(name)  # a change during the RPC marks it again
            wanted = self._wanted(name)
            if wanted is None:
                self._dirty.add(name)
                continue
            node = self.registry.node(name)
            uri = self.settings.sip_uri(node)
            try:
                for set_id in self.settings.sets(node):
                    self.rpc.set_state(wanted, set_id, uri)
            except KamailioRPCError as exc:
                self._dirty.add(name)
                self._failed(f"dispatcher.set_state {wanted} {uri} ({name}): {exc}")
                return False
            self._succeeded()
            changed_at = self._changed_at.pop(name, None)
            state = self.registry.state(name)
            self.applied.append(Applied(name, state, wanted, changed_at, self.clock()))
            what = "active" if wanted == ACTIVE else "disabled"
            log.info("edge: node %s (%s) is %s in Kamailio", name, state.value, what)
        return True

    def entries(self) -> list[DispatcherEntry]:
        monitors = self.registry.monitors
        max_weight = max((m.node.weight for m in monitors.values()), default=1.0)
        entries = []
        for name, monitor in monitors.items():
            wanted = self._wanted(name)
            rweight = load_rweight(monitor.health, max_weight)
            for set_id in self.settings.sets(monitor.node):
                uri = self.settings.sip_uri(monitor.node)
                entries.append(DispatcherEntry(set_id, uri, rweight, wanted == DISABLED, name))
        return entries

    def _push_weights(self) -> bool:
        path = self.settings.dispatcher_list
        assert path is not None
        text = dispatcher_list_text(self.entries())
        if text == self._written_list:
            self._next_weights_at = self.clock() + self.settings.weight_interval
            return True
        try:
            _write_atomically(path, text)
            self.rpc.reload()
        except (OSError, KamailioRPCError) as exc:
            self._failed(f"dispatcher.reload of {path}: {exc}")
            return False
        self._succeeded()
        self._written_list = text
        self.reloads += 1
        self._next_weights_at = self.clock() + self.settings.weight_interval
        # the reload took each node's state from the file; set them again in case one changed meanwhile
        self._dirty.update(self.registry.monitors)
        log.info("edge: dispatcher list %s rewritten with new weights and reloaded", path)
        return True

    def _failed(self, message: str) -> None:
        if message != self._last_error:  # once per distinct failure, not every retry
            log.warning("edge: %s; retrying every %g s", message, self.settings.retry_interval)
        self._last_error = message

    def _succeeded(self) -> None:
        if self._last_error is not None:
            log.info("edge: Kamailio answers again")
        self._last_error = None


def _write_atomically(path: Path, text: str) -> None:
    """Kamailio must never read half a list: write aside, then rename over."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
