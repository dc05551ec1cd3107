"""``esl-app demo``: serve the demo app and send simulated calls through it over TCP."""

from __future__ import annotations

import argparse
import sys

from .common import compile_or_exit, load_app

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="serve the demo app and send simulated calls through it")
    demo.add_argument("--app", default="callflows.demo:app")
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--calls", type=int, default=500)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..testing.simulate import measure_tcp_calls, simulate_tcp_call
    from ..transport import OutboundServer

    app = load_app(args.app)
    compile_or_exit(app)
    # the app's module may describe the calls to send: SCENARIOS = [(title, script fields, setup or None)]
    scenarios = getattr(sys.modules[args.app.partition(":")[0]], "SCENARIOS", None) or [
        ("one call to 1000", {"destination": "1000"}, None)
    ]
    server = OutboundServer(app.handle, "127.0.0.1", args.port)
    server.start()
    address = server.address
    print(f"esl-app demo: {args.app} served on {address[0]}:{address[1]}; FreeSWITCH is simulated over TCP\n")
    for title, fields, setup in scenarios:
        if setup is not None:
            setup()
        print(f"== {title}")
        result = simulate_tcp_call(address, emit=print, **fields)
        print(f"-> verbs {result.verbs}, hangup cause {result.hangup_cause}\n")
    first_title, first_fields, first_setup = scenarios[0]
    if first_setup is not None:
        first_setup()
    report = measure_tcp_calls(address, args.calls, concurrency=10, **first_fields)
    print(f"== a quick loop over TCP: {args.calls} x '{first_title}' (not a benchmark)")
    print(report.summary())
    server.stop(deadline=5)
    return 0


