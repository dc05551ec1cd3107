"""One worker of one pool: an outbound server whose door admits or refuses each connection.

``PoolWorker`` runs in any gevent process (tests use it in-process); ``main()`` is the entry point of
a worker process started by the supervisor (``python -m esl_app.pools.worker``), which hands it the
pool's listening socket (shared by all the pool's workers, so a connection waits in one accept queue
for whichever worker is free, and survives a worker's death or a reload), its slot in the pool's
scoreboard and the settings it read.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import gevent
from gevent.event import Event

from ..app import App
from ..handoff import HandoffSigner
from ..metrics import PoolMetrics
from ..session import SessionSettings
from ..settings import PoolSettings, Settings
from ..transport import OutboundServer
from ..transport.collector import settle
from ..transport.peers import PeerFilter
from .admission import Admission, Reason, refuse
from .slots import HEARTBEAT_MS, STATE, SlotState, SlotTable, now_ms

log = logging.getLogger("esl_app.pools")

SPEC_ENV = "ESL_APP_WORKER_SPEC"
EXIT_BOOT_FAILED = 3


class _CallSocket:
    """The accepted socket, noting when the first call-control command (``sendmsg``) is written:
    the call's setup latency, from the accept. After that, calls go straight to the socket.

    It also carries what the door decided: ``window``, the calls-per-second window the call was
    counted in; ``refused``, a refusal the door put off until the connect reply shows whether the
    connection is a hand-off's second leg (which is admitted) or a new call (which is refused)."""

    __slots__ = (
        "_accepted_at", "_setup", "_sock", "close", "fileno", "recv", "refused", "sendall", "setsockopt", "shutdown",
        "window",
    )  # fmt: skip

    def __init__(
        self, sock: Any, accepted_at: float, setup: Any, *, window: int = 0, refused: Reason | None = None
    ) -> None:
        self._sock = sock
        self._accepted_at = accepted_at
        self._setup = setup
        self.window = window
        self.refused = refused
        self.recv = sock.recv
        self.close = sock.close
        self.shutdown = sock.shutdown
        self.fileno = sock.fileno
        self.setsockopt = sock.setsockopt
        self.sendall = self._first_sendall

    def _first_sendall(self, data: bytes) -> None:
        if data.startswith(b"sendmsg"):
            self.sendall = self._sock.sendall
            if self._setup is not None and self.refused is None:
                self._setup.observe(time.perf_counter() - self._accepted_at)
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PoolWorker:
    """Serve ``app``'s routes for pool ``name``, admitting calls against the pool's limits."""

    def __init__(
        self,
        app: App,
        name: str,
        pool: PoolSettings,
        *,
        session_settings: SessionSettings | None = None,
        slots: SlotTable | None = None,
        slot: int = 0,
        listener: socket.socket | None = None,
        metrics: PoolMetrics | None = None,
        parent_pid: int | None = None,
        heartbeat: float = 1.0,
        peers: PeerFilter | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.pool = pool
        if session_settings is not None:
            app.session_settings = session_settings
        self.slots = slots if slots is not None else SlotTable.local(1)
        self.slot = slot
        self.admission = Admission(pool.capacity, pool.cps, slots=self.slots, slot=slot)
        self.metrics = metrics
        self.parent_pid = parent_pid
        self.heartbeat = heartbeat
        self.server = OutboundServer(
            self._run, pool.host, pool.port, backlog=pool.backlog, listener=listener, door=self._door,
            peers=peers, on_denied=metrics.peer_denied if metrics is not None else None,
            keepalive=app.session_settings.keepalive,
        )  # fmt: skip
        self.stopped = Event()
        self._beat: gevent.Greenlet | None = None
        self._refused_since_log = 0
        self._last_refusal_log = 0.0
        self._draining = False

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def active(self) -> int:
        return self.admission.active

    def start(self, *, settle_heap: bool = False) -> None:
        """``settle_heap``: the worker process's start-up is done once the app started: put its objects
        out of the collector's way (transport/collector.py) before the first call is accepted."""
        self.app.before_hand_off = self.admission.handing_off
        self.app.startup()
        if settle_heap:
            settle()
        self.server.start()
        self.slots.set(self.slot, HEARTBEAT_MS, now_ms())
        self.slots.set(self.slot, STATE, SlotState.READY)
        self._beat = gevent.spawn(self._heartbeat)
        log.info("pool %s: worker %d serving on %s:%s", self.name, os.getpid(), *self.address)

    # -- the door (runs in the accept callback: never blocks) ------------------------------------
    def _door(self, sock: Any, address: tuple[str, int]) -> Any:
        accepted_at = time.perf_counter()
        admission = self.admission
        reason = admission.admit()
        metrics = self.metrics
        if reason is not None:
            if reason != "draining" and admission.may_be_returning():
                # this may be the second leg of a call the pool handed off, or a call of a dead worker
                # resuming (both admitted already): the connect reply will tell (``_after_connect``);
                # a new call is refused then
                return _CallSocket(sock, accepted_at, None, refused=reason)
            refuse(sock, reason)
            if metrics is not None:
                metrics.refused(reason, time.perf_counter() - accepted_at)
            self._note_refusal(reason)
            return None
        if metrics is None:
            return _CallSocket(sock, accepted_at, None, window=admission.window)
        metrics.accepted.inc()
        metrics.active.inc()
        return _CallSocket(sock, accepted_at, metrics.setup, window=admission.window)

    def _after_connect(self, sock: _CallSocket, resumed: bool) -> str | None:
        """The connect reply is in: ``resumed`` says whether the connection is a hand-off's second
        leg (``App.handle``). Returns the reason to refuse it, or None to go on."""
        reason = sock.refused
        if reason is None:
            if resumed:  # admitted and counted in the rate at accept: its first leg was counted
                self.admission.uncount_rate(sock.window)
            return None
        metrics = self.metrics
        if resumed:
            sock.refused = None
            self.admission.admit_resumed(reason)
            if metrics is not None:
                metrics.accepted.inc()
                metrics.active.inc()
            return None
        if metrics is not None:
            metrics.refused(reason, time.perf_counter() - sock._accepted_at)
        self._note_refusal(reason)
        return reason

    def _note_refusal(self, reason: str) -> None:
        # one line per second at most: a flood must not turn into a flood of log lines
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:
            log.warning(
                "pool %s: refusing calls at the door (%d since last report, latest: %s; active %d, capacity %d)",
                self.name, self._refused_since_log, reason, self.slots.active_total(), self.pool.capacity,
            )  # fmt: skip
            self._refused_since_log = 0
            self._last_refusal_log = now

    def _run(self, sock: Any, address: tuple[str, int]) -> None:
        if not isinstance(sock, _CallSocket):  # the door failed and let the call in (transport.server)
            sock = _CallSocket(sock, time.perf_counter(), None)
        try:
            self.app.handle(
                sock, address, pool=self.name, expected_mode=self.pool.socket_mode,
                admit=lambda resumed: self._after_connect(sock, resumed),
            )  # fmt: skip
        finally:
            if sock.refused is None:  # counted in (at the door, or as a hand-off's second leg)
                self.admission.release()
                if self.metrics is not None:
                    self.metrics.active.dec()

    # -- life ------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while True:
            self.slots.set(self.slot, HEARTBEAT_MS, now_ms())
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.error("pool %s: the supervisor is gone; draining", self.name)
                gevent.spawn(self.drain, 30.0)
                return
            gevent.sleep(self.heartbeat)

    def drain(self, deadline: float) -> int:
        """Stop accepting, let active calls finish for up to ``deadline`` seconds; returns calls killed."""
        if self._draining:
            self.stopped.wait()
            return 0
        self._draining = True
        # stop accepting first: the listening socket is shared, so the pool's other (or new) workers
        # take the next calls; marking the door "draining" before that would refuse calls in between
        self.server.stop_accepting()
        self.admission.draining = True
        self.slots.set(self.slot, STATE, SlotState.DRAINING)
        log.info(
            "pool %s: worker %d draining %d calls (deadline %.1f s)", self.name, os.getpid(), self.active, deadline
        )
        killed = self.server.stop(deadline)
        if self._beat is not None:
            self._beat.kill(block=False)
        self.app.shutdown()
        self.stopped.set()
        return killed


# -- the worker process -----------------------------------------------------------------------------


def load_app(target: str) -> App:
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise TypeError(f"{target!r} is not an esl_app.App (got {type(app).__name__})")
    return app


def main() -> int:
    spec = json.loads(os.environ[SPEC_ENV])
    name: str = spec["pool"]
    settings = Settings(**spec["settings"])
    from .logs import configure

    configure(settings.log_level, settings.log_format, pool=name, worker=f"{name}/{os.getpid()}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; Ctrl-C reaches it too
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pool = settings.pools[name]
    if pool.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, pool.cpus)
    slots = SlotTable.open(spec["slots_path"])
    slot: int = spec["slot"]
    listener = socket.socket(fileno=spec["fd"])
    try:
        app = load_app(spec["app"])
        app.max_calls = None  # admission is the pool's door
        app.handoff_extension = settings.handoff_extension
        app.handoff = HandoffSigner(bytes.fromhex(spec["handoff_secret"]))  # the pool's: any worker recognises
        metrics = PoolMetrics(name)
        from .. import metrics as metrics_module

        metrics_module.install(metrics)
        app.observer = metrics
        worker = PoolWorker(
            app, name, pool, session_settings=settings.session(), slots=slots, slot=slot,
            listener=listener, metrics=metrics, parent_pid=spec.get("parent"), peers=settings.peer_filter(name),
        )  # fmt: skip
        worker.start(settle_heap=True)
    except Exception:
        log.exception("pool %s: worker failed to start", name)
        return EXIT_BOOT_FAILED
    # what start-up made (modules, the app) lives as long as the process: out of the collector's
    # scans, so a full collection walks only the calls' objects (a pause stalls every call here)
    gc.freeze()

    def on_term() -> None:
        gevent.spawn(worker.drain, settings.stop_deadline)

    gevent.signal_handler(signal.SIGTERM, on_term)
    worker.stopped.wait()
    with contextlib.suppress(Exception):
        listener.close()
    log.info("pool %s: worker %d stopped", name, os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
