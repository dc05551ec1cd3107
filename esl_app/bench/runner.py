"""The whole comparison in one run: each server started pinned to its own core, the same phases
played against it by the generator (pinned to the other cores), results as one JSON-able dict.

Phases per server: warm-up; capacity (closed loop); an open-loop sweep of offered rates (setup
latency against rate, for the chart), including 70% of the server's own capacity; hold (N calls in
a long playback: RSS per held call, and RSS after they ended); for esl-app also overload (open loop
at 3x its capacity through the admission door: every call must be served or refused explicitly).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .generator import REFUSED, SERVED, LoadSpec, WorkerResult, Workers, percentiles, raise_fd_limit

SERVERS_PACKAGE = "esl_app.bench.servers"  # the servers ship in the package: run with -m, no checkout needed
RATE_GRID = [50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2400]


@dataclass
class ServerSpec:
    name: str
    module: str  # in esl_app.bench.servers
    label: str
    hold_calls: int = 2000
    args: list[str] = field(default_factory=list)
    # extra hold runs: (title, server arguments, calls held)
    hold_variants: list[tuple[str, list[str], int]] = field(default_factory=list)


SERVERS = {
    "esl-app": ServerSpec(
        "esl-app",
        "esl_app_server",
        "esl-app (this project)",
        hold_calls=10_000,  # production defaults (the LF waker only runs in the first 60 ms of a wait)
    ),
    "gevent-minimal": ServerSpec("gevent-minimal", "gevent_server", "minimal gevent, full parse"),
    "greenswitch": ServerSpec("greenswitch", "greenswitch_server", "greenswitch 0.0.19 OutboundESLServer"),
    "genesis": ServerSpec("genesis", "genesis_server", "genesis Outbound (asyncio)"),
}


# -- processes ---------------------------------------------------------------------------------
def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(server_cpus: int = 1) -> tuple[list[int], list[int]]:
    """(server cores, generator cores): the server gets the first, the generator the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return cpus, cpus
    return cpus[:server_cpus], cpus[server_cpus:]


