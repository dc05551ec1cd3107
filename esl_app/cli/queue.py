"""``esl-app queue status``, ``esl-app agent login|logout|break|status``, ``esl-app bench-queue``.

The queue and agent commands act on the live state in Redis (``ESL_APP_REDIS_URL``/``--redis``,
``--prefix``); the configuration is copied there from Postgres by ``esl-app queue load``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os

ORDER = 45
DEFAULT_REDIS = os.environ.get("ESL_APP_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_PREFIX = os.environ.get("ESL_APP_REDIS_PREFIX", "esl-app:")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL of the live queue state")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix (default esl-app:)")


def register(sub: argparse._SubParsersAction) -> None:
    queue = sub.add_parser("queue", help="inbound queues (ACD): load the config from Postgres, show status")
    actions = queue.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="waiting callers, longest wait, counters, agent states")
    status.add_argument("name")
    _common(status)
    load = actions.add_parser("load", help="copy queues, agents and tiers from Postgres into Redis")
    load.add_argument("--dsn", default=os.environ.get("ESL_APP_POSTGRES_DSN", "postgresql://postgres@127.0.0.1/esl"))
    load.add_argument("--schema", default=os.environ.get("ESL_APP_POSTGRES_SCHEMA", "public"))
    _common(load)
    queue.set_defaults(func=cmd_queue)

    agent = sub.add_parser("agent", help="an agent's status: login, logout, break; or show it")
    agent.add_argument("action", choices=["login", "logout", "break", "status"])
    agent.add_argument("agent")
    _common(agent)
    agent.set_defaults(func=cmd_agent)

    bench = sub.add_parser("bench-queue", help="ACD offer latency across worker processes, beside mod_callcenter")
    bench.add_argument("--redis", default=DEFAULT_REDIS)
    bench.add_argument("--workers", type=int, default=2)
    bench.add_argument("--calls", type=int, default=2000, help="calls per scenario (default 2000: 20 s at 100/s)")
    bench.add_argument("--rate", type=float, default=100.0, help="new callers per second (default 100)")
    bench.add_argument("--drivers", type=int, default=2, help="processes playing FreeSWITCH's side")
    bench.add_argument("--idle-agents", type=int, default=100, help="agents in the 'idle agents' scenario")
    bench.add_argument("--busy-agents", type=int, default=4, help="agents in the 'callers waiting' scenario")
    bench.add_argument("--talk", type=float, default=0.05, help="seconds each agent call lasts there")
    bench.set_defaults(func=cmd_bench)


def _service(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..queue import QueueService

    return QueueService(args.redis, args.prefix, sweep_interval=0).start(install=False)


def cmd_queue(args: argparse.Namespace) -> int:
    from ..queue import QueueError, load_config

    service = _service(args)
    try:
        if args.action == "load":
            from ..data.migrate import connect

            async def read():  # type: ignore[no-untyped-def]
                conn = await connect(args.dsn, args.schema)
                try:
                    return await load_config(conn)
                finally:
                    await conn.close()

            config = asyncio.run(read())
            service.publish_config(config)
            print(f"loaded {len(config.queues)} queues, {len(config.agents)} agents, {len(config.tiers)} tiers")
            return 0
        print(json.dumps(service.queue_status(args.name), indent=2))
        return 0
    except QueueError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        service.stop()


def cmd_agent(args: argparse.Namespace) -> int:
    from ..queue import QueueError

    service = _service(args)
    try:
        action = {"login": service.login, "logout": service.logout, "break": service.take_break}.get(args.action)
        if action is not None:
            action(args.agent)
        print(json.dumps(service.agent(args.agent), indent=2))
        return 0
    except QueueError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        service.stop()


def cmd_bench(args: argparse.Namespace) -> int:
    from ..queue.bench import main

    return main(args)
