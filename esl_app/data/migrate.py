"""``esl-app db migrate``: apply the migrations in order, once each; optionally seed a data file.

The migrations are package data (``esl_app/data/migrations/*.sql``), read with importlib.resources.

asyncio only (the CLI runs it with ``asyncio.run``; tests through the bridge). Migrations run in one
transaction each, under an advisory lock so two processes migrating at once don't collide, and are
recorded in ``schema_migrations``.
"""

from __future__ import annotations

import logging
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import asyncpg

from .models import Snapshot, format_clock
from .settings import MIGRATIONS_DIR

log = logging.getLogger("esl_app.data.migrate")

_LOCK = 0x65736C61  # "esla"


def migration_files(directory: Path | Traversable = MIGRATIONS_DIR) -> list[Traversable]:
    """The ``*.sql`` files of ``directory``, in name order (``iterdir``: works on package data in a zip too)."""
    return sorted((f for f in directory.iterdir() if f.name.endswith(".sql") and f.is_file()), key=lambda f: f.name)


async def connect(dsn: str, schema: str, timeout: float = 5.0) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, timeout=timeout)
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    return conn


async def migrate(conn: asyncpg.Connection, directory: Path | Traversable = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not applied yet (to the connection's search_path); returns their names."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(directory):
            if path.name in done:
                continue
            log.info("applying %s", path.name)
            await conn.execute(path.read_text(encoding="utf-8"))
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied_now.append(path.name)
    return applied_now


async def seed(conn: asyncpg.Connection, snapshot: Snapshot) -> dict[str, int]:
    """Write a snapshot into the tables (upsert; a seeded tenant's hours, holidays, limits and blocklist
    are replaced). One transaction: running processes see it as one set of notifications."""
    counts = {"tenants": 0, "numbers": 0, "blocklist": 0}
    async with conn.transaction():
        for tenant in snapshot.tenants:
            await conn.execute(
                """INSERT INTO tenants (id, name, timezone, enabled) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (id) DO UPDATE SET name = excluded.name, timezone = excluded.timezone,
                                                  enabled = excluded.enabled""",
                tenant.id, tenant.name, tenant.hours.timezone, tenant.enabled,
            )  # fmt: skip
            for table in ("business_hours", "holidays", "blocklist"):
                await conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant.id)
            hours: list[tuple[Any, ...]] = [
                (tenant.id, weekday, _time(span.opens), _time(span.closes))
                for weekday, spans in enumerate(tenant.hours.weekly)
                for span in spans
            ]
            await conn.executemany(
                "INSERT INTO business_hours (tenant_id, weekday, opens, closes)"
                " VALUES ($1, $2, $3::text::time, $4::text::time)",
                hours,
            )
            await conn.executemany(
                "INSERT INTO holidays (tenant_id, day, name, opens, closes)"
                " VALUES ($1, $2, $3, $4::text::time, $5::text::time)",
                [(tenant.id, h.day, h.name, _time(h.span.opens) if h.span else None,
                  _time(h.span.closes) if h.span else None) for h in tenant.hours.holidays],
            )  # fmt: skip
            await conn.execute(
                """INSERT INTO tenant_limits (tenant_id, max_concurrent, calls_per_second) VALUES ($1, $2, $3)
                   ON CONFLICT (tenant_id) DO UPDATE SET max_concurrent = excluded.max_concurrent,
                                                         calls_per_second = excluded.calls_per_second""",
                tenant.id, tenant.limits.max_concurrent, tenant.limits.calls_per_second,
            )  # fmt: skip
            counts["blocklist"] += await _blocks(conn, tenant.id, tenant.blocklist.exact, tenant.blocklist.prefixes)
            counts["tenants"] += 1
        await conn.execute("DELETE FROM blocklist WHERE tenant_id IS NULL")
        counts["blocklist"] += await _blocks(
            conn, None, snapshot.global_blocklist.exact, snapshot.global_blocklist.prefixes
        )
        await conn.executemany(
            """INSERT INTO numbers (did, tenant_id, target, enabled, respect_hours) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (did) DO UPDATE SET tenant_id = excluded.tenant_id, target = excluded.target,
                   enabled = excluded.enabled, respect_hours = excluded.respect_hours""",
            [(n.did, n.tenant_id, n.target, n.enabled, n.respect_hours) for n in snapshot.numbers],
        )
        counts["numbers"] = len(snapshot.numbers)
    return counts


async def _blocks(conn: asyncpg.Connection, tenant_id: str | None, exact: Any, prefixes: Any) -> int:
    rows = [(tenant_id, "exact", p) for p in sorted(exact)] + [(tenant_id, "prefix", p) for p in sorted(prefixes)]
    await conn.executemany("INSERT INTO blocklist (tenant_id, kind, pattern) VALUES ($1, $2, $3)", rows)
    return len(rows)


def _time(seconds: int) -> str:
    return "24:00" if seconds >= 86400 else format_clock(seconds)
