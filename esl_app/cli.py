"""The ``esl-app`` command: serve, simulate, routes, demo."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
from typing import Any

import gevent

from .app import App
from .errors import RouteError
from .settings import Settings


def load_app(target: str) -> App:
    """Import ``package.module:attribute`` and return the App it names."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"error: expected MODULE:APP (e.g. callflows.demo:app), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise SystemExit(f"error: {target!r} is not an esl_app.App (got {type(app).__name__})")
    return app


def _compile_or_exit(app: App) -> None:
    try:
        app.compile()
    except RouteError as exc:
        raise SystemExit(f"error: invalid routes: {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .transport import OutboundServer

    settings = Settings()
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    app = load_app(args.app)
    app.session_settings = settings.session()
    app.max_calls = settings.max_calls
    _compile_or_exit(app)
    app.startup()
    server = OutboundServer(app.handle, host, port, backlog=settings.backlog)
    try:
        server.start()
    except OSError as exc:
        raise SystemExit(f"error: {exc}") from None

    def graceful(*_: Any) -> None:
        print(f"esl-app: stopping; active calls have {settings.stop_deadline:.0f} s to finish", flush=True)
        gevent.spawn(server.stop, settings.stop_deadline)

    # before the banner: whoever waits for it to send SIGTERM must get the graceful stop, not a kill
    gevent.signal_handler(signal.SIGTERM, graceful)
    gevent.signal_handler(signal.SIGINT, graceful)
    print(f"esl-app: serving {args.app} on {server.address[0]}:{server.address[1]}", flush=True)
    server.serve_forever()
    app.shutdown()
    return 0


def _script_fields(args: argparse.Namespace) -> dict[str, Any]:
    variables = {}
    for item in args.var or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --var takes NAME=VALUE, got {item!r}")
        variables[name] = value
    fields: dict[str, Any] = {
        "destination": args.destination,
        "caller_id_number": args.caller,
        "context": args.context,
        "mode": args.mode,
        "variables": variables,
    }
    if args.dtmf is not None:
        fields["dtmf"] = args.dtmf.split(",") if "," in args.dtmf else args.dtmf
    if args.hangup_at is not None:
        fields["hangup_at"] = args.hangup_at
    if args.bridge:
        fields["bridge"] = {"*": args.bridge}
    return fields


def cmd_simulate(args: argparse.Namespace) -> int:
    from .testing.simulate import measure_tcp_calls, simulate_tcp_call

    settings = Settings()
    address = (args.host or settings.host, settings.port if args.port is None else args.port)
    fields = _script_fields(args)
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


def cmd_routes(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        table = app.compile()
    except RouteError as exc:
        print(f"error: invalid routes: {exc}", file=sys.stderr)
        return 1
    print(f"{args.app}: {len(table.routes)} routes, {len(app._guards)} guards")
    for line in table.describe():
        print("  " + line)
    print("  default -> " + (app._default.__qualname__ if app._default else "404 / UNALLOCATED_NUMBER"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .testing.simulate import measure_tcp_calls, simulate_tcp_call
    from .transport import OutboundServer

    app = load_app(args.app)
    _compile_or_exit(app)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esl-app", description="FreeSWITCH call control over the Event Socket")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: ESL_APP_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the outbound Event Socket server for an app")
    serve.add_argument("app", help="MODULE:APP, e.g. callflows.demo:app")
    serve.add_argument("--host", help="listen address (default: ESL_APP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: ESL_APP_PORT or 8084)")
    serve.set_defaults(func=cmd_serve)

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

    routes = sub.add_parser("routes", help="print the compiled route table")
    routes.add_argument("app")
    routes.set_defaults(func=cmd_routes)

    demo = sub.add_parser("demo", help="serve the demo app and send simulated calls through it")
    demo.add_argument("--app", default="callflows.demo:app")
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--calls", type=int, default=500)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or Settings().log_level
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    code = args.func(args)
    logging.getLogger("esl_app.cli").debug("done in %.3f s", time.perf_counter() - started)
    return code

if __name__ == "__main__":
    sys.exit(main())
