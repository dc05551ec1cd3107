"""Isolation with the real dialer (issue 9, part 7): ``python bench/isolation.py --dialer [--pin]``.

The outbound flood of the isolation benchmark (``esl_app.pools.bench``) is the dialer itself:
``--dialers`` real ``esl-app dialer`` processes run one campaign of many contacts in a scratch
Postgres schema, paced through Redis (a scratch key prefix), and originate through the cluster client
on fake outbound FreeSWITCH nodes (``esl_app.testing.fake_node``, all in one "node host" process
standing in for the outbound switches). An answered call runs ``&socket(<outbound pool> async full)``
on its node, so its per-call fake connects to the **outbound pool**, as the dialplan's ``socket``
would; the far end hangs up after ``hold`` seconds. Some numbers are busy, do not answer or reject
(``--answer-percent``), as a dialer's traffic does.

Inbound calls are measured on the inbound pool at the same time, by the open-loop generator of the
other phases (TCP connect -> first execute). Rounds alternate the two phases:

* quiet: the campaign paused and no call left on the nodes; inbound alone;
* flood: the campaign running; once its calls have ramped up (``hold`` + ring), inbound is measured
  for ``duration`` seconds; then the campaign is paused and its calls drain.

Printed: inbound setup p50/p99 of each phase, the medians of p99 across rounds and their ratio (goal
<= 1.2), the dialer's achieved originate rate (attempts written while inbound was measured), the
answered calls that ran the flow on the outbound pool (what the nodes saw, and the pool's own
``esl_app_calls_accepted_total``), every error; and where the CPU went in each phase (each core's
busy share, each part's CPU, the inbound worker's wait for a CPU), since on a shared machine that
decides the tail.

``--pin`` (2 cores): CPU 0 has the inbound pool and its generator; CPU 1 the outbound pool, the
dialer(s), the node host and the dialers' Postgres backends (moved there at each measurement: the
dialer's database is on other hosts in a deployment, and left to the scheduler ~16% of CPU 0 was
Postgres during a flood). Redis is not moved (under 1% of CPU 0). ``--flood-nice`` lowers the
priority of the dialers and the nodes (stand-ins for other hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg

from .bench import pct

FLOW = "isolation"  # esl_app_flow of the campaign: the outbound-pool route of esl_app.pools.bench
BASE_NUMBER = 2_000_000_000
NODES = 3


# -- the node host: fake outbound nodes in their own process ---------------------------------------


def _outcome_of(index: int, answer_percent: int, hold: float, ring: float) -> Any:
    from esl_app.testing.node_calls import Outcome

    if index % 100 < answer_percent:
        return Outcome(kind="answer", ring_seconds=ring, hangup_after=hold)
    kind = ("busy", "no_answer", "reject")[index % 3]
    # a number nobody answers rings for a second (the campaign's ring timeout is longer)
    return Outcome(kind=kind, ring_seconds=1.0 if kind == "no_answer" else ring)  # type: ignore[arg-type]


def number(index: int) -> str:
    return f"+1{BASE_NUMBER + index:010d}"


def node_host(spec: dict[str, Any]) -> None:
    """Run ``NODES`` fake nodes; print their addresses, then answer ``stats`` lines until stdin closes."""
    import gevent
    from gevent.fileobject import FileObject

    from esl_app.testing.fake_node import FakeNode

    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])
    if spec.get("nice"):
        os.nice(spec["nice"])
    hold, ring = spec["hold"], spec["ring"]
    outcomes = {number(i): _outcome_of(i, spec["answer_percent"], hold, ring) for i in range(spec["contacts"])}
    nodes = []
    for i in range(NODES):
        node = FakeNode(f"fs{i + 1}", sessions_per_second=100_000, max_sessions=100_000, ring_seconds=ring)
        node.outcomes = outcomes  # read only: every node treats a number alike
        nodes.append(node.start())
    print(json.dumps({"nodes": [{"name": n.name, "host": n.host, "port": n.port} for n in nodes]}), flush=True)
    stdin = FileObject(sys.stdin.fileno(), "r")  # cooperative: the nodes keep running while we wait
    try:
        for line in stdin:
            if line.strip() == "stats":
                print(json.dumps(node_stats(nodes)), flush=True)
    finally:
        for node in nodes:
            node.stop()
        gevent.sleep(0)


def node_stats(nodes: list[Any]) -> dict[str, Any]:
    """Cumulative: legs placed, answered, live; what each answered call's socket run met at the pool."""
    counts: Counter[str] = Counter()
    setup_ms: list[float] = []
    for node in nodes:
        for call in node.calls:
            counts["placed"] += 1
            counts["answered"] += call.answered
            counts["live"] += call.alive
            for record in call.socket_records:
                refused = record.variables.get("esl_app_refused")
                if refused:
                    counts[f"refused:{refused}"] += 1
                elif "playback" in record.verbs:
                    counts["served"] += 1  # the campaign's flow ran: only the outbound pool routes it
                    if record.first_execute_at is not None:
                        setup_ms.append((record.first_execute_at - record.started_at) * 1000)
                elif record.hung_up_by == "caller":
                    counts["cut_short"] += 1  # the callee hung up (after hold) before the flow played its message
                else:
                    counts["other:" + ",".join(record.verbs)] += 1
            if call.answered and not call.alive and not call.socket_records:
                counts["socket_failed"] += 1  # the pool could not be reached: the call went on without it
    return {"counts": dict(counts), "setup_ms": setup_ms}


