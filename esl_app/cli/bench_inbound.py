"""``esl-app bench-inbound``: the inbound Event Socket client beside greenswitch's ``InboundESL``."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 61


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench-inbound",
        help="inbound client vs greenswitch InboundESL: CHANNEL_* events parsed per second, api round trips",
    )
    parser.add_argument("--events", type=int, default=10_000, help="events streamed per round (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per client; medians are reported")
    parser.add_argument("--api-calls", type=int, default=4_000, help="api round trips per round")
    parser.add_argument("--concurrency", type=int, default=16, help="greenlets for the concurrent api test")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=cmd_bench_inbound)


def cmd_bench_inbound(args: argparse.Namespace) -> int:
    from ..bench.inbound import run

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run(args.events, args.rounds, args.api_calls, args.concurrency, progress=progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
    return 0
