"""``esl-app db migrate [--seed [FILE]]`` and ``esl-app bench-data``: the routing-data commands.

Both read ``ESL_APP_DATA_POSTGRES_DSN`` / ``ESL_APP_DATA_POSTGRES_SCHEMA`` / ``ESL_APP_DATA_REDIS_URL``
(or ``--dsn`` / ``--schema`` / ``--redis``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

ORDER = 70


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="routing data in Postgres: apply migrations, seed the demo data")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply the migrations shipped with esl-app not applied yet")
    migrate.add_argument("--dsn", help="Postgres DSN (default: ESL_APP_DATA_POSTGRES_DSN)")
    migrate.add_argument("--schema", help="schema (default: ESL_APP_DATA_POSTGRES_SCHEMA or public)")
    migrate.add_argument(
        "--seed", nargs="?", const="", default=None, metavar="FILE",
        help="then load a data file (default: the demo data shipped with esl-app) into the tables",
    )  # fmt: skip
    migrate.set_defaults(func=cmd_migrate)

    bench = sub.add_parser("bench-data", help="routing-data latency per tier and invalidation propagation")
    bench.add_argument("--dsn", help="Postgres DSN (default: ESL_APP_DATA_POSTGRES_DSN)")
    bench.add_argument("--redis", help="Redis URL (default: ESL_APP_DATA_REDIS_URL)")
    bench.add_argument("--iterations", type=int, default=5000)
    bench.add_argument("--changes", type=int, default=30, help="rows changed to time propagation")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench_data)


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..data.migrate import connect, migrate, seed
    from ..data.settings import DataSettings
    from ..data.snapshot import load_snapshot

    settings = DataSettings()
    dsn = args.dsn or settings.postgres_dsn
    if not dsn:
        print("error: no Postgres DSN (--dsn or ESL_APP_DATA_POSTGRES_DSN)", file=sys.stderr)
        return 2
    schema = args.schema or settings.postgres_schema

    async def run() -> int:
        conn = await connect(dsn, schema)
        try:
            applied = await migrate(conn)
            print(f"esl-app db: schema {schema}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
            if args.seed is not None:
                path = args.seed or settings.data_source
                counts = await seed(conn, load_snapshot(path))
                print(f"esl-app db: seeded from {path}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        finally:
            await conn.close()
        return 0

    try:
        return asyncio.run(run())
    except (TimeoutError, OSError) as exc:
        print(f"error: cannot reach Postgres: {exc}", file=sys.stderr)
        return 1


def cmd_bench_data(args: argparse.Namespace) -> int:
    from ..data import bench
    from ..data.settings import DataSettings

    settings = DataSettings()
    dsn = args.dsn or settings.postgres_dsn
    redis_url = args.redis or settings.redis_url
    if not dsn or not redis_url:
        print("error: bench-data needs Postgres and Redis (--dsn/--redis or ESL_APP_DATA_*)", file=sys.stderr)
        return 2
    return bench.main(dsn, redis_url, args.iterations, args.changes, args.json)
