"""Proof of isolation (issue #4, part 5): a benchmark, not a test. ``python bench/isolation.py``.

It starts ``esl-app``'s supervisor with two pools (inbound and outbound, one worker process each) and
drives them with open-loop load generators (separate processes, each running the test kit's
``FakeFreeSWITCH`` over TCP, as FreeSWITCH's ``socket`` application would), in three phases of the
same run:

A. inbound alone at a steady rate: the unloaded setup latency (TCP connect -> first execute);
B. the same inbound traffic while the outbound pool is flooded at twice its capacity (offered
   concurrency = rate x hold time = 2 x capacity): inbound p99 against A as a ratio (target <= 1.2),
   and inbound calls refused (target 0);
C. both pools offered three times their capacity: every excess call must be refused explicitly
   (503 with the reason variable; none unanswered or failed), and the admitted calls' p99 must stay
   within 2x of A.

``--pin`` uses the pools' ``cpus`` setting to give the inbound pool (and its generator) CPU 0 and the
outbound pool and the flood generators CPU 1: on a 2-core machine the generators, which stand in for
FreeSWITCH servers on other hosts, would otherwise compete with the pool they are not loading.

``--dialer``: instead of A-C, rounds of quiet and flood phases where the outbound flood is the real
dialer on fake outbound nodes (``esl_app.pools.bench_dialer``; needs Postgres and Redis).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from esl_app import App, Call

app = App("isolation-bench")


@app.route("1000", pool="inbound")
def customer(call: Call) -> None:
    call.answer()
    call.playback("ivr/ivr-welcome_to_freeswitch.wav")


@app.route("2000", pool="outbound")
def dialer(call: Call) -> None:
    call.answer()
    call.playback("ivr/ivr-welcome_to_freeswitch.wav")


@app.route(variables={"esl_app_flow": "isolation"}, pool="outbound")
def campaign(call: Call) -> None:
    """The real dialer's answered call (``--dialer``): a message, then the callee hangs up (its node's
    ``hangup_after``)."""
    call.answer()
    call.playback("ivr/ivr-welcome_to_freeswitch.wav")
    call.wait_for_hangup(timeout=60)


# -- generator process ------------------------------------------------------------------------------


class _Timer:
    """Socket wrapper noting the first byte and the first execute FreeSWITCH would receive."""

    def __init__(self, sock: Any, started: float) -> None:
        self._sock = sock
        self.started = started
        self.first_byte: float | None = None
        self.first_execute: float | None = None

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if data and self.first_byte is None:
            self.first_byte = time.perf_counter()
        if self.first_execute is None and b"call-command: execute" in data:
            self.first_execute = time.perf_counter()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Open loop: ``rate`` new calls per second for ``duration`` seconds to ``port``."""
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])
    # The generator stands for FreeSWITCH (C: no collector). With ~100 fake calls alive (a 2 s hold at
    # 50/s) a collector pass here walks all their objects, and a pass landing between a connect and its
    # first execute was counted as the pool's setup latency. No collection while measuring; one after.
    gc.collect()
    gc.disable()
    try:
        return _generate(spec)
    finally:
        gc.enable()
        gc.collect()


def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    import gevent
    import gevent.socket

    from esl_app.testing.peer import CallScript, FakeFreeSWITCH

    script = CallScript(destination=spec["destination"], app_seconds={"playback": spec["hold"]})
    outcomes: Counter[str] = Counter()
    setup_ms: list[float] = []  # admitted calls: connect -> first execute (answer)
    refusal_ms: list[float] = []  # refused calls: connect -> the refusal
    address = ("127.0.0.1", spec["port"])

    def one() -> None:
        started = time.perf_counter()
        try:
            sock = gevent.socket.create_connection(address, timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            timer = _Timer(sock, started)
            with gevent.Timeout(spec["hold"] + 20):
                record = FakeFreeSWITCH(script, timer, first_command_timeout=10).run()
        except BaseException as exc:
            outcomes[f"failed:{type(exc).__name__}"] += 1
            return
        if timer.first_byte is None:
            outcomes["unanswered"] += 1
        elif record.variables.get("esl_app_refused"):
            outcomes["refused:" + record.variables["esl_app_refused"]] += 1
            if timer.first_execute is not None:
                refusal_ms.append((timer.first_execute - started) * 1000)
        elif record.verbs == ["answer", "playback"]:
            outcomes["served"] += 1
            if timer.first_execute is not None:
                setup_ms.append((timer.first_execute - started) * 1000)
        else:
            outcomes["other:" + ",".join(record.verbs)] += 1

    greenlets = []
    interval = 1.0 / spec["rate"]
    begin = time.perf_counter() + 0.05
    count = int(spec["rate"] * spec["duration"])
    for i in range(count):
        delay = begin + i * interval - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        greenlets.append(gevent.spawn(one))
    gevent.joinall(greenlets)
    cpu = os.times()
    return {
        "offered": count,
        "outcomes": dict(outcomes),
        "setup_ms": setup_ms,
        "refusal_ms": refusal_ms,
        "cpu_s": cpu.user + cpu.system,
    }


def serve_generator() -> None:
    """``generate`` for each JSON spec line on stdin, one result line each (``--dialer``'s rounds)."""
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(generate(json.loads(line))), flush=True)


