"""The truth: Postgres through asyncpg. asyncio only (it runs on the bridge's loop, see ``bridge.py``).

- ``load(kind, key)``: one object and its revision, one query, from a small pool.
- ``load_all()``: everything, for the start-up bulk load and after the listener reconnects.
- ``listen()``: a dedicated connection LISTENs on ``esl_app_data_<schema>``; each notification
  (``kind:rev:key``, sent by the triggers) reloads that object and hands it to ``on_change``. The
  connection is health-checked and re-established by itself; every (re)connection reloads everything,
  since notifications sent while it was down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import date
from typing import Any

import asyncpg

from .models import BlockList, BusinessHours, Holiday, Limits, Number, Span, Tenant

log = logging.getLogger("esl_app.data.pg")

Item = tuple[str, str, Any, int]  # (kind, key, value or None, revision)

NUMBER_SQL = """
SELECT k.did, n.tenant_id, n.target, n.enabled, n.respect_hours, coalesce(v.rev, 0) AS rev
FROM (SELECT $1::text AS did) k
LEFT JOIN numbers n ON n.did = k.did
LEFT JOIN data_versions v ON v.kind = 'number' AND v.key = k.did
"""
ALL_NUMBERS_SQL = """
SELECT n.did, n.tenant_id, n.target, n.enabled, n.respect_hours, coalesce(v.rev, 0) AS rev
FROM numbers n LEFT JOIN data_versions v ON v.kind = 'number' AND v.key = n.did
"""
_TENANT_COLUMNS = """
    t.id, t.name, t.timezone, t.enabled, l.max_concurrent, l.calls_per_second,
    (SELECT coalesce(json_agg(json_build_array(h.weekday, extract(epoch FROM h.opens)::int,
                                               extract(epoch FROM h.closes)::int)), '[]')
       FROM business_hours h WHERE h.tenant_id = t.id)::text AS hours,
    (SELECT coalesce(json_agg(json_build_array(d.day, d.name, extract(epoch FROM d.opens)::int,
                                               extract(epoch FROM d.closes)::int)), '[]')
       FROM holidays d WHERE d.tenant_id = t.id)::text AS holidays,
    (SELECT coalesce(json_agg(json_build_array(b.kind, b.pattern)), '[]')
       FROM blocklist b WHERE b.tenant_id = t.id)::text AS blocks
"""
TENANT_SQL = f"""
SELECT k.key, coalesce(v.rev, 0) AS rev, {_TENANT_COLUMNS}
FROM (SELECT $1::text AS key) k
LEFT JOIN tenants t ON t.id = k.key
LEFT JOIN tenant_limits l ON l.tenant_id = t.id
LEFT JOIN data_versions v ON v.kind = 'tenant' AND v.key = k.key
"""
ALL_TENANTS_SQL = f"""
SELECT t.id AS key, coalesce(v.rev, 0) AS rev, {_TENANT_COLUMNS}
FROM tenants t
LEFT JOIN tenant_limits l ON l.tenant_id = t.id
LEFT JOIN data_versions v ON v.kind = 'tenant' AND v.key = t.id
"""
# objects that existed once and are gone: their revision says "gone since", which outranks old copies
TOMBSTONES_SQL = """
SELECT v.kind, v.key, v.rev FROM data_versions v
WHERE (v.kind = 'number' AND NOT EXISTS (SELECT 1 FROM numbers n WHERE n.did = v.key))
   OR (v.kind = 'tenant' AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = v.key))
"""
GLOBAL_SQL = """
SELECT coalesce((SELECT rev FROM data_versions WHERE kind = 'global' AND key = '*'), 0) AS rev,
       (SELECT coalesce(json_agg(json_build_array(kind, pattern)), '[]')
          FROM blocklist WHERE tenant_id IS NULL)::text AS blocks
