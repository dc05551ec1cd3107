"""``esl-app dialer-bench``: pacing error per 10 s window, and the highest originate rate of one
dialer process, against fake outbound nodes (real Postgres, Redis and TCP; the dialer is a real
``esl-app dialer`` subprocess; the nodes run in this process).

Figures printed: per window, attempts and the error against cps x 10; the median and worst absolute
error; then attempts per second sustained by one process and its CPU per attempt (user + system
time of the child process over the attempts it placed).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
import gevent
import gevent.subprocess

from ..data.migrate import migrate, seed
from ..data.settings import DEFAULT_DATA_FILE
from ..data.snapshot import load_snapshot
from ..testing.fake_node import FakeNode
from . import store
from .numbers import ContactRow


def _sql(dsn: str, schema: str, fn: Any, *args: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            return await fn(conn, *args)
        finally:
            await conn.close()

    # a short-lived loop in a real thread: the gevent hub (the fake nodes) must keep running meanwhile
    pool = gevent.get_hub().threadpool
    return pool.apply(asyncio.run, (go(),))


async def _prepare(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    await migrate(conn)
    await seed(conn, load_snapshot(DEFAULT_DATA_FILE))


async def _campaign(conn: asyncpg.Connection, name: str, cps: float, concurrent: int, count: int, base: int) -> int:
    spec = store.CampaignSpec(name=name, tenant_id="demo", caller_id_number="442071234567",
                              gateway="sofia/gateway/carrier", flow="bench", cps=cps, max_concurrent=concurrent,
                              max_attempts=1, ring_timeout=10)  # fmt: skip
    campaign_id = await store.create_campaign(conn, spec)
    rows = [ContactRow(line=i + 2, number=f"+1{base + i:010d}") for i in range(count)]
    await store.load_contacts(conn, campaign_id, rows)
    return campaign_id


async def _times(conn: asyncpg.Connection, campaign_id: int) -> list[float]:
    rows = await conn.fetch(
        "SELECT extract(epoch FROM created_at) AS t FROM attempts WHERE campaign_id = $1"
        " AND outcome IS DISTINCT FROM 'not_originated' ORDER BY created_at",
        campaign_id,
    )
    return [float(r["t"]) for r in rows]


def _count(dsn: str, schema: str, campaign_id: int) -> int:
    async def count(conn: asyncpg.Connection) -> int:
        return await conn.fetchval("SELECT count(*) FROM attempts WHERE campaign_id = $1 AND outcome IS NOT NULL"
                                   " AND outcome <> 'not_originated'", campaign_id)  # fmt: skip

    return int(_sql(dsn, schema, count))


def main(dsn: str, redis_url: str, cps: float, duration: float, max_contacts: int, as_json: bool) -> int:
    schema = f"esl_dialer_bench_{uuid.uuid4().hex[:8]}"
    nodes = [FakeNode(f"fs{i + 1}", sessions_per_second=100_000, max_sessions=100_000).start() for i in range(3)]
    holder = _Holder()
    for node in nodes:
        node.default_outcome = node.default_outcome.model_copy(update={"hangup_after": 0.2})
    env = dict(os.environ)
    env.update({
        "ESL_APP_CLUSTER_NODES": json.dumps([{"name": n.name, "host": n.host, "port": n.port, "roles": ["outbound"]}
                                             for n in nodes]),
        "ESL_APP_CLUSTER_PROBE_INTERVAL": "0.25", "ESL_APP_CLUSTER_HEARTBEAT_INTERVAL": "1",
        "ESL_APP_DATA_POSTGRES_DSN": dsn, "ESL_APP_DATA_POSTGRES_SCHEMA": schema, "ESL_APP_DATA_REDIS_URL": redis_url,
        "ESL_APP_DIALER_SOCKET_PORT": str(holder.port), "ESL_APP_DIALER_BATCH": "200",
    })  # fmt: skip
    result: dict[str, Any] = {"cps": cps, "duration": duration}
    _sql(dsn, "public", _prepare, schema)
    try:
        # 1. pacing: cps for duration seconds
        contacts = int(cps * duration * 1.2) + 50
        paced = _sql(dsn, schema, _campaign, "paced", cps, 10_000, contacts, 2_000_000_000)
        child = _spawn(env, "bench-paced")
        gevent.sleep(2.0)  # the dialer connects to the nodes
        _sql(dsn, schema, store.set_status, "paced", "running")
        deadline = time.monotonic() + duration + 12
        while time.monotonic() < deadline:
            gevent.sleep(0.5)
        _stop(child)
        times = _sql(dsn, schema, _times, paced)
        windows = []
        if times:
            start = times[0]
            for w in range(int(duration // 10)):
                n = sum(1 for t in times if start + 10 * w <= t < start + 10 * (w + 1))
                windows.append({"window": w + 1, "attempts": n, "error_pct": 100.0 * (n - cps * 10) / (cps * 10)})
        errors = [abs(w["error_pct"]) for w in windows]
        result["windows"] = windows
        result["median_abs_error_pct"] = statistics.median(errors) if errors else None
        result["worst_abs_error_pct"] = max(errors) if errors else None

        # 2. the highest originate rate of one process
        if max_contacts:
            fast = _sql(dsn, schema, _campaign, "flood", 10_000, 5_000, max_contacts, 3_000_000_000)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            child = _spawn(env, "bench-flood")
            gevent.sleep(2.0)
            _sql(dsn, schema, store.set_status, "flood", "running")
            limit = time.monotonic() + 120
            while _count(dsn, schema, fast) < max_contacts and time.monotonic() < limit:
                gevent.sleep(0.5)
            _stop(child)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times = _sql(dsn, schema, _times, fast)
            span = (times[-1] - times[0]) if len(times) > 1 else 0.0
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            result["flood"] = {
                "attempts": len(times), "seconds": round(span, 2),
                "attempts_per_second": round(len(times) / span, 1) if span else None,
                "cpu_ms_per_attempt": round(1000 * cpu / len(times), 3) if times else None,
            }  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
        holder.close()

        async def drop(conn: asyncpg.Connection) -> None:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

        _sql(dsn, "public", drop)
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"pacing at {cps:g} calls/s for {duration:g} s (one dialer process, 3 fake nodes), goal within ±3 %")
    for w in result["windows"]:
        print(f"  window {w['window']:2d}: {w['attempts']:5d} attempts  error {w['error_pct']:+6.2f} %")
    print(f"  median |error| {result['median_abs_error_pct']:.2f} %, worst {result['worst_abs_error_pct']:.2f} %")
    if "flood" in result:
        f = result["flood"]
        print(f"flood: {f['attempts']} attempts in {f['seconds']} s = {f['attempts_per_second']} attempts/s,"
              f" dialer CPU {f['cpu_ms_per_attempt']} ms per attempt")  # fmt: skip
    return 0


class _Holder:
    """Accepts the answered calls' sockets and holds them until the far end hangs up."""

    def __init__(self) -> None:
        import socket

        import gevent.socket

        self.listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[Any] = []
        self.greenlet = gevent.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(sock)
            if len(self.sockets) > 2000:
                self.sockets.pop(0).close()

    def close(self) -> None:
        self.greenlet.kill(block=True, timeout=1)
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def _spawn(env: dict[str, str], name: str) -> Any:
    return gevent.subprocess.Popen([sys.executable, "-m", "esl_app.cli", "--log-level", "WARNING", "dialer",
                                    "--name", name], env=env, stdout=gevent.subprocess.DEVNULL)  # fmt: skip


def _stop(child: Any) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=15)
    except gevent.subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