def start_generators(specs: list[dict[str, Any]]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "esl_app.pools.bench", "--generate", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]


def collect(processes: list[subprocess.Popen[str]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"offered": 0, "outcomes": Counter(), "setup_ms": [], "refusal_ms": [], "cpu_s": 0.0}
    for process in processes:
        out, _ = process.communicate()
        result = json.loads(out.strip().splitlines()[-1])
        merged["offered"] += result["offered"]
        merged["outcomes"].update(result["outcomes"])
        merged["setup_ms"] += result["setup_ms"]
        merged["refusal_ms"] += result["refusal_ms"]
        merged["cpu_s"] += result["cpu_s"]
    return merged


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the run ----------------------------------------------------------------------------------------


def load(port: int, destination: str, rate: float, hold: float, duration: float, processes: int, cpus: Any) -> list:
    share = rate / processes
    return start_generators(
        [
            {"port": port, "destination": destination, "rate": share, "hold": hold, "duration": duration,
             "cpus": cpus}
            for _ in range(processes)
        ]
    )  # fmt: skip


def describe(name: str, result: dict[str, Any]) -> str:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items()))
    return (
        f"  {name:<9} offered {result['offered']:>5}: {outcomes}; setup p50 {pct(result['setup_ms'], 0.5):.2f} ms "
        f"p99 {pct(result['setup_ms'], 0.99):.2f} ms; refusal p50 {pct(result['refusal_ms'], 0.5):.2f} ms "
        f"p99 {pct(result['refusal_ms'], 0.99):.2f} ms; generator CPU {result['cpu_s']:.1f} s"
    )


def launch_supervisor(args: argparse.Namespace) -> subprocess.Popen[str]:
    """The supervisor serving this module's app on free ports (``supervisor_ports`` waits for it)."""
    pin_in, pin_out = ([0], [1 % (os.cpu_count() or 1)]) if args.pin else (None, None)
    env = {
        **os.environ,
        "ESL_APP_POOLS__INBOUND__PORT": "0",
        "ESL_APP_POOLS__INBOUND__CAPACITY": str(args.inbound_capacity),
        "ESL_APP_POOLS__OUTBOUND__PORT": "0",
        "ESL_APP_POOLS__OUTBOUND__CAPACITY": str(args.outbound_capacity),
        "ESL_APP_HTTP_PORT": "0",
        "ESL_APP_LOG_LEVEL": "ERROR",
        "ESL_APP_HANGUP_WAIT": "0.2",
    }
    if args.pin:
        env["ESL_APP_POOLS__INBOUND__CPUS"] = json.dumps(pin_in)
        env["ESL_APP_POOLS__OUTBOUND__CPUS"] = json.dumps(pin_out)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "esl_app.pools", "esl_app.pools.bench:app"],
        env=env,
        cwd=args.workdir,
        stdout=subprocess.PIPE,
        text=True,
    )