class NodeHost:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "esl_app.pools.bench", "--node-host", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._nodes: list[dict[str, Any]] | None = None

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The nodes' names and addresses (waits for the process to listen)."""
        if self._nodes is None:
            assert self.process.stdout is not None
            self._nodes = json.loads(self.process.stdout.readline())["nodes"]
        return self._nodes

    def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def wait_idle(self, timeout: float) -> bool:
        """True once no leg is live on any node (the previous flood's calls are over)."""
        deadline = time.monotonic() + timeout
        while self.stats()["counts"].get("live", 0):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the generator: one long-lived process for every phase -------------------------------------------


class Generator:
    """``esl_app.pools.bench.generate`` in a process kept for the whole run (started once, pinned once:
    no interpreter start-up inside a measured phase)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "esl_app.pools.bench", "--serve-generator"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


# -- Postgres ------------------------------------------------------------------------------------


def _sql(dsn: str, schema: str, fn: Any, *args: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            return await fn(conn, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


async def _create(conn: asyncpg.Connection, schema: str, cps: float, concurrent: int, contacts: int) -> int:
    from esl_app.dialer import store
    from esl_app.dialer.bench import _prepare
    from esl_app.dialer.numbers import ContactRow

    await _prepare(conn, schema)
    spec = store.CampaignSpec(name="isolation", tenant_id="demo", caller_id_number="442071234567",
                              gateway="sofia/gateway/carrier", flow=FLOW, cps=cps, max_concurrent=concurrent,
                              max_attempts=1, ring_timeout=5)  # fmt: skip
    campaign_id = await store.create_campaign(conn, spec)
    await store.load_contacts(conn, campaign_id, [ContactRow(line=i + 2, number=number(i)) for i in range(contacts)])
    return campaign_id


async def _attempts(conn: asyncpg.Connection, campaign_id: int, since: float, until: float) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT coalesce(outcome, 'pending') AS outcome, count(*) AS n FROM attempts WHERE campaign_id = $1"
        " AND created_at >= to_timestamp($2) AND created_at < to_timestamp($3) GROUP BY 1",
        campaign_id, since, until,
    )  # fmt: skip
    return {r["outcome"]: int(r["n"]) for r in rows}


async def _remaining(conn: asyncpg.Connection, campaign_id: int) -> tuple[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT status FROM campaigns WHERE id = $1) AS status,"
        " (SELECT count(*) FROM contacts WHERE campaign_id = $1 AND state = 'pending') AS pending",
        campaign_id,
    )
    return row["status"], int(row["pending"])


async def _drop(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _set_status(dsn: str, schema: str, status: str) -> None:
    from esl_app.dialer import store

    _sql(dsn, schema, store.set_status, "isolation", status)


# -- the dialers -------------------------------------------------------------------------------------


def _placed(cpus: list[int] | None, nice: int) -> Any:
    """Run in the child before it starts any thread (threads inherit both)."""
    if not cpus and not nice:
        return None

    def place() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.nice(nice)

    return place


def start_dialers(
    count: int, env: dict[str, str], prefix: str, cpus: list[int] | None, nice: int, log_path: str
) -> list[subprocess.Popen[str]]:
    log = open(log_path, "a")  # noqa: SIM115  # kept open by the children for their whole run
    dialers = []
    for i in range(count):
        dialers.append(
            subprocess.Popen(
                [sys.executable, "-m", "esl_app.cli", "--log-level", "WARNING", "dialer", "--name",
                 f"isolation-{i + 1}", "--redis-prefix", prefix],
                env=env, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=_placed(cpus, nice),
            )
        )  # fmt: skip
    log.close()
    return dialers


def wait_dialers(dialers: list[subprocess.Popen[str]], log_path: str) -> None:
    for dialer in dialers:
        assert dialer.stdout is not None
        if '"ready": true' not in dialer.stdout.readline():
            raise RuntimeError(f"a dialer did not start (see {log_path})")


def stop_dialers(dialers: list[subprocess.Popen[str]]) -> list[int | None]:
    for dialer in dialers:
        if dialer.poll() is None:
            dialer.terminate()
    codes = []
    for dialer in dialers:
        try:
            codes.append(dialer.wait(timeout=20))
        except subprocess.TimeoutExpired:
            dialer.kill()
            codes.append(dialer.wait())
    return codes


def accepted(http_port: int | None, pool: str) -> int | None:
    """``esl_app_calls_accepted_total{pool}`` from the supervisor's /metrics (None: not available)."""
    if not http_port:
        return None
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^esl_app_calls_accepted_total\{{pool="{pool}"\}} ([0-9.e+]+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


# -- where the CPU went -------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # gone (a Postgres backend closed): its last share is lost, a small undercount
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _waited_seconds(pid: int) -> float:
    """Time the process's main thread spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _cores() -> dict[str, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies since boot (idle and iowait are not busy)."""
    out = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values]
                out[name] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def pool_pids(http_port: int | None) -> dict[str, list[int]]:
    """The workers of each pool, from the supervisor's /ready."""
    if not http_port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=5) as response:
            status = json.loads(response.read())
    except OSError:
        return {}
    return {name: [w["pid"] for w in pool["workers"]] for name, pool in status["pools"].items()}