class Server:
    """One server under test, started as a child process pinned to ``cpus``."""

    def __init__(self, spec: ServerSpec, cpus: list[int], python: str = sys.executable, extra: list[str] = ()) -> None:
        self.spec = spec
        command = [python, "-m", f"{SERVERS_PACKAGE}.{spec.module}", "--port", "0", *spec.args, *extra]
        if cpus and shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(map(str, cpus)), *command]
        # stderr goes to a file: a pipe nobody reads fills up with the server's log lines (64 kB) and
        # then blocks it in a write, which froze 10,000-call hold runs on a loaded machine
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - open as long as the server runs
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            self.proc.wait()
            self.log.seek(0)
            why = self.log.read()[-4000:]
            self.log.close()
            raise RuntimeError(f"{spec.name} did not start: {line!r} {why}")
        _, port, pid = line.split()
        self.port = int(port)
        self.pid = int(pid)

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def gc_pauses(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The collector's passes since the last ask (esl-app's server only: SIGUSR1, one line back)."""
        if self.spec.name != "esl-app" or self.proc.stdout is None:
            return None
        os.kill(self.pid, signal.SIGUSR1)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line[3:]) if line.startswith("GC ") else None

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- progress ----------------------------------------------------------------------------------
class Progress:
    """One status line on stderr, redrawn in place (``quiet`` disables it)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self._plain_last = 0.0

    def show(self, text: str, done: float | None = None) -> None:
        if done is not None:
            width = 24
            filled = int(width * max(0.0, min(1.0, done)))
            text = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
        if self.quiet:
            now = time.monotonic()
            if now - self._plain_last >= 5.0:  # a line every few seconds in logs
                self._plain_last = now
                print(text, file=sys.stderr, flush=True)
            return
        print("\r\033[K" + text[:150], end="", file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        if not self.quiet:
            print("\r\033[K", end="", file=sys.stderr)
        print(text, file=sys.stderr, flush=True)


# -- one phase ---------------------------------------------------------------------------------
def run_phase(
    server: Server | None,
    spec: LoadSpec,
    progress: Progress,
    title: str,
    *,
    expected: int | None = None,
    on_held: Callable[[Workers], None] | None = None,
    histogram: bool = False,
) -> dict[str, Any]:
    """Run one load phase against ``server`` and return its measured figures."""
    cpu0 = server.cpu() if server else 0.0
    workers = Workers(spec)
    started = time.monotonic()
    workers.start()
    try:
        if spec.mode == "hold":
            while workers.held < spec.hold_calls:
                held = workers.held
                progress.show(f"{title}: {held}/{spec.hold_calls} calls held", held / max(1, spec.hold_calls))
                if time.monotonic() - started > spec.hold_calls / max(1.0, spec.rate) + 60:
                    break
                time.sleep(0.1)
            if on_held is not None:
                on_held(workers)
            workers.release.set()
        total = expected or 1
        while not workers._queue.qsize() and any(p.is_alive() for p in workers._procs):
            elapsed = time.monotonic() - started
            done = workers.completed
            progress.show(
                f"{title}: {done} calls, {elapsed:4.1f} s",
                min(1.0, elapsed / spec.duration) if expected is None else done / total,
            )
            time.sleep(0.1)
            if spec.mode != "hold" and elapsed > spec.duration + spec.call_timeout + 30:
                break
        result = workers.join(timeout=spec.call_timeout + 60)
    finally:
        workers.kill()
    cpu1 = server.cpu() if server else 0.0
    out = summarize(result, spec, server_cpu=cpu1 - cpu0)
    if histogram:
        out["setup_histogram"] = latency_histogram(result.setup_ms)
    return out


# histogram bins of setup latency: log-spaced edges from 0.1 ms to 10 s, 10 per decade
HISTOGRAM_EDGES_MS = [round(0.1 * 10 ** (k / 10), 4) for k in range(51)]


def latency_histogram(values: list[float]) -> dict[str, list[float] | list[int]]:
    """Counts per bin (``HISTOGRAM_EDGES_MS``; below the first edge counts in the first bin, above the
    last in the last)."""
    edges = HISTOGRAM_EDGES_MS
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = bisect.bisect_right(edges, value) - 1
        counts[min(max(index, 0), len(counts) - 1)] += 1
    return {"edges_ms": edges, "counts": counts}


def summarize(result: WorkerResult, spec: LoadSpec, server_cpu: float = 0.0) -> dict[str, Any]:
    wall = result.wall_seconds or 1e-9
    served = result.outcomes.get(SERVED, 0)
    refused = result.outcomes.get(REFUSED, 0)
    errors = {k: v for k, v in result.outcomes.items() if k not in (SERVED, REFUSED)}
    gen_cores = len(spec.cpus) if spec.cpus else os.cpu_count() or 1
    gen_util = result.cpu_seconds / (wall * min(gen_cores, spec.processes))
    lag = percentiles(result.lag_ms)
    return {
        "mode": spec.mode,
        "offered_rate": spec.rate if spec.mode == "open" else None,
        "concurrency": spec.concurrency if spec.mode == "closed" else None,
        "seconds": round(wall, 3),
        "calls": result.calls,
        "served": served,
        "refused": refused,
        "errors": errors,
        "calls_per_second": round(served / wall, 1),
        "setup_ms": {k: round(v, 3) for k, v in percentiles(result.setup_ms).items()},
        "setup_samples": len(result.setup_ms),
        "refused_ms": {k: round(v, 3) for k, v in percentiles(result.refused_ms).items()},
        "server_cpu_ms_per_call": round(1000 * server_cpu / result.calls, 3) if result.calls else None,
        "server_cpu_util": round(server_cpu / wall, 3),
        "generator_cpu_ms_per_call": round(1000 * result.cpu_seconds / result.calls, 3) if result.calls else None,
        "generator_util": round(gen_util, 3),
        "generator_lag_p99_ms": None if math.isnan(lag["p99"]) else round(lag["p99"], 2),
    }


# -- the suite ---------------------------------------------------------------------------------
@dataclass
class SuiteOptions:
    servers: list[str] = field(default_factory=lambda: list(SERVERS))
    duration: float = 5.0  # seconds per capacity run
    sweep_duration: float = 4.0  # seconds per open-loop point
    concurrency: int = 60
    processes: int = 2  # closed loop; open loop and hold use one per generator core
    hold: dict[str, int] = field(default_factory=dict)  # per server override of held calls
    overload: bool = True
    quick: bool = False
    sweep: bool = True  # the open-loop sweep of offered rates (the chart's p99 line)
    tail_seconds: float = 15.0  # each tail point (50% and 70% of the server's own max); 0: none
    hold_phase: bool = True
    decision_calls: int = 200  # per socket mode, under FreeSWITCH's timing model (0: skip)


def machine_notes() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("gevent", "greenlet", "greenswitch", "genesis"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_suite(options: SuiteOptions, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or Progress()
    raise_fd_limit()
    server_cpus, gen_cpus = cpu_split()
    results: dict[str, Any] = {
        "machine": machine_notes(),
        "pinning": {"server": server_cpus, "generator": gen_cpus, "generator_processes": options.processes},
        "servers": {},
    }

    # open loop and hold: one generator process per generator core (several processes on one core add
    # the kernel's time slices to the measured latency); closed loop: ``options.processes``
    per_core = max(1, len(gen_cpus))

    def load(port: int, **kw: Any) -> LoadSpec:
        processes = options.processes if kw.get("mode") == "closed" else per_core
        return LoadSpec(host="127.0.0.1", port=port, processes=processes, cpus=gen_cpus, **kw)

    for name in options.servers:
        spec = SERVERS[name]
        out: dict[str, Any] = {"label": spec.label}
        results["servers"][name] = out
        server = Server(spec, server_cpus)
        try:
            rss_start = server.rss_kb()
            run_phase(
                server, load(server.port, mode="closed", duration=1.5, concurrency=20), progress, f"{name} warm-up"
            )
            capacity = run_phase(
                server, load(server.port, mode="closed", duration=options.duration, concurrency=options.concurrency),
                progress, f"{name} capacity",
            )  # fmt: skip
            out["capacity"] = capacity
            max_rate = capacity["calls_per_second"]
            progress.line(
                f"{name}: {max_rate:.0f} calls/s closed loop (C={options.concurrency}), "
                f"server {capacity['server_cpu_ms_per_call']} ms CPU/call, generator {capacity['generator_util']:.0%}"
            )
            if options.tail_seconds:
                out["tail"] = [
                    tail_point(server, load, max_rate, share, options.tail_seconds, progress, name)
                    for share in TAIL_SHARES
                ]
            rates = sorted({r for r in RATE_GRID if r <= 1.15 * max_rate} | {round(0.7 * max_rate)})
            if options.quick:
                rates = sorted({round(0.35 * max_rate), round(0.7 * max_rate)})
            if not options.sweep:
                rates = []
            sweep = []
            for rate in rates:
                point = run_phase(
                    server, load(server.port, mode="open", rate=float(rate), duration=options.sweep_duration,
                                 call_timeout=10.0),
                    progress, f"{name} open loop {rate}/s",
                )  # fmt: skip
                point["at_70_percent"] = rate == round(0.7 * max_rate)
                sweep.append(point)
                progress.line(
                    f"{name}: offered {rate}/s -> {point['calls_per_second']:.0f}/s, setup p50 "
                    f"{point['setup_ms']['p50']:.2f} p99 {point['setup_ms']['p99']:.2f} ms, errors {point['errors']}"
                )
                failed = sum(point["errors"].values())
                if rate > 0.7 * max_rate and (point["calls_per_second"] < 0.9 * rate or failed > 0.01 * point["calls"]):
                    point["overloaded"] = True
                    break  # past its capacity: higher rates only measure a melt-down
            out["sweep"] = sweep
            out["rss_start_kb"] = rss_start
            if options.decision_calls:
                time.sleep(3.0)  # let the last sweep point's backlog drain: measure an idle server
                out["decision"] = {
                    mode: decision_phase(server.port, mode, options.decision_calls, gen_cpus)
                    for mode in ("static", "async")
                }
                for mode, figures in out["decision"].items():
                    progress.line(
                        f"{name} {mode} socket, timing model: decision p50 {figures['decision_ms']['p50']:.2f} "
                        f"p99 {figures['decision_ms']['p99']:.2f} ms, completion p50 "
                        f"{figures['completion_ms']['p50']:.2f} p99 {figures['completion_ms']['p99']:.2f} ms, "
                        f"errors {figures['errors']}"
                    )
        finally:
            server.stop()
        holds = [("", [], options.hold.get(name, spec.hold_calls))] if options.hold_phase else []
        holds += [(title, args, options.hold.get(name, calls)) for title, args, calls in spec.hold_variants]
        for title, args, held_calls in holds:
            if not held_calls:
                continue
            figures = hold_phase(spec, server_cpus, args, load, held_calls, progress, name)
            figures["variant"] = title
            out["hold" if not title else "hold_" + title.replace(" ", "_")] = figures
            progress.line(
                f"{name}{' ' + title if title else ''}: {figures['held']} held, {figures['kb_per_call']:.1f} kB RSS "
                f"per held call, RSS {figures['rss_before_kb']} -> {figures['rss_held_kb']} -> "
                f"{figures['rss_after_kb']} kB after"
            )
        if name == "esl-app" and options.overload:
            out["overload"] = overload_phase(spec, server_cpus, load, out["capacity"]["calls_per_second"], options,
                                             progress)  # fmt: skip
    return results


TAIL_SHARES = (0.5, 0.7)  # of the server's own closed-loop maximum (issue 13: p99 <= 2 ms and <= 5 ms)


def tail_point(
    server: Server,
    load: Callable[..., LoadSpec],
    max_rate: float,
    share: float,
    seconds: float,
    progress: Progress,
    name: str,
) -> dict[str, Any]:
    """A long open-loop run at ``share`` of capacity: percentiles from thousands of calls, a latency
    histogram, and (esl-app) the collector's passes during it."""
    rate = round(share * max_rate)
    server.gc_pauses()  # reset: count this phase's passes only
    point = run_phase(
        server, load(server.port, mode="open", rate=float(rate), duration=seconds, call_timeout=10.0),
        progress, f"{name} tail {share:.0%} ({rate}/s)", histogram=True,
    )  # fmt: skip
    point["share"] = share
    point["gc"] = server.gc_pauses()
    s = point["setup_ms"]
    progress.line(
        f"{name}: {share:.0%} of max, {rate}/s open loop for {seconds:.0f} s, {point['setup_samples']} calls: setup "
        f"p50 {s['p50']:.2f} p90 {s['p90']:.2f} p99 {s['p99']:.2f} max {s['max']:.1f} ms, errors {point['errors']}"
        + (f", collector {point['gc']}" if point["gc"] is not None else "")
    )
    return point


def decision_phase(port: int, mode: str, calls: int, cpus: list[int]) -> dict[str, Any]:
    """Decision and completion latency under the timing model (``esl_app.bench.decision``), measured by
    the test kit's fake FreeSWITCH in a process of its own on the generator's cores."""
    command = [sys.executable, "-m", "esl_app.bench.decision", "--port", str(port), "--mode", mode,
               "--calls", str(calls), "--concurrency", "4"]  # fmt: skip
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", ",".join(map(str, cpus)), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return {"mode": mode, "errors": {"generator failed": 1}, "stderr": done.stderr[-2000:],
                "decision_ms": {}, "completion_ms": {}}  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def hold_phase(
    spec: ServerSpec,
    cpus: list[int],
    args: list[str],
    load: Callable[..., LoadSpec],
    calls: int,
    progress: Progress,
    name: str,
    rate: float = 1000.0,
) -> dict[str, Any]:
    """A fresh server process: warm up, then hold ``calls`` in a playback (new calls at ``rate`` per
    second until they are all held); RSS before, held, after."""
    server = Server(spec, cpus, extra=args)
    try:
        return _hold(server, load, calls, progress, name, rate)
    finally:
        server.stop()


def _hold(
    server: Server, load: Callable[..., LoadSpec], calls: int, progress: Progress, name: str, rate: float
) -> dict[str, Any]:
    run_phase(server, load(server.port, mode="closed", duration=1.0, concurrency=10), progress, f"{name} warm-up")
    time.sleep(1.0)
    before = server.rss_kb()
    figures: dict[str, Any] = {}

    def on_held(workers: Workers) -> None:
        time.sleep(2.0)  # let the last calls settle into their playback
        figures["held"] = workers.held
        figures["rss_held_kb"] = server.rss_kb()
        cpu0 = server.cpu()
        time.sleep(2.0)
        figures["idle_cpu_util_while_held"] = round((server.cpu() - cpu0) / 2.0, 3)

    phase = run_phase(
        server, load(server.port, mode="hold", hold_calls=calls, rate=rate, call_timeout=600.0),
        progress, f"{name} hold {calls}", expected=calls, on_held=on_held,
    )  # fmt: skip
    time.sleep(3.0)
    after = server.rss_kb()
    held = figures.get("held", 0) or 1
    return {
        "calls": calls,
        "held": figures.get("held", 0),
        "rss_before_kb": before,
        "rss_held_kb": figures.get("rss_held_kb", 0),
        "rss_after_kb": after,
        "kb_per_call": round((figures.get("rss_held_kb", 0) - before) / held, 2),
        "idle_cpu_util_while_held": figures.get("idle_cpu_util_while_held"),
        "served": phase["served"],
        "errors": phase["errors"],
    }


def overload_phase(
    spec: ServerSpec,
    server_cpus: list[int],
    load: Callable[..., LoadSpec],
    capacity: float,
    options: SuiteOptions,
    progress: Progress,
) -> dict[str, Any]:
    """Offer 3x capacity; the door admits 80% of capacity per second and refuses the rest with 503."""
    cps = round(0.8 * capacity)
    server = Server(spec, server_cpus, extra=["--cps", str(cps)])
    try:
        run_phase(server, load(server.port, mode="closed", duration=1.0, concurrency=10), progress, "overload warm-up")
        offered = round(3 * capacity)
        result = run_phase(
            server, load(server.port, mode="open", rate=float(offered), duration=options.sweep_duration,
                         call_timeout=25.0),
            progress, f"esl-app overload {offered}/s",
        )  # fmt: skip
    finally:
        server.stop()
    result["door_cps"] = cps
    dropped = sum(result["errors"].values())
    result["dropped"] = dropped
    progress.line(
        f"esl-app overload: offered {offered}/s (3x), door {cps}/s -> served {result['served']}, "
        f"refused {result['refused']}, not answered {dropped} {result['errors']}"
    )
    return result
