"""``esl-app dialer`` (one dialer instance) and ``esl-app campaign create|load|start|pause|resume|stop|status|dnc``.

Postgres and Redis come from ``ESL_APP_DATA_POSTGRES_DSN`` / ``_SCHEMA`` / ``ESL_APP_DATA_REDIS_URL``
(or ``--dsn`` / ``--schema`` / ``--redis``); the nodes from the cluster settings (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ORDER = 75


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="Postgres DSN (default: ESL_APP_DATA_POSTGRES_DSN)")
    parser.add_argument("--schema", help="schema (default: ESL_APP_DATA_POSTGRES_SCHEMA or public)")


def register(sub: argparse._SubParsersAction) -> None:
    dialer = sub.add_parser("dialer", help="run one outbound dialer instance (any number, on any host)")
    _common(dialer)
    dialer.add_argument("--redis", help="Redis URL (default: ESL_APP_DATA_REDIS_URL)")
    dialer.add_argument("--name", help="this instance's name (default: ESL_APP_DIALER_NAME or host-pid)")
    dialer.add_argument("--redis-prefix", default="esl:dialer:", help="key prefix of the pacing buckets")
    dialer.set_defaults(func=cmd_dialer)
    register_bench(sub)

    campaign = sub.add_parser("campaign", help="outbound campaigns: create, load contacts, start, watch")
    csub = campaign.add_subparsers(dest="campaign_command", required=True)
    create = csub.add_parser("create", help="a new campaign (draft)")
    _common(create)
    create.add_argument("name")
    create.add_argument("--tenant", required=True)
    create.add_argument("--caller-id", required=True, help="caller ID number")
    create.add_argument("--caller-name", default="")
    create.add_argument("--gateway", required=True, help="dial string prefix, e.g. sofia/gateway/carrier")
    create.add_argument("--flow", required=True, help="esl_app_flow: the outbound-pool route answered calls run")
    create.add_argument("--cps", type=float, default=1.0, help="calls per second (all dialers together)")
    create.add_argument("--max-concurrent", type=int, default=10)
    create.add_argument("--max-attempts", type=int, default=3)
    create.add_argument("--retry-busy", type=float, default=300, help="s before a busy number is tried again")
    create.add_argument("--retry-no-answer", type=float, default=1800)
    create.add_argument("--retry-failed", type=float, default=600)
    create.add_argument("--ring-timeout", type=int, default=30)
    create.add_argument("--schedule", default="", help="'mon-fri 09:00-17:00; sat 10:00-12:00' (tenant time zone)")
    create.add_argument("--queue", help="dial into this ACD queue, paced by its idle agents (docs/dialer.md)")
    create.add_argument("--dial-ratio", type=float, default=1.0, help="calls per idle agent: 1.0 progressive .. 3")
    create.add_argument("--abandon-message", help="played to a call no agent took in time: who called, a number")
    create.add_argument("--abandon-after", type=float, default=2.0, help="s from answer to an agent, at most 2")
    create.add_argument("--retry-abandoned", type=float, default=72 * 3600, help="s before an abandoned contact")
    create.set_defaults(func=cmd_create)

    load = csub.add_parser("load", help="add contacts from a CSV file (header line; a 'number' column)")
    _common(load)
    load.add_argument("name")
    load.add_argument("csv", type=Path)
    load.add_argument("--number-column", default="number")
    load.set_defaults(func=cmd_load)

    for verb, status in (("start", "running"), ("pause", "paused"), ("resume", "running"), ("stop", "done")):
        p = csub.add_parser(verb, help=f"set the campaign {status} (every dialer follows within 1 s)")
        _common(p)
        p.add_argument("name")
        p.set_defaults(func=cmd_set_status, status=status)

    status = csub.add_parser("status", help="dialled, answered, failed, remaining, calls per second")
    _common(status)
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    status.add_argument("--follow", action="store_true", help="a progress bar until the campaign is done")
    status.add_argument("--interval", type=float, default=1.0)
    status.set_defaults(func=cmd_status)

    dnc = csub.add_parser("dnc", help="add numbers to the do-not-call list (global, or --tenant)")
    _common(dnc)
    dnc.add_argument("numbers", nargs="+")
    dnc.add_argument("--tenant", help="only this tenant's campaigns (default: every tenant)")
    dnc.add_argument("--reason", default="")
    dnc.set_defaults(func=cmd_dnc)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    from ..data.settings import DataSettings

    settings = DataSettings()
    dsn = args.dsn or settings.postgres_dsn
    if not dsn:
        raise SystemExit("error: no Postgres DSN (--dsn or ESL_APP_DATA_POSTGRES_DSN)")
    return dsn, args.schema or settings.postgres_schema


def _run(args: argparse.Namespace, fn: Callable[..., Coroutine[Any, Any, Any]], *extra: Any) -> Any:
    from ..data.migrate import connect

    dsn, schema = _target(args)

    async def go() -> Any:
        conn = await connect(dsn, schema)
        try:
            return await fn(conn, *extra)
        finally:
            await conn.close()

    return asyncio.run(go())


def cmd_create(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..dialer.policy import parse_schedule
    from ..dialer.store import CampaignSpec, create_campaign

    try:
        spec = CampaignSpec(
            name=args.name, tenant_id=args.tenant, caller_id_number=args.caller_id, caller_id_name=args.caller_name,
            gateway=args.gateway, flow=args.flow, cps=args.cps, max_concurrent=args.max_concurrent,
            max_attempts=args.max_attempts, retry_busy=dt.timedelta(seconds=args.retry_busy),
            retry_no_answer=dt.timedelta(seconds=args.retry_no_answer),
            retry_failed=dt.timedelta(seconds=args.retry_failed), ring_timeout=args.ring_timeout,
            schedule=parse_schedule(args.schedule), queue=args.queue, dial_ratio=args.dial_ratio,
            abandon_message=args.abandon_message, abandon_after=args.abandon_after,
            retry_abandoned=dt.timedelta(seconds=args.retry_abandoned),
        )  # fmt: skip
    except (ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import asyncpg

    try:
        campaign_id = _run(args, create_campaign, spec)
    except asyncpg.ForeignKeyViolationError as exc:
        what = f"no queue named {spec.queue!r}" if "queue" in str(exc) else f"no tenant named {spec.tenant_id!r}"
        print(f"error: {what}", file=sys.stderr)
        return 2
    print(f"campaign {args.name} created (id {campaign_id}, draft)")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from ..dialer.numbers import parse_contacts_csv
    from ..dialer.store import get_campaign, load_contacts

    try:
        text = args.csv.read_text(encoding="utf-8-sig")
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parsed = parse_contacts_csv(text, args.number_column)
    for error in parsed.errors:
        print(f"{args.csv}:{error.line}: skipped: {error.error}", file=sys.stderr)

    async def load(conn: Any) -> int:
        campaign = await get_campaign(conn, args.name)
        return await load_contacts(conn, campaign.id, parsed.rows)

    added = _run(args, load)
    print(f"campaign {args.name}: {added} contact(s) added, {len(parsed.rows) - added} already there, "
          f"{len(parsed.errors)} row(s) skipped")  # fmt: skip
    return 0 if parsed.rows or not parsed.errors else 1


def cmd_set_status(args: argparse.Namespace) -> int:
    from ..dialer.store import UnknownCampaign, set_status

    try:
        _run(args, set_status, args.name, args.status)
    except UnknownCampaign as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"campaign {args.name}: {args.status}")
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def cmd_status(args: argparse.Namespace) -> int:
    from ..dialer.store import UnknownCampaign, report

    while True:
        try:
            r = _run(args, report, args.name)
        except UnknownCampaign as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(r.model_dump_json())
        elif args.follow:
            finished = r.contacts - r.remaining
            line = (f"\r{r.name} {r.status:8} {_bar(finished, r.contacts)} dialled {r.attempts} answered {r.answered}"
                    f" failed {r.failed} in flight {r.in_flight} {r.last_minute / 60:.1f}/s  ")  # fmt: skip
            if r.queue:
                line += f"abandoned {r.abandoned} ({100 * r.abandon_rate:.2f}%)  "
            print(line, end="", flush=True)
        else:
            print(f"campaign {r.name}: {r.status}")
            print(f"  contacts   {r.contacts}  ({', '.join(f'{k} {v}' for k, v in sorted(r.states.items()))})")
            print(f"  dialled    {r.attempts}")
            print(f"  answered   {r.answered}  ({100 * r.answered / r.attempts if r.attempts else 0:.1f}%)")
            print(f"  failed     {r.failed}")
            print(f"  in flight  {r.in_flight}")
            print(f"  remaining  {r.remaining}")
            print(f"  calls/s    {r.last_minute / 60:.2f} (last minute)")
            if r.queue:
                print(f"  abandoned  {r.abandoned}  ({100 * r.abandon_rate:.2f}% of answered, last 24 h; cap 3%)")
        if not args.follow or (r.status == "done" and r.in_flight == 0):
            if args.follow and not args.json:
                print()
            return 0
        time.sleep(args.interval)


def cmd_dnc(args: argparse.Namespace) -> int:
    from ..dialer.numbers import InvalidNumber, normalize_number
    from ..dialer.store import add_dnc

    try:
        numbers = [normalize_number(n) for n in args.numbers]
    except InvalidNumber as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _run(args, add_dnc, numbers, args.tenant, args.reason)
    print(f"do-not-call ({args.tenant or 'global'}): {len(numbers)} number(s)")
    return 0


def cmd_dialer(args: argparse.Namespace) -> int:
    import gevent

    from ..cluster import ClusterSettings
    from ..data.settings import DataSettings
    from ..dialer import Dialer, DialerSettings

    dsn, schema = _target(args)
    redis_url = args.redis or DataSettings().redis_url
    if not redis_url:
        print("error: the dialer paces through Redis (--redis or ESL_APP_DATA_REDIS_URL)", file=sys.stderr)
        return 2
    settings = DialerSettings(**({"name": args.name} if args.name else {}))
    cluster = ClusterSettings()
    if not any("outbound" in {str(r) for r in node.roles} for node in cluster.nodes):
        print("error: no cluster node with the outbound role (ESL_APP_CLUSTER_NODES, docs/cluster.md)",
              file=sys.stderr)  # fmt: skip
        return 2
    dialer = Dialer(settings, cluster, dsn, schema, redis_url, redis_prefix=args.redis_prefix)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1")
    dialer.start()
    print(json.dumps({"dialer": settings.name, "ready": True}), flush=True)
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(dialer.stop))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(dialer.stop))
    dialer.stopped.wait()
    return 0


def register_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("dialer-bench", help="dialer pacing error per 10 s window, and its highest originate rate")
    bench.add_argument("--dsn", help="Postgres DSN (default: ESL_APP_DATA_POSTGRES_DSN)")
    bench.add_argument("--redis", help="Redis URL (default: ESL_APP_DATA_REDIS_URL)")
    bench.add_argument("--cps", type=float, default=50.0)
    bench.add_argument("--duration", type=float, default=60.0, help="s of paced dialling (10 s windows)")
    bench.add_argument("--flood", type=int, default=3000, help="contacts for the highest-rate run (0: skip it)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..data.settings import DataSettings
    from ..dialer import bench

    settings = DataSettings()
    dsn, redis_url = args.dsn or settings.postgres_dsn, args.redis or settings.redis_url
    if not dsn or not redis_url:
        print("error: dialer-bench needs Postgres and Redis (--dsn/--redis or ESL_APP_DATA_*)", file=sys.stderr)
        return 2
    return bench.main(dsn, redis_url, args.cps, args.duration, args.flood, args.json)