async def _backends(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'esl-app dialer isolation-%'")
    return [r["pid"] for r in rows]


def pin_backends(pids: list[int], cpus: list[int]) -> None:
    """Move the dialers' Postgres backends to the flood's CPUs (``--pin``): they stand for the dialer's
    database, on other hosts in a deployment. Measured without this: ~16% of CPU 0 was Postgres during
    a flood (perf, cpu-clock samples by command), which the scheduler put next to the inbound pool.
    Moving another user's process needs root (CAP_SYS_NICE); without it they stay where they are."""
    for pid in pids:
        with contextlib.suppress(OSError):  # gone, or not ours to move
            os.sched_setaffinity(pid, cpus)


class Meter:
    """CPU use of each part of the bench, and how busy each core was (the other helpers' load
    included), between two snapshots. ``flood_cpus``: where the dialers' Postgres backends are moved
    at each snapshot (``--pin``; a backend the dialers open later is moved at the next one)."""

    def __init__(self, parts: dict[str, list[int]], dsn: str, flood_cpus: list[int] | None = None) -> None:
        self.parts, self.dsn, self.flood_cpus = parts, dsn, flood_cpus

    def snapshot(self) -> dict[str, Any]:
        backends = _sql(self.dsn, "public", _backends)
        if self.flood_cpus:
            pin_backends(backends, self.flood_cpus)
        parts = {name: {pid: _cpu_seconds(pid) for pid in pids} for name, pids in self.parts.items()}
        parts["postgres (dialers)"] = {pid: _cpu_seconds(pid) for pid in backends}
        waits = {pid: _waited_seconds(pid) for pid in self.parts["inbound worker"]}
        return {"at": time.monotonic(), "parts": parts, "cores": _cores(), "inbound_waits": waits}

    @staticmethod
    def between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        seconds = after["at"] - before["at"]
        cores = {name: round(100 * (busy - before["cores"][name][0]) / max(1, total - before["cores"][name][1]))
                 for name, (busy, total) in after["cores"].items()}  # fmt: skip
        parts = {}
        for name, pids in after["parts"].items():
            used = sum(cpu - before["parts"].get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
            parts[name] = round(used / seconds, 2)  # CPU-seconds per second: 1.0 = one whole core
        waited = sum(w - before["inbound_waits"].get(pid, 0.0) for pid, w in after["inbound_waits"].items())
        # how long the inbound worker was ready to run but had no CPU: the direct cost of sharing a core
        return {
            "core_busy_pct": cores,
            "cpu_per_s": parts,
            "inbound_worker_cpu_wait_ms_per_s": round(1000 * waited / seconds, 1),
        }


def describe_cpu(cpu: dict[str, Any]) -> str:
    cores = ", ".join(f"{name} {pct}%" for name, pct in sorted(cpu["core_busy_pct"].items()))
    parts = ", ".join(f"{name} {used:.2f}" for name, used in cpu["cpu_per_s"].items())
    return (f"busy {cores}; ours (cores): {parts}; inbound worker waited for a CPU "
            f"{cpu['inbound_worker_cpu_wait_ms_per_s']:.0f} ms/s")  # fmt: skip


# -- the run -------------------------------------------------------------------------------------------


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if k != "live" and v - before.get(k, 0)}


async def _first_attempt(conn: asyncpg.Connection, campaign_id: int, since: float) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM attempts WHERE campaign_id = $1 AND created_at >="
                                    " to_timestamp($2))", campaign_id, since))  # fmt: skip