def supervisor_ports(supervisor: subprocess.Popen[str], *, ready: bool = True) -> tuple[dict[str, int], int | None]:
    """(each pool's port, the HTTP port), printed once the sockets are bound; ``ready``: also wait for
    the workers to accept calls (``wait_ready``)."""
    ports: dict[str, int] = {}
    http_port = None
    is_ready = False
    assert supervisor.stdout is not None
    for line in supervisor.stdout:
        found = re.match(r"esl-app: pool (\w+) on [\d.]+:(\d+)", line)
        if found:
            ports[found.group(1)] = int(found.group(2))
        found = re.match(r"esl-app: http on [\d.]+:(\d+)", line)
        if found:
            http_port = int(found.group(1))
            break  # printed after the pools, before the workers are ready
        if line.strip() == "esl-app: ready":
            is_ready = True
            break
    if set(ports) != {"inbound", "outbound"}:
        supervisor.kill()
        raise SystemExit(f"error: the supervisor did not start both pools (exit {supervisor.wait()})")
    if ready and not is_ready:
        wait_ready(supervisor)
    return ports, http_port


def wait_ready(supervisor: subprocess.Popen[str]) -> None:
    assert supervisor.stdout is not None
    for line in supervisor.stdout:
        if line.strip() == "esl-app: ready":
            return
    raise SystemExit(f"error: the supervisor's workers did not start (exit {supervisor.wait()})")


def stop_supervisor(supervisor: subprocess.Popen[str]) -> None:
    supervisor.send_signal(signal.SIGTERM)
    supervisor.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--serve-generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--node-host", help=argparse.SUPPRESS)
    parser.add_argument("--inbound-capacity", type=int, default=200)
    parser.add_argument("--outbound-capacity", type=int, default=100)
    parser.add_argument(
        "--inbound-rate", type=float, default=None, help="steady inbound calls/s in A and B (default: half capacity)"
    )
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each call stays in its playback")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--flood-processes", type=int, default=2)
    parser.add_argument("--pin", action="store_true", help="inbound pool on CPU 0, outbound pool and flood on CPU 1")
    dialer = parser.add_argument_group("--dialer: the outbound flood is the real dialer (pools/bench_dialer.py)")
    dialer.add_argument("--dialer", action="store_true", help="rounds of quiet / dialer-flood phases instead of A-C")
    dialer.add_argument("--rounds", type=int, default=4, help="quiet + flood rounds (medians across rounds)")
    dialer.add_argument("--dialers", type=int, default=1, help="esl-app dialer processes")
    dialer.add_argument("--dialer-cps", type=float, default=None,
                        help="the campaign's calls/s (default: 2 x outbound capacity / hold, as phase B)")  # fmt: skip
    dialer.add_argument("--answer-percent", type=int, default=80, help="numbers that answer; the rest are busy, "
                        "do not answer, or reject")  # fmt: skip
    dialer.add_argument("--ring", type=float, default=0.1, help="seconds a number rings before it answers")
    dialer.add_argument("--flood-nice", type=int, default=0, help="nice value of the dialers and the fake nodes "
                        "(they stand in for other hosts); the outbound pool keeps its priority")  # fmt: skip
    dialer.add_argument("--dsn", default=None, help="Postgres (default: ESL_APP_DATA_POSTGRES_DSN)")
    dialer.add_argument("--redis", default=None, help="Redis (default: ESL_APP_DATA_REDIS_URL)")
    dialer.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if args.generate:
        print(json.dumps(generate(json.loads(args.generate))), flush=True)
        return 0
    if args.serve_generator:
        serve_generator()
        return 0
    if args.node_host:
        from .bench_dialer import node_host

        node_host(json.loads(args.node_host))
        return 0
    args.workdir = tempfile.mkdtemp(prefix="esl-app-bench-")
    if args.dialer:
        return main_dialer(args)

    ncpu = os.cpu_count() or 1
    pin_in = [0] if args.pin else None
    pin_out = [1 % ncpu] if args.pin else None
    supervisor = launch_supervisor(args)
    ports, _ = supervisor_ports(supervisor)
    hold, duration = args.hold, args.duration
    if args.inbound_rate is None:
        args.inbound_rate = 0.5 * args.inbound_capacity / hold
    flood_rate = 2 * args.outbound_capacity / hold
    print(
        f"isolation benchmark: {ncpu} CPUs{' (pinned: inbound CPU 0, outbound + flood CPU 1)' if args.pin else ''}; "
        f"inbound capacity {args.inbound_capacity}, outbound capacity {args.outbound_capacity}, one worker each; "
        f"calls hold {hold:.1f} s; {duration:.0f} s per phase",
        flush=True,
    )
    try:
        print(f"A. inbound alone at {args.inbound_rate:.0f} calls/s", flush=True)
        a = collect(load(ports["inbound"], "1000", args.inbound_rate, hold, duration, 1, pin_in))
        print(describe("inbound", a), flush=True)
        time.sleep(hold + 0.5)

        print(f"B. inbound at {args.inbound_rate:.0f} calls/s + outbound flood at {flood_rate:.0f} calls/s "
              f"(offered {2 * args.outbound_capacity} concurrent = 2x capacity)", flush=True)  # fmt: skip
        flood = load(ports["outbound"], "2000", flood_rate, hold, duration, args.flood_processes, pin_out)
        b = collect(load(ports["inbound"], "1000", args.inbound_rate, hold, duration, 1, pin_in))
        f = collect(flood)
        print(describe("inbound", b), flush=True)
        print(describe("outbound", f), flush=True)
        time.sleep(hold + 0.5)

        in_rate3, out_rate3 = 3 * args.inbound_capacity / hold, 3 * args.outbound_capacity / hold
        print(f"C. 3x total capacity: inbound {in_rate3:.0f} calls/s, outbound {out_rate3:.0f} calls/s", flush=True)
        flood3 = load(ports["outbound"], "2000", out_rate3, hold, duration, args.flood_processes, pin_out)
        c_in = collect(load(ports["inbound"], "1000", in_rate3, hold, duration, args.flood_processes, pin_in))
        c_out = collect(flood3)
        print(describe("inbound", c_in), flush=True)
        print(describe("outbound", c_out), flush=True)
    finally:
        stop_supervisor(supervisor)

    base99 = pct(a["setup_ms"], 0.99)
    ratio = pct(b["setup_ms"], 0.99) / base99
    refused_in = sum(v for k, v in b["outcomes"].items() if k != "served")
    print("\nresults")
    print(
        f"  isolation: inbound setup p99 {pct(b['setup_ms'], 0.99):.2f} ms with the flood vs {base99:.2f} ms without "
        f"-> ratio {ratio:.2f} (target <= 1.2); inbound calls refused or failed during the flood: {refused_in} "
        f"(target 0); median {statistics.median(b['setup_ms']):.2f} vs {statistics.median(a['setup_ms']):.2f} ms"
    )
    for name, result in (("inbound", c_in), ("outbound", c_out)):
        outcomes = result["outcomes"]
        served = outcomes.get("served", 0)
        refused = sum(v for k, v in outcomes.items() if k.startswith("refused:"))
        other = result["offered"] - served - refused
        p99 = pct(result["setup_ms"], 0.99)
        print(
            f"  3x capacity, {name}: offered {result['offered']}, admitted {served}, refused explicitly {refused} "
            f"({', '.join(f'{k[8:]} {v}' for k, v in outcomes.items() if k.startswith('refused:'))}), "
            f"unanswered or failed {other} (target 0); admitted p99 {p99:.2f} ms = {p99 / base99:.2f}x unloaded "
            f"(target <= 2); refusal p99 {pct(result['refusal_ms'], 0.99):.2f} ms at the caller"
        )
    return 0