"""


def _blocklist(blocks_json: str) -> BlockList:
    rules = json.loads(blocks_json)
    return BlockList(
        exact=frozenset(pattern for kind, pattern in rules if kind == "exact"),
        prefixes=frozenset(pattern for kind, pattern in rules if kind == "prefix"),
    )


def number_from_row(row: asyncpg.Record) -> Number | None:
    if row["tenant_id"] is None:
        return None
    return Number(
        did=row["did"], tenant_id=row["tenant_id"], target=row["target"],
        enabled=row["enabled"], respect_hours=row["respect_hours"],
    )  # fmt: skip


def tenant_from_row(row: asyncpg.Record) -> Tenant | None:
    if row["id"] is None:
        return None
    spans = json.loads(row["hours"])
    weekly: tuple[tuple[Span, ...], ...] = ()
    if spans:
        days: list[list[Span]] = [[] for _ in range(7)]
        for weekday, opens, closes in spans:
            days[weekday].append(Span(opens=opens, closes=closes))
        weekly = tuple(tuple(sorted(day, key=lambda s: s.opens)) for day in days)
    holidays = tuple(
        Holiday(day=date.fromisoformat(day), name=name,
                span=Span(opens=opens, closes=closes) if opens is not None else None)
        for day, name, opens, closes in json.loads(row["holidays"])
    )  # fmt: skip
    return Tenant(
        id=row["id"],
        name=row["name"],
        enabled=row["enabled"],
        hours=BusinessHours(timezone=row["timezone"], weekly=weekly, holidays=holidays),
        limits=Limits(max_concurrent=row["max_concurrent"], calls_per_second=row["calls_per_second"]),
        blocklist=_blocklist(row["blocks"]),
    )


async def fetch(conn: Any, kind: str, key: str) -> tuple[Any, int]:
    """One object and its revision (None when it doesn't exist) over ``conn``."""
    if kind == "number":
        row = await conn.fetchrow(NUMBER_SQL, key)
        return number_from_row(row), row["rev"]
    if kind == "tenant":
        row = await conn.fetchrow(TENANT_SQL, key)
        return tenant_from_row(row), row["rev"]
    if kind == "global":
        row = await conn.fetchrow(GLOBAL_SQL)
        return _blocklist(row["blocks"]), row["rev"]
    raise ValueError(f"unknown kind {kind!r}")


async def fetch_all(conn: Any) -> list[Item]:
    """Everything, in one transaction (one consistent snapshot)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        numbers = await conn.fetch(ALL_NUMBERS_SQL)
        tenants = await conn.fetch(ALL_TENANTS_SQL)
        global_row = await conn.fetchrow(GLOBAL_SQL)
        tombstones = await conn.fetch(TOMBSTONES_SQL)
    items: list[Item] = [("global", "*", _blocklist(global_row["blocks"]), global_row["rev"])]
    items += [("tenant", row["key"], tenant_from_row(row), row["rev"]) for row in tenants]
    items += [("number", row["did"], number_from_row(row), row["rev"]) for row in numbers]
    items += [(row["kind"], row["key"], None, row["rev"]) for row in tombstones]
    return items


class PostgresStore:
    def __init__(
        self,
        dsn: str,
        schema: str = "public",
        *,
        pool_size: int = 4,
        connect_timeout: float = 2.0,
        health_interval: float = 2.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.channel = f"esl_app_data_{schema}"
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.pool: asyncpg.Pool | None = None
        self.queries = 0  # every query this store ran (hot path, reloads, bulk loads)
        self.notifications = 0
        self.listening = False
        self._closing = False
        self._listen_task: asyncio.Task | None = None
        self._inflight: set[tuple[str, str]] = set()
        self._dirty: set[tuple[str, str]] = set()

    def _server_settings(self) -> dict[str, str]:
        return {"search_path": self.schema, "application_name": f"esl-app {self.schema}"[:63]}

    async def open(self) -> None:
        # min_size=0: creating the pool never fails; connections are made (and remade after the server
        # dropped them) when a query needs one
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=0, max_size=self.pool_size, timeout=self.connect_timeout,
            server_settings=self._server_settings(), max_inactive_connection_lifetime=300,
        )  # fmt: skip
        self._warm_task = asyncio.get_running_loop().create_task(self._warm_pool())

    async def _warm_pool(self) -> None:
        """Connect ahead, so the first miss doesn't pay for a connection inside its budget."""
        assert self.pool is not None

        async def hold() -> None:
            async with self.pool.acquire(timeout=self.connect_timeout) as conn:  # type: ignore[union-attr]
                await conn.fetchval("SELECT 1")

        results = await asyncio.gather(*(hold() for _ in range(min(2, self.pool_size))), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.info("Postgres pool not warmed (%s); connections will be made on demand", failed[0])

    async def close(self) -> None:
        self._closing = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listen_task
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 2)
            except (TimeoutError, Exception):
                self.pool.terminate()

    async def load(self, kind: str, key: str) -> tuple[Any, int]:
        assert self.pool is not None, "open() first"
        async with self.pool.acquire(timeout=self.connect_timeout) as conn:
            self.queries += 1
            return await fetch(conn, kind, key)

    async def load_all(self) -> list[Item]:
        assert self.pool is not None, "open() first"
        async with self.pool.acquire(timeout=self.connect_timeout) as conn:
            self.queries += 4
            return await fetch_all(conn)

    async def execute(self, sql: str, *args: Any) -> str:
        """For tools and tests: run a statement on the pool."""
        assert self.pool is not None, "open() first"
        async with self.pool.acquire(timeout=self.connect_timeout) as conn:
            return await conn.execute(sql, *args)

    # -- invalidation --------------------------------------------------------------------------
    def start_listening(
        self,
        on_change: Callable[[str, str, Any, int], None],
        on_up: Callable[[list[Item]], None],
        on_down: Callable[[], None],
        on_lost: Callable[[str, str], None],
    ) -> None:
        self._listen_task = asyncio.get_running_loop().create_task(self._listen(on_change, on_up, on_down, on_lost))

    async def _listen(
        self,
        on_change: Callable[[str, str, Any, int], None],
        on_up: Callable[[list[Item]], None],
        on_down: Callable[[], None],
        on_lost: Callable[[str, str], None],
    ) -> None:
        backoff = 0.05
        while not self._closing:
            conn = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self.dsn, timeout=self.connect_timeout, server_settings=self._server_settings()
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())

                def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                    self._on_notify(payload, on_change, on_lost)

                await conn.add_listener(self.channel, notified)
                # listening before loading: a change committed meanwhile is both loaded and notified,
                # and revisions make the second copy harmless
                self.queries += 4
                items = await fetch_all(conn)
                self.listening = True
                on_up(items)
                backoff = 0.05
                log.info("listening on %s (%d objects loaded)", self.channel, len(items))
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), self.health_interval)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=self.health_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Postgres listener: %s: %s", type(exc).__name__, exc)
            finally:
                if self.listening:
                    self.listening = False
                    on_down()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _on_notify(
        self, payload: str, on_change: Callable[[str, str, Any, int], None], on_lost: Callable[[str, str], None]
    ) -> None:
        self.notifications += 1
        kind, _, rest = payload.partition(":")
        _, _, key = rest.partition(":")
        target = (kind, key)
        if target in self._inflight:
            self._dirty.add(target)  # reloaded again once the current reload is done
            return
        self._inflight.add(target)
        asyncio.get_running_loop().create_task(self._reload(target, on_change, on_lost))

    async def _reload(
        self,
        target: tuple[str, str],
        on_change: Callable[[str, str, Any, int], None],
        on_lost: Callable[[str, str], None],
    ) -> None:
        kind, key = target
        try:
            while True:
                self._dirty.discard(target)
                if kind == "all":
                    on_change("all", "*", await self.load_all(), 0)
                else:
                    value, rev = await self.load(kind, key)
                    on_change(kind, key, value, rev)
                if target not in self._dirty:
                    break
        except Exception as exc:
            log.warning("reloading %s %s after a change failed: %s", kind, key, exc)
            on_lost(kind, key)
        finally:
            self._inflight.discard(target)