def run(args: Any, out: Any = print) -> dict[str, Any]:
    """Start everything, run the alternating rounds, stop everything; the figures (``report`` prints them)."""
    from .bench import launch_supervisor, supervisor_ports, wait_ready

    pin_in = [0] if args.pin else None
    pin_out = [1 % (os.cpu_count() or 1)] if args.pin else None
    hold, ring, duration = args.hold, args.ring, args.duration
    cps = args.dialer_cps or 2 * args.outbound_capacity / hold
    inbound_rate = args.inbound_rate or 0.5 * args.inbound_capacity / hold
    ramp = hold + ring + 0.5
    # enough contacts for every flood phase at full rate (from start to pause), plus a margin
    contacts = int(cps * (ramp + duration + 2.0) * args.rounds * 1.3) + 100
    concurrent = min(500, int(cps * (hold + 1.5)) + 10)  # cps binds, not max concurrent (the demo tenant: 500)
    schema = f"esl_iso_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"esl-iso-bench-{uuid.uuid4().hex[:10]}:"
    result: dict[str, Any] = {
        "dialers": args.dialers, "campaign_cps": cps, "max_concurrent": concurrent, "contacts": contacts,
        "inbound_rate": inbound_rate, "hold": hold, "duration": duration, "pinned": bool(args.pin),
        "flood_nice": args.flood_nice, "rounds": [],
        "schema": schema, "redis_prefix": prefix,
    }  # fmt: skip
    # the processes start together (each takes an interpreter's start-up); the campaign is written meanwhile
    supervisor = launch_supervisor(args)
    host = NodeHost({"cpus": pin_out, "nice": args.flood_nice, "hold": hold, "ring": ring, "contacts": contacts,
                     "answer_percent": args.answer_percent})  # fmt: skip
    generator = Generator()
    dialers: list[subprocess.Popen[str]] = []
    created = False
    try:
        campaign_id = _sql(args.dsn, "public", _create, schema, cps, concurrent, contacts)
        created = True
        ports, http_port = supervisor_ports(supervisor, ready=False)  # the dialers start with its workers
        env = {
            **os.environ,
            "ESL_APP_CLUSTER_NODES": json.dumps([{**n, "roles": ["outbound"]} for n in host.nodes]),
            "ESL_APP_CLUSTER_PROBE_INTERVAL": "0.25",
            # the node host is a busy single process: a late probe is not a dead node
            "ESL_APP_CLUSTER_PROBE_TIMEOUT": "3", "ESL_APP_CLUSTER_HEARTBEAT_INTERVAL": "1",
            "ESL_APP_DATA_POSTGRES_DSN": args.dsn, "ESL_APP_DATA_POSTGRES_SCHEMA": schema,
            "ESL_APP_DATA_REDIS_URL": args.redis, "ESL_APP_DIALER_SOCKET_HOST": "127.0.0.1",
            "ESL_APP_DIALER_SOCKET_PORT": str(ports["outbound"]), "ESL_APP_DIALER_BATCH": "200",
        }  # fmt: skip
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log_path = os.path.join(args.workdir, "dialers.log")
        dialers = start_dialers(args.dialers, env, prefix, pin_out, args.flood_nice, log_path)
        wait_ready(supervisor)
        wait_dialers(dialers, log_path)
        workers = pool_pids(http_port)
        meter = Meter({"inbound worker": workers.get("inbound", []), "generator": [generator.process.pid],
                       "outbound worker": workers.get("outbound", []), "dialers": [d.pid for d in dialers],
                       "nodes": [host.process.pid]}, args.dsn, flood_cpus=pin_out)  # fmt: skip
        spec = {"port": ports["inbound"], "destination": "1000", "rate": inbound_rate, "hold": hold,
                "duration": duration, "cpus": pin_in}  # fmt: skip
        rounds = Rounds(args, out, spec, generator, host, meter, http_port, schema, campaign_id, cps, ramp)
        result["rounds"] = [rounds.run(r + 1) for r in range(args.rounds)]
        status, pending = _sql(args.dsn, schema, _remaining, campaign_id)
        result["campaign_end"] = {"status": status, "pending": pending}
        setup = host.stats()["setup_ms"]
        result["outbound_setup_ms"] = {"p50": pct(setup, 0.5), "p99": pct(setup, 0.99)}
    finally:
        # every part stops at once: the supervisor's workers drain while the others exit
        supervisor.send_signal(signal.SIGTERM)
        for part in (generator.process, host.process):
            if part.stdin is not None:
                part.stdin.close()  # their end: EOF
        result["dialer_exit_codes"] = stop_dialers(dialers)
        generator.close()
        host.close()
        supervisor.wait(timeout=60)
        if created:
            _sql(args.dsn, "public", _drop, schema)
        _drop_keys(args.redis, prefix)
    result.update(verdict(result))
    return result


