"""``esl-app bench-queue``: offer latency of the ACD across worker processes sharing Redis.

Worker processes (``python -m esl_app.queue.bench worker``) each serve an App whose flow is
``call.enqueue("bench")``; this process plays FreeSWITCH for every call (the fake, over TCP) at a fixed
rate, spread over the workers, and the agents' calls are short answered bridges. Each offer's latency
is measured by the worker that bridges: from the event that made the pair (the caller's join, or the
agent's call end, in whichever process that happened) to the bridge ``execute`` being written.

The same machinery checks the ACD's promises (``tests/test_queue_race.py``): the workers log every
answered bridge (agent, caller, start, end), so a double offer shows as overlapping bridges of one agent.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

# mod_callcenter on FreeSWITCH 1.10.12, measured on this kind of machine (issue 10)
MOD_CALLCENTER = {"join": (50.0, 100.0), "free": (730.0, 1030.0)}


def worker_main(argv: list[str]) -> int:
    """One worker: an outbound server whose every call waits in queue ``bench``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--audit", action="store_true")
    args = parser.parse_args(argv)

    from ..app import App
    from ..transport import OutboundServer
    from .service import QueueService

    service = QueueService(args.redis, args.prefix, latency_key=args.prefix + "bench:latency").start()
    app = App("bench-queue")

    @app.default
    def wait_in_queue(call) -> None:  # type: ignore[no-untyped-def]
        outcome = call.enqueue("bench")
        if args.audit:
            service.client.rpush(args.prefix + "bench:audit", json.dumps({
                "caller": call.uuid, "outcome": outcome.outcome, "agent": outcome.agent,
                "start": outcome.bridged_at, "end": outcome.bridge_ended_at, "offers": outcome.offers,
            }))  # fmt: skip

    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    gc.freeze()  # as a pool worker does after start-up (esl_app.pools.worker.main)
    print(server.address[1], flush=True)
    import gevent

    # runs until the driver closes our stdin (or kills us); read in a thread so the hub keeps serving
    gevent.get_hub().threadpool.spawn(sys.stdin.read).get()
    server.stop(deadline=5)
    service.stop()
    return 0


@dataclass
class Run:
    calls: int
    answered: int
    failed: int
    seconds: float
    placing_seconds: float = 0.0  # from the first call placed to the last (the offered rate)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    audit: list[dict] = field(default_factory=list)
    bridges_per_call: list[int] = field(default_factory=list)
    worker_cpu: float = 0.0  # CPU seconds of the workers, and of the processes playing FreeSWITCH
    driver_cpu: float = 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def drive_main(argv: list[str]) -> int:
    """Place calls at a fixed rate over TCP as FreeSWITCH would; print what they saw as JSON."""
    import functools

    import gevent

    from ..protocol import switch
    from ..testing.simulate import simulate_tcp_call

    # a lean FreeSWITCH: the same bytes, but each header value is URL-encoded once, not per event (the
    # fake's encoding was most of this process's CPU, competing with the workers for the 2 cores)
    switch.encode_value = functools.lru_cache(maxsize=1 << 16)(switch.encode_value)  # type: ignore[assignment]

    times = os.times()
    start_cpu = times.user + times.system
    ports_text, calls_text, rate_text, talk_text, index_text = argv
    ports = [int(p) for p in ports_text.split(",")]
    calls, rate, talk, index = int(calls_text), float(rate_text), float(talk_text), int(index_text)
    out: dict[str, object] = {"answered": 0, "failed": 0, "bridges_per_call": []}

    def one(i: int) -> None:
        try:
            record = simulate_tcp_call(("127.0.0.1", ports[(i + index) % len(ports)]), timeout=120, trace=False,
                                       app_seconds={"bridge": talk, "playback": 600})  # fmt: skip
            bridges = record.verbs.count("bridge")
            out["bridges_per_call"].append(bridges)  # type: ignore[attr-defined]
            out["answered"] += 1 if record.record.answered and bridges else 0  # type: ignore[operator]
        except Exception:
            out["failed"] += 1  # type: ignore[operator]

    started = time.perf_counter()
    greenlets = []
    for i in range(calls):
        gevent.sleep(max(0.0, started + i / rate - time.perf_counter()))
        greenlets.append(gevent.spawn(one, i))
    out["placing_seconds"] = time.perf_counter() - started
    gevent.joinall(greenlets, timeout=200)
    times = os.times()
    out["cpu_seconds"] = times.user + times.system - start_cpu
    print(json.dumps(out), flush=True)
    return 0


