"""Shared fixtures for the routing-data tests: real Postgres and Redis, isolated per test.

Each test gets its own Postgres schema (migrated and seeded with the shipped ``esl_app/data/demo_data.json``; its own
NOTIFY channel too) and its own Redis key prefix. The servers must be running: when they can't be
reached the tests FAIL, they are never skipped. Point elsewhere with ``ESL_APP_TEST_POSTGRES_DSN`` /
``ESL_APP_TEST_REDIS_URL``.

Import with ``from data_fixtures import *`` in a ``tests/test_data_*.py`` module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import gevent
import pytest
import redis

from esl_app.data import DataSettings, RoutingData, load_snapshot
from esl_app.data.bridge import Bridge
from esl_app.data.migrate import migrate, seed
from esl_app.data.settings import DEFAULT_DATA_FILE

PG_DSN = os.environ.get("ESL_APP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ESL_APP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

__all__ = [
    "PG_DSN",
    "REDIS_URL",
    "Admin",
    "TcpProxy",
    "admin",
    "bridge",
    "busy_cpu",
    "make_data",
    "pg_schema",
    "redis_client",
    "redis_prefix",
    "wait_until",
]


def _require_servers() -> None:
    async def ping() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(ping())
    except Exception as exc:
        pytest.fail(f"Postgres is required for the routing-data tests ({PG_DSN}): {exc}", pytrace=False)
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        pytest.fail(f"Redis is required for the routing-data tests ({REDIS_URL}): {exc}", pytrace=False)


@pytest.fixture(scope="session")
def bridge() -> Iterator[Bridge]:
    """An asyncio thread for the tests' own SQL (the way the app does it)."""
    _require_servers()
    b = Bridge("test-asyncio")
    b.start()
    yield b
    b.stop()


class Admin:
    """Direct SQL on the test's schema from greenlets, through the bridge (as an operator would)."""

    def __init__(self, bridge: Bridge, schema: str) -> None:
        self.bridge = bridge
        self.schema = schema
        self.conn: Any = None

    def open(self) -> None:
        async def connect() -> Any:
            return await asyncpg.connect(PG_DSN, server_settings={"search_path": self.schema})

        self.conn = self.bridge.run(connect(), timeout=10)

    def execute(self, sql: str, *args: Any, timeout: float = 10) -> str:
        return self.bridge.run(self.conn.execute(sql, *args), timeout=timeout)

    def fetchval(self, sql: str, *args: Any, timeout: float = 10) -> Any:
        return self.bridge.run(self.conn.fetchval(sql, *args), timeout=timeout)

    def fetch(self, sql: str, *args: Any, timeout: float = 10) -> list[Any]:
        return self.bridge.run(self.conn.fetch(sql, *args), timeout=timeout)

    def terminate_app_backends(self) -> int:
        """Cut every Postgres connection the app under test holds (pool and listener)."""
        return self.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            f"esl-app {self.schema}"[:63],
        )

    def close(self) -> None:
        if self.conn is not None:
            self.bridge.run(self.conn.close(), timeout=5)


@pytest.fixture
def pg_schema(bridge: Bridge) -> Iterator[str]:
    """A fresh schema, migrated and seeded with the demo data; dropped afterwards."""
    schema = f"esl_t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await migrate(conn)
            await seed(conn, load_snapshot(DEFAULT_DATA_FILE))
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()

    bridge.run(create(), timeout=30)
    yield schema
    bridge.run(drop(), timeout=30)


@pytest.fixture
def admin(bridge: Bridge, pg_schema: str) -> Iterator[Admin]:
    a = Admin(bridge, pg_schema)
    a.open()
    yield a
    a.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    _require_servers()
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"esl-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    for key in redis_client.scan_iter(match=prefix + "*", count=1000):
        redis_client.delete(key)


@pytest.fixture
def make_data(pg_schema: str, redis_prefix: str) -> Iterator[Callable[..., RoutingData]]:
    """``make_data(**settings)``: a started RoutingData on the test's schema and Redis prefix."""
    made: list[RoutingData] = []

    def make(start: bool = True, **overrides: Any) -> RoutingData:
        values: dict[str, Any] = {
            "postgres_dsn": PG_DSN, "postgres_schema": pg_schema, "redis_url": REDIS_URL,
            "redis_prefix": redis_prefix, "listen_health_interval": 0.5, "retry_interval": 0.3,
        }  # fmt: skip
        values.update(overrides)
        data = RoutingData(DataSettings(_env_file=None, **values))  # type: ignore[call-arg]
        made.append(data)
        if start:
            data.start()
        return data

    yield make
    for data in made:
        data.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.001) -> Any:
    """Poll ``predicate`` cooperatively (the hub keeps running) until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        gevent.sleep(step)


@pytest.fixture
def busy_cpu() -> Iterator[list[int]]:
    """One busy-looping process per core for the test's duration: the machine is loaded, whatever else
    runs. Yields their pids; each is killed (by its pid) at teardown."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


class TcpProxy:
    """A TCP proxy in its own OS threads (independent of the gevent hub) that a test can cut or slow.

    ``cut()`` drops every connection and refuses new ones (the server looks down); ``blackhole()``
    keeps connections open and accepts new ones but forwards nothing (the server looks hung);
    ``restore()`` forwards again. ``delay`` (seconds, settable at any time) holds every chunk that
    long in each direction before forwarding it, in order: a slow network or a slow server.
    """

    def __init__(self, target_host: str, target_port: int, delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "up"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "cut":
                client.close()
                continue
            with self._lock:
                self._conns.append(client)
            if self.mode == "blackhole":
                continue  # never forwarded: reads on it hang
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        # reading never waits for the delay: chunks are stamped on arrival and a sender thread forwards
        # each one when its time comes (in order), so a delay adds latency without limiting throughput
        due: collections.deque[tuple[float, bytes | None]] = collections.deque()  # (forward at, chunk; None = EOF)
        ready = threading.Condition()
        sender = threading.Thread(target=self._send_due, args=(dst, due, ready), daemon=True)
        sender.start()

        def queue(data: bytes | None) -> None:
            with ready:
                at = time.monotonic() + self.delay
                due.append((max(at, due[-1][0]) if due else at, data))  # never overtakes an earlier chunk
                ready.notify()

        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.mode == "blackhole":
                    continue  # swallowed: the peer waits forever
                queue(data)
        except OSError:
            pass
        finally:
            queue(None)
            sender.join(10)
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    @staticmethod
    def _send_due(
        dst: socket.socket, due: collections.deque[tuple[float, bytes | None]], ready: threading.Condition
    ) -> None:
        while True:
            with ready:
                while not due or due[0][0] > time.monotonic():
                    ready.wait(max(0.0, due[0][0] - time.monotonic()) if due else None)
                _, data = due.popleft()
            if data is None:
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        self.mode = "cut"
        self._drop_all()

    def blackhole(self) -> None:
        self.mode = "blackhole"  # open connections stay open but go silent

    def restore(self) -> None:
        self.mode = "up"

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self._drop_all()
