"""``esl-app bench-edge``: SIPp's INVITE rate through Kamailio with and without the CPS limit."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 62


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench-edge",
        help="calls per second through Kamailio (docker/kamailio/kamailio.cfg) to SIPp nodes, "
        "with and without the CPS limit, and the rate of 503s (needs kamailio and sipp; run from a checkout)",
    )
    parser.add_argument("--calls", type=int, default=500, help="calls per round (default 500)")
    parser.add_argument("--rate", type=int, default=100, help="calls per second offered (default 100)")
    parser.add_argument("--limit", type=int, default=30, help="CPS_GLOBAL for the limited rounds (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode; medians are reported")
    parser.add_argument("--json", action="store_true", help="print every round as JSON")
    parser.set_defaults(func=cmd_bench_edge)


def cmd_bench_edge(args: argparse.Namespace) -> int:
    from ..bench.edge import run

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run(args.calls, args.rate, args.limit, args.rounds, progress=progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0
