"""The supervisor: N worker processes per pool, in the style of gunicorn's arbiter.

* It binds each pool's listening socket once and passes it to the pool's workers, so a connection
  waits in one accept queue for whichever worker is free, and the queue outlives any worker.
* A worker that dies is replaced; what it held (its active calls, read from the pool's scoreboard)
  is counted in ``esl_app_calls_lost_total`` and its live gauges are dropped (``mark_process_dead``).
  A worker whose heartbeat stops for ``worker_timeout`` is killed and replaced.
* SIGTERM / SIGINT: /ready turns false, every worker stops accepting and finishes its calls for up to
  ``stop_deadline``, then everything exits. A second signal kills the workers at once.
* SIGHUP: settings are read again and a new generation of workers is started (importing the code
  afresh); once every new worker is listening, the old ones drain. The listening sockets stay open
  throughout, so no call is refused or dropped by a reload. If the new generation cannot start, the
  old one keeps serving.
* HTTP (``http_host:http_port``): ``/metrics`` (every worker's metrics, multiprocess mode, plus the
  supervisor's), ``/health`` (the supervisor is alive) and ``/ready`` (not draining, and every pool
  has a worker accepting calls).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..handoff import new_secret
from ..settings import PoolSettings, Settings
from ..transport.server import listen_socket
from .slots import ACTIVE, HEARTBEAT_MS, PID, STATE, SlotState, SlotTable, now_ms
from .worker import EXIT_BOOT_FAILED, SPEC_ENV

log = logging.getLogger("esl_app.supervisor")

WORKER_MAIN = "import sys; from esl_app.pools.worker import main; sys.exit(main())"
KILL_GRACE = 10.0  # after stop_deadline, how long a draining worker may take before SIGKILL


@dataclass
class Worker:
    pool: str
    slot: int
    generation: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    retiring: bool = False  # told to drain; not replaced when it exits
    term_sent: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Pool:
    name: str
    settings: PoolSettings
    listener: socket.socket
    slots: SlotTable
    restarts: dict[str, int] = field(default_factory=dict)
    lost_calls: int = 0
    next_spawn: float = 0.0  # backoff after a worker died young
    retired: bool = False  # removed from the settings by a reload
    address: tuple[str, int] = ("", 0)


def bind(pool: PoolSettings) -> socket.socket:
    sock = listen_socket(pool.host, pool.port, pool.backlog)
    sock.set_inheritable(True)  # handed to the pool's worker processes
    return sock


class Supervisor:
    def __init__(
        self,
        app_target: str,
        settings: Settings | None = None,
        *,
        settings_factory: Callable[[], Settings] = Settings,
        python: str = sys.executable,
        on_ready: Callable[[Supervisor], None] | None = None,
    ) -> None:
        self.app_target = app_target
        self.settings_factory = settings_factory
        self.settings = settings or settings_factory()
        self.python = python
        self.on_ready = on_ready
        self.pools: dict[str, Pool] = {}
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.stopping = False
        self.stop_started: float | None = None
        self.reload_pending: tuple[int, float] | None = None  # (new generation, deadline)
        self.reloads = 0
        self.failed_reloads = 0
        self.http: ThreadingHTTPServer | None = None
        self.state_dir = ""
        self.metrics_dir = ""
        self._own_metrics_dir = False
        self._lock = threading.RLock()
        self._signals: list[int] = []
        self._wake_r, self._wake_w = -1, -1
        self._loop_tick = time.monotonic()
        self._announced = False
        self._handoff_secret = new_secret().hex()  # kept across reloads: hand-offs in flight stay recognised

    # -- set up ----------------------------------------------------------------------------------
    def setup(self) -> None:
        settings = self.settings
        # memory, not disk: the workers write both through shared mappings on every call, and a page of a
        # disk file under writeback stalls the write (stable pages) while the disk is busy, e.g. with
        # Postgres's commits during a dialer flood
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.state_dir = tempfile.mkdtemp(prefix="esl-app-", dir=shm)
        if settings.metrics_dir:
            self.metrics_dir = settings.metrics_dir
            os.makedirs(self.metrics_dir, exist_ok=True)
            for name in os.listdir(self.metrics_dir):  # values of a previous run would be summed in
                if name.endswith(".db"):
                    os.unlink(os.path.join(self.metrics_dir, name))
        else:
            self.metrics_dir = tempfile.mkdtemp(prefix="esl-app-metrics-", dir=shm)
            self._own_metrics_dir = True
        for name, pool in settings.served_pools().items():
            self._add_pool(name, pool)
        if not self.pools:
            raise SystemExit("error: no pool to serve (every pool has workers = 0)")
        self.http = ThreadingHTTPServer((settings.http_host, settings.http_port), _handler(self))
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="esl-app-http", daemon=True).start()

    def _add_pool(self, name: str, settings: PoolSettings) -> Pool:
        listener = bind(settings)
        slots = SlotTable.create(os.path.join(self.state_dir, f"pool-{name}.slots"), max(8, 3 * settings.workers))
        pool = Pool(name, settings, listener, slots, address=listener.getsockname()[:2])
        self.pools[name] = pool
        return pool

    @property
    def http_address(self) -> tuple[str, int] | None:
        return self.http.server_address[:2] if self.http else None  # type: ignore[return-value]

    def pool_address(self, name: str) -> tuple[str, int]:
        return self.pools[name].address

    # -- workers ---------------------------------------------------------------------------------
    def _spawn(self, pool: Pool) -> Worker | None:
        slot = pool.slots.free_slot()
        if slot is None:
            log.error("pool %s: no free scoreboard slot for another worker", pool.name)
            return None
        pool.slots.claim(slot, -1, self.generation)
        settings = self.settings.model_dump(mode="json")
        settings["pools"] = {**settings["pools"], pool.name: pool.settings.model_dump(mode="json")}
        settings["handoff_secret"] = None  # the dump masks it: the worker gets it below
        spec = {
            "app": self.app_target,
            "pool": pool.name,
            "slot": slot,
            "slots_path": pool.slots.path,
            "fd": pool.listener.fileno(),
            "parent": os.getpid(),
            "settings": settings,
            # apart from the settings, whose dump masks secrets
            "handoff_secret": self._handoff_secret_hex(),
        }
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir, SPEC_ENV: json.dumps(spec)}
        process = subprocess.Popen([self.python, "-c", WORKER_MAIN], env=env, pass_fds=(pool.listener.fileno(),))
        pool.slots.set(slot, PID, process.pid)
        worker = Worker(pool.name, slot, self.generation, process)
        self.workers[process.pid] = worker
        log.info("pool %s: started worker %d (slot %d, generation %d)", pool.name, process.pid, slot, self.generation)
        return worker

    def _handoff_secret_hex(self) -> str:
        configured = self.settings.handoff_secret
        return configured.get_secret_value().encode().hex() if configured is not None else self._handoff_secret

    def _reap(self) -> None:
        for pid, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            pool = self.pools[worker.pool]
            held = max(0, pool.slots.get(worker.slot, ACTIVE))
            clean = code == 0 and worker.retiring
            if not clean:
                reason = signal.Signals(-code).name if code < 0 else f"exit_{code}"
                pool.restarts[reason] = pool.restarts.get(reason, 0) + 1
                pool.lost_calls += held
                if time.monotonic() - worker.started < 2.0 or code == EXIT_BOOT_FAILED:
                    pool.next_spawn = time.monotonic() + self.settings.restart_backoff
                log.error("pool %s: worker %d died (%s) holding %d calls; replacing it", worker.pool, pid, reason, held)
            else:
                log.info("pool %s: worker %d exited", worker.pool, pid)
            self._mark_dead(pid)
            pool.slots.clear(worker.slot)
            if not clean and held:
                pool.slots.mark_died(worker.slot)  # its calls may come back resumed: see Admission
            with self._lock:
                del self.workers[pid]

    def _mark_dead(self, pid: int) -> None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)
        except Exception:
            log.exception("could not mark worker %d dead in %s", pid, self.metrics_dir)

    def _maintain(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for pool in self.pools.values():
            if pool.retired:
                continue
            current = [w for w in self.workers.values() if w.pool == pool.name and not w.retiring]
            missing = pool.settings.workers - len(current)
            if missing > 0 and now >= pool.next_spawn:
                for _ in range(missing):
                    with self._lock:
                        self._spawn(pool)
        # heartbeats: a worker whose loop is stuck is killed (and replaced by the next pass)
        limit = self.settings.worker_timeout * 1000
        stamp = now_ms()
        for worker in list(self.workers.values()):
            slots = self.pools[worker.pool].slots
            if (
                slots.get(worker.slot, STATE) == SlotState.READY
                and stamp - slots.get(worker.slot, HEARTBEAT_MS) > limit
            ):
                log.error("pool %s: worker %d missed its heartbeat; killing it", worker.pool, worker.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def _terminate(self, worker: Worker) -> None:
        worker.retiring = True
        if worker.term_sent is None:
            worker.term_sent = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)

    # -- readiness -------------------------------------------------------------------------------
    def ready_workers(self, pool: Pool) -> int:
        return sum(
            1
            for w in list(self.workers.values())
            if w.pool == pool.name and not w.retiring and pool.slots.get(w.slot, STATE) == SlotState.READY
        )

    def is_ready(self) -> bool:
        if self.stopping:
            return False
        live = [p for p in self.pools.values() if not p.retired]
        return bool(live) and all(self.ready_workers(p) > 0 for p in live)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ready": self.is_ready(),
                "draining": self.stopping,
                "generation": self.generation,
                "pools": {
                    name: {
                        "address": "{}:{}".format(*pool.address),
                        "workers": [
                            {
                                "pid": w.pid,
                                "generation": w.generation,
                                "state": SlotState(pool.slots.get(w.slot, STATE)).name.lower(),
                                "active": pool.slots.get(w.slot, ACTIVE),
                            }
                            for w in self.workers.values()
                            if w.pool == name
                        ],
                        "active": pool.slots.active_total(),
                        "capacity": pool.settings.capacity,
                        "lost_calls": pool.lost_calls,
                        "restarts": dict(pool.restarts),
                    }
                    for name, pool in self.pools.items()
                },
            }

    # -- reload ----------------------------------------------------------------------------------
    def reload(self) -> None:
        try:
            settings = self.settings_factory()
        except Exception:
            log.exception("reload: the settings are invalid; keeping the running workers")
            self.failed_reloads += 1
            return
        self.generation += 1
        old = [w for w in self.workers.values() if not w.retiring]
        self.settings = settings
        served = settings.served_pools()
        with self._lock:
            for name, pool_settings in served.items():
                pool = self.pools.get(name)
                if pool is None:
                    try:
                        self._add_pool(name, pool_settings)
                    except OSError as exc:
                        log.error("reload: pool %s: %s", name, exc)
                    continue
                if (pool.settings.host, pool.settings.port) != (pool_settings.host, pool_settings.port):
                    # the listening socket is what keeps calls flowing through a reload: keep it
                    log.error("reload: pool %s: a new address needs a restart; keeping %s:%s", name,
                              pool.settings.host, pool.settings.port)  # fmt: skip
                    pool_settings = pool_settings.model_copy(
                        update={"host": pool.settings.host, "port": pool.settings.port}
                    )
                pool.settings = pool_settings
                pool.retired = False
            for name, pool in self.pools.items():
                if name not in served:
                    pool.retired = True
            for pool in self.pools.values():
                if not pool.retired:
                    for _ in range(pool.settings.workers):
                        self._spawn(pool)
        self._reload_old = old
        self.reload_pending = (self.generation, time.monotonic() + settings.reload_timeout)
        log.info("reload: generation %d starting; %d old workers drain once it is ready", self.generation, len(old))

    def _check_reload(self) -> None:
        if self.reload_pending is None:
            return
        generation, deadline = self.reload_pending
        new = [w for w in self.workers.values() if w.generation == generation]
        expected = sum(p.settings.workers for p in self.pools.values() if not p.retired)
        ready = [w for w in new if self.pools[w.pool].slots.get(w.slot, STATE) == SlotState.READY]
        if len(ready) >= expected:
            for worker in self._reload_old:
                self._terminate(worker)
            for pool in self.pools.values():
                if pool.retired and not any(w.pool == pool.name for w in self.workers.values() if not w.retiring):
                    pool.listener.close()
            self.reload_pending = None
            self.reloads += 1
            log.info("reload: generation %d serving; old workers draining", generation)
        elif time.monotonic() > deadline or any(
            w.process.poll() is not None and w.process.returncode == EXIT_BOOT_FAILED for w in new
        ):
            log.error("reload: generation %d did not start; the previous workers keep serving", generation)
            for worker in new:
                worker.retiring = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self.reload_pending = None
            self.failed_reloads += 1

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.stopping:
            log.warning("second stop signal: killing the workers")
            for worker in list(self.workers.values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            return
        self.stopping = True
        self.stop_started = time.monotonic()
        log.info("stopping: workers drain their calls (deadline %.0f s)", self.settings.stop_deadline)
        for worker in list(self.workers.values()):
            self._terminate(worker)
        for pool in self.pools.values():  # the workers hold their own copies until they stop accepting
            with contextlib.suppress(OSError):
                pool.listener.close()

    def _enforce_stop_deadline(self) -> None:
        if self.stop_started is None:
            return
        if time.monotonic() - self.stop_started > self.settings.stop_deadline + KILL_GRACE:
            for worker in list(self.workers.values()):
                log.error("pool %s: worker %d did not stop in time; killing it", worker.pool, worker.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    # -- main loop -------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    def run(self, *, setup: bool = True) -> int:
        if setup:
            self.setup()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            with self._lock:
                for pool in self.pools.values():
                    for _ in range(pool.settings.workers):
                        self._spawn(pool)
            while True:
                self._loop_tick = time.monotonic()
                with contextlib.suppress(InterruptedError):
                    select.select([self._wake_r], [], [], 0.2)
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
                while self._signals:
                    signum = self._signals.pop(0)
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        self.stop()
                    elif signum == signal.SIGHUP and not self.stopping:
                        self.reload()
                self._reap()
                self._check_reload()
                self._maintain()
                self._enforce_stop_deadline()
                if not self._announced and self.is_ready():
                    self._announced = True
                    if self.on_ready is not None:
                        self.on_ready(self)
                if self.stopping and not self.workers:
                    break
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return 0

    def close(self) -> None:
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            worker.process.wait()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        for pool in self.pools.values():
            with contextlib.suppress(OSError):
                pool.listener.close()
            pool.slots.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if self._own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    # -- metrics ---------------------------------------------------------------------------------
    def render_metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)
        registry.register(_SupervisorCollector(self))
        return generate_latest(registry)


class _SupervisorCollector:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        workers = GaugeMetricFamily("esl_app_workers", "Worker processes by state", labels=["pool", "state"])
        restarts = CounterMetricFamily(
            "esl_app_worker_restarts", "Workers that died and were replaced", labels=["pool", "reason"]
        )
        lost = CounterMetricFamily(
            "esl_app_calls_lost", "Calls active in a worker when it died (cut mid-call)", labels=["pool"]
        )
        capacity = GaugeMetricFamily("esl_app_pool_capacity", "Configured concurrent calls", labels=["pool"])
        cps = GaugeMetricFamily("esl_app_pool_cps_limit", "Configured calls per second (0: none)", labels=["pool"])
        with sup._lock:
            for name, pool in sup.pools.items():
                counts = dict.fromkeys(("starting", "ready", "draining"), 0)
                for w in sup.workers.values():
                    if w.pool == name:
                        state = SlotState(pool.slots.get(w.slot, STATE))
                        key = "draining" if w.retiring else state.name.lower()
                        counts[key] = counts.get(key, 0) + 1
                for state, count in counts.items():
                    workers.add_metric([name, state], count)
                for reason, count in pool.restarts.items():
                    restarts.add_metric([name, reason], count)
                lost.add_metric([name], pool.lost_calls)
                capacity.add_metric([name], pool.settings.capacity)
                cps.add_metric([name], pool.settings.cps)
            ready = GaugeMetricFamily("esl_app_ready", "1 when /ready answers 200")
            ready.add_metric([], 1.0 if sup.is_ready() else 0.0)
        yield from (workers, restarts, lost, capacity, cps, ready)


def _handler(supervisor: Supervisor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body = supervisor.render_metrics()
                except Exception as exc:
                    log.exception("rendering /metrics failed")
                    self._send(500, f"{exc}\n".encode(), "text/plain")
                    return
                self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/health":
                alive = time.monotonic() - supervisor._loop_tick < 10
                self._send(200 if alive else 500, b'{"alive": true}\n' if alive else b'{"alive": false}\n')
            elif path == "/ready":
                status = supervisor.status()
                self._send(200 if status["ready"] else 503, json.dumps(status).encode() + b"\n")
            else:
                self._send(404, b'{"error": "not found"}\n')

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