@dataclass
class Rounds:
    """What one round needs: the running parts and the scratch campaign."""

    args: Any
    out: Any
    spec: dict[str, Any]  # the inbound generator's
    generator: Generator
    host: NodeHost
    meter: Meter
    http_port: int | None
    schema: str
    campaign_id: int
    cps: float
    ramp: float

    def run(self, number: int) -> dict[str, Any]:
        """One quiet phase, then one flood phase."""
        args, out, host = self.args, self.out, self.host
        if not host.wait_idle(args.hold + 10):
            out("  warning: calls of the last flood are still up on the nodes")
        before = self.meter.snapshot()
        quiet = self.generator.run(self.spec)
        quiet_cpu = Meter.between(before, self.meter.snapshot())
        out(describe(f"round {number} quiet", quiet))
        out(f"    {describe_cpu(quiet_cpu)}")

        nodes_before, pool_before = host.stats()["counts"], accepted(self.http_port, "outbound")
        flood_started = time.time()
        _set_status(args.dsn, self.schema, "running")
        # the dialers see the change within status_refresh; their first calls need the nodes seen up
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _sql(args.dsn, self.schema, _first_attempt, self.campaign_id,
                                                       flood_started):  # fmt: skip
            time.sleep(0.05)
        time.sleep(self.ramp)  # the calls build up to their steady number
        window, before = time.time(), self.meter.snapshot()
        flood = self.generator.run(self.spec)
        window_end, flood_cpu = time.time(), Meter.between(before, self.meter.snapshot())
        _set_status(args.dsn, self.schema, "paused")
        drained = host.wait_idle(args.hold + 10)
        time.sleep(0.3)  # the last hangups reach the dialers and the pool's metrics
        calls = _delta(host.stats()["counts"], nodes_before)
        attempts = _sql(args.dsn, self.schema, _attempts, self.campaign_id, window, window_end)
        placed = sum(v for k, v in attempts.items() if k != "not_originated")
        pool_after = accepted(self.http_port, "outbound")
        out(describe(f"round {number} flood", flood))
        out(f"    {describe_cpu(flood_cpu)}")
        ratio = pct(flood["setup_ms"], 0.99) / pct(quiet["setup_ms"], 0.99)
        out(f"  round {number}: inbound p99 flood / quiet = {ratio:.2f}")
        rate = placed / (window_end - window)
        landed = None if pool_after is None else pool_after - (pool_before or 0)
        out(f"  round {number} dialer: {placed} attempts in {window_end - window:.1f} s = {rate:.1f}/s (campaign cps "
            f"{self.cps:g}); on the nodes: {', '.join(f'{k} {v}' for k, v in sorted(calls.items()))}; "
            f"outbound pool accepted {landed}")  # fmt: skip
        return {
            "quiet": summary(quiet), "flood": summary(flood), "quiet_cpu": quiet_cpu, "flood_cpu": flood_cpu,
            "dialer": {"attempts_in_window": placed, "window_s": round(window_end - window, 2),
                       "originate_rate": round(rate, 1), "outcomes": attempts,
                       "flood_s": round(window_end - flood_started, 2)},
            "nodes": calls, "outbound_pool_accepted": landed, "drained": drained, "ratio": ratio,
        }  # fmt: skip


