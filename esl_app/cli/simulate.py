"""``esl-app simulate``: drive a call through a running server as FreeSWITCH would."""

from __future__ import annotations

import argparse

from ..settings import Settings
from .common import script_fields

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    simulate = sub.add_parser("simulate", help="drive a call through a running server as FreeSWITCH would")
    simulate.add_argument("--host")
    simulate.add_argument("--port", type=int)
    simulate.add_argument("--destination", default="1000")
    simulate.add_argument("--caller", default="1001")
    simulate.add_argument("--context", default="default")
    simulate.add_argument("--mode", choices=["async", "static"], default="async")
    simulate.add_argument("--dtmf", help="digits the caller types; commas separate attempts (e.g. ',1')")
    simulate.add_argument("--hangup-at", type=int, help="the caller hangs up when the Nth application starts")
    simulate.add_argument("--bridge", help="bridge outcome: answer, busy, no_answer, fail:CAUSE")
    simulate.add_argument("--var", action="append", help="channel variable NAME=VALUE (repeatable)")
    simulate.add_argument("--repeat", type=int, default=1, help="place N calls and report calls/s and latency")
    simulate.add_argument("--concurrency", type=int, default=10)
    simulate.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..testing.simulate import measure_tcp_calls, simulate_tcp_call

    settings = Settings()
    address = (args.host or settings.host, settings.port if args.port is None else args.port)
    fields = script_fields(args)
    if args.repeat > 1:
        report = measure_tcp_calls(address, args.repeat, concurrency=args.concurrency, **fields)
        print(report.summary())
        return 0 if report.failed == 0 else 1
    print(f"simulating a call {fields['caller_id_number']} -> {fields['destination']} to {address[0]}:{address[1]}")
    try:
        result = simulate_tcp_call(address, emit=print, **fields)
    except OSError as exc:
        raise SystemExit(f"error: cannot reach {address[0]}:{address[1]}: {exc}") from None
    print(f"result: verbs={result.verbs} hangup_cause={result.hangup_cause} answered={result.answered}")
    return 0