def run(
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    workers: int = 2,
    agents: int = 50,
    calls: int = 300,
    rate: float = 100.0,
    talk_seconds: float = 0.05,
    wrap_up_seconds: int = 0,
    audit: bool = False,
    prefix: str | None = None,
    drivers: int = 2,
) -> Run:
    import redis

    from .config import AcdConfig, AgentConfig, QueueConfig, Tier
    from .service import QueueService

    prefix = prefix or f"esl-bench-{uuid.uuid4().hex[:8]}:"
    control = QueueService(redis_url, prefix, sweep_interval=0).start(install=False)
    raw = redis.Redis.from_url(redis_url)
    config = AcdConfig(
        queues=[QueueConfig(name="bench", wrap_up_seconds=wrap_up_seconds, no_answer_delay_seconds=0,
                            max_wait_seconds=120, music="local_stream://moh")],
        agents=[AgentConfig(id=f"b{i}", contact=f"user/b{i}") for i in range(agents)],
        tiers=[Tier(queue="bench", agent=f"b{i}", position=i + 1) for i in range(agents)],
    )
    control.publish_config(config)
    for i in range(agents):
        control.login(f"b{i}")
    procs = []
    try:
        for _ in range(workers):
            cmd = [sys.executable, "-m", "esl_app.queue.bench", "worker", "--redis", redis_url, "--prefix", prefix]
            # each process in its own session: with the kernel's autogroup scheduling, processes of one
            # session share one group's CPU, so the 4 of a bench got one job's share of a busy machine
            proc = subprocess.Popen(cmd + (["--audit"] if audit else []), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, start_new_session=True)
            procs.append(proc)
        ports = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
        start_cpu = sum(_cpu_seconds(p.pid) for p in procs)  # their start-up (imports) is not per call
        result = Run(calls=calls, answered=0, failed=0, seconds=0.0)
        # FreeSWITCH's side of the calls is played by ``drivers`` processes (one could not place 100
        # calls/s on a loaded 2-core machine), each placing its share at its share of the rate
        started = time.perf_counter()
        share = [calls // drivers + (1 if i < calls % drivers else 0) for i in range(drivers)]
        placers = [
            subprocess.Popen([sys.executable, "-m", "esl_app.queue.bench", "drive", ",".join(map(str, ports)),
                              str(share[i]), str(rate * share[i] / calls), str(talk_seconds), str(i)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
            for i in range(drivers)
            if share[i]
        ]
        for placer in placers:
            out, _ = placer.communicate(timeout=300)
            part = json.loads(out)
            result.answered += part["answered"]
            result.failed += part["failed"]
            result.bridges_per_call += part["bridges_per_call"]
            result.placing_seconds = max(result.placing_seconds, part["placing_seconds"])
            result.driver_cpu += part["cpu_seconds"]
        result.seconds = time.perf_counter() - started
        result.worker_cpu = sum(_cpu_seconds(p.pid) for p in procs) - start_cpu
        for item in raw.lrange(prefix + "bench:latency", 0, -1):
            kind, seconds = item.decode().split()
            result.latency_ms.setdefault(kind, []).append(float(seconds) * 1000)
        result.audit = [json.loads(x) for x in raw.lrange(prefix + "bench:audit", 0, -1)]
        return result
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        control.stop()
        for key in raw.scan_iter(match=prefix + "*", count=1000):
            raw.delete(key)
        raw.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, r: Run, kind: str) -> str:
    values = r.latency_ms.get(kind, [])
    cc50, cc99 = MOD_CALLCENTER[kind]
    dist = "   ".join(
        f"{label} {percentile(values, q):7.2f}" for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    )
    others = {k: len(v) for k, v in r.latency_ms.items() if k != kind}
    return (
        f"{name}\n"
        f"  {r.calls} calls placed at {r.calls / max(r.placing_seconds, 1e-9):.1f}/s over {r.placing_seconds:.1f} s"
        f" ({r.seconds:.1f} s in all): {r.answered} answered, {r.failed} failed;"
        f" {len(values)} samples of this kind{f' (other kinds: {others})' if others else ''}\n"
        f"  CPU per call: workers {r.worker_cpu / r.calls * 1000:.1f} ms,"
        f" fake FreeSWITCH {r.driver_cpu / r.calls * 1000:.1f} ms\n"
        f"  esl-app          {dist}   max {max(values, default=float('nan')):7.2f} ms\n"
        f"  mod_callcenter   p50 {cc50:7.2f}   p90       -   p99 {cc99:7.2f} ms   (1.10.12, issue 10)"
    )


def main(args: argparse.Namespace) -> int:
    idle = run(redis_url=args.redis, workers=args.workers, agents=args.idle_agents, calls=args.calls, rate=args.rate,
               drivers=args.drivers)  # fmt: skip
    print(report("caller joins with idle agents -> bridge execute", idle, "join"))
    # few agents, more callers than they can take: every offer follows an agent's call end
    busy = run(redis_url=args.redis, workers=args.workers, agents=args.busy_agents, calls=args.calls,
               rate=args.rate, talk_seconds=args.talk, drivers=args.drivers)  # fmt: skip
    print(report("agent frees up with callers waiting -> next bridge execute", busy, "free"))
    for name, r in (("idle agents", idle), ("callers waiting", busy)):
        placed = r.calls / max(r.placing_seconds, 1e-9)
        if placed < 0.98 * args.rate:
            print(f"note ({name}): {placed:.1f} calls/s placed, not {args.rate:g}: the processes did not get the CPU"
                  " to place them, so the figures above measure the machine's load as much as the ACD")  # fmt: skip
    return 0 if not (idle.failed or busy.failed) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "drive":
        sys.exit(drive_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        os.environ.setdefault("ESL_APP_LOG_LEVEL", "WARNING")
        sys.exit(worker_main(sys.argv[2:]))
    raise SystemExit("usage: esl-app bench-queue (this module's 'worker' mode is started by it)")