def _drop_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
    finally:
        client.close()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    setup = result["setup_ms"]
    return {"offered": result["offered"], "outcomes": result["outcomes"], "p50": pct(setup, 0.5),
            "p99": pct(setup, 0.99)}  # fmt: skip


def describe(name: str, result: dict[str, Any]) -> str:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items()))
    return (f"  {name:<15} inbound offered {result['offered']:>5}: {outcomes}; setup p50 "
            f"{pct(result['setup_ms'], 0.5):.2f} ms p99 {pct(result['setup_ms'], 0.99):.2f} ms")  # fmt: skip


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Medians across rounds; errors (something failed) apart from warnings (the machine was too slow
    for a round to end cleanly)."""
    rounds = result["rounds"]

    def median(phase: str, key: str) -> float:
        return statistics.median(r[phase][key] for r in rounds) if rounds else math.nan

    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for r in rounds:
        for phase in ("quiet", "flood"):
            for outcome, n in r[phase]["outcomes"].items():
                if outcome != "served":
                    errors[f"inbound {phase}: {outcome}"] += n
        for outcome, n in r["nodes"].items():
            if outcome == "socket_failed" or outcome.startswith("other:"):
                errors[f"dialer call on the outbound pool: {outcome}"] += n
        if r["dialer"]["outcomes"].get("pending"):
            warnings["attempts still dialling at the end of their round"] += r["dialer"]["outcomes"]["pending"]
        if not r["drained"]:
            warnings["rounds whose flood calls were still up after the drain"] += 1
    for code in result.get("dialer_exit_codes", []):
        if code != 0:
            errors[f"dialer exit {code}"] += 1
    quiet99, flood99 = median("quiet", "p99"), median("flood", "p99")
    return {
        "quiet_p99_median": quiet99, "flood_p99_median": flood99, "ratio": flood99 / quiet99,
        "quiet_p50_median": median("quiet", "p50"), "flood_p50_median": median("flood", "p50"),
        "originate_rate_median": statistics.median(r["dialer"]["originate_rate"] for r in rounds) if rounds else 0,
        "served_on_outbound": sum(r["nodes"].get("served", 0) for r in rounds),
        "cut_short_on_outbound": sum(r["nodes"].get("cut_short", 0) for r in rounds),
        "refused_by_outbound": {k[8:]: sum(r["nodes"].get(k, 0) for r in rounds)
                                for k in {k for r in rounds for k in r["nodes"] if k.startswith("refused:")}},
        "cpu_medians": {phase: _cpu_medians([r[f"{phase}_cpu"] for r in rounds]) for phase in ("quiet", "flood")},
        "errors": dict(errors), "warnings": dict(warnings),
    }  # fmt: skip


def _cpu_medians(phases: list[dict[str, Any]]) -> dict[str, Any]:
    if not phases:
        return {"core_busy_pct": {}, "cpu_per_s": {}, "inbound_worker_cpu_wait_ms_per_s": math.nan}
    medians: dict[str, Any] = {key: {name: statistics.median(p[key][name] for p in phases) for name in phases[0][key]}
                               for key in ("core_busy_pct", "cpu_per_s")}  # fmt: skip
    medians["inbound_worker_cpu_wait_ms_per_s"] = statistics.median(
        p["inbound_worker_cpu_wait_ms_per_s"] for p in phases
    )
    return medians


def report(result: dict[str, Any], out: Any = print) -> None:
    out("\nresults (medians across rounds)")
    out(f"  inbound setup p50 {result['quiet_p50_median']:.2f} ms quiet, {result['flood_p50_median']:.2f} ms with the "
        f"dialer flooding")  # fmt: skip
    out(f"  inbound setup p99 {result['quiet_p99_median']:.2f} ms quiet, {result['flood_p99_median']:.2f} ms with the "
        f"dialer flooding -> ratio {result['ratio']:.2f} (goal <= 1.2)")  # fmt: skip
    out(f"  dialer: {result['originate_rate_median']:.1f} originates/s achieved (campaign cps "
        f"{result['campaign_cps']:g}, {result['dialers']} process(es)); answered calls that ran the flow on the "
        f"outbound pool: {result['served_on_outbound']} (and {result['cut_short_on_outbound']} whose callee hung up "
        f"before the flow's message); refused by the outbound pool (503, over its capacity): "
        f"{result['refused_by_outbound'] or 0}; their setup at the pool p50 {result['outbound_setup_ms']['p50']:.2f}"
        f" ms p99 {result['outbound_setup_ms']['p99']:.2f} ms")  # fmt: skip
    for phase in ("quiet", "flood"):
        out(f"  CPU while inbound was measured, {phase}: {describe_cpu(result['cpu_medians'][phase])}")
    errors = result["errors"]
    out(f"  errors: {', '.join(f'{k} {v}' for k, v in sorted(errors.items())) if errors else 'none'}")
    if result["warnings"]:
        out(f"  warnings: {', '.join(f'{k} {v}' for k, v in sorted(result['warnings'].items()))}")