def main_dialer(args: argparse.Namespace) -> int:
    from ..data.settings import DataSettings
    from . import bench_dialer

    settings = DataSettings()
    args.dsn, args.redis = args.dsn or settings.postgres_dsn, args.redis or settings.redis_url
    if not args.dsn or not args.redis:
        print("error: --dialer needs Postgres and Redis (--dsn/--redis or ESL_APP_DATA_*)", file=sys.stderr)
        return 2
    quiet = args.json
    out = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    ncpu = os.cpu_count() or 1
    pinning = (" (pinned: inbound pool + its generator CPU 0; outbound pool, dialers, fake nodes, the dialers' "
               "Postgres backends CPU 1)")  # fmt: skip
    out(f"isolation with the real dialer: {ncpu} CPUs{pinning if args.pin else ''}"
        f"; inbound capacity {args.inbound_capacity}, outbound capacity {args.outbound_capacity}, one worker each; "
        f"calls hold {args.hold:g} s; {args.rounds} rounds of quiet / flood, {args.duration:g} s measured each; "
        f"{f'dialers and nodes at nice {args.flood_nice}; ' if args.flood_nice else ''}"
        f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    result = bench_dialer.run(args, out)
    result["load_average"] = os.getloadavg()
    if quiet:
        print(json.dumps(result, default=str))
    else:
        bench_dialer.report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
