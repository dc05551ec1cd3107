"""``esl-app demo``: serve the demo app and send simulated calls through it over TCP."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator

import gevent

from .common import compile_or_exit, load_app

ORDER = 40
SETTLE_SECONDS = 5.0  # the longest the demo waits for a traced call to finish on the server side


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
    try:  # as servers do: a broken start fails the demo here, not each call
        app.startup()
    except Exception as exc:
        raise SystemExit(f"error: {args.app} failed to start: {type(exc).__name__}: {exc}") from None
    server = OutboundServer(app.handle, "127.0.0.1", args.port)
    server.start()
    address = server.address
    print(f"esl-app demo: {args.app} served on {address[0]}:{address[1]}; FreeSWITCH is simulated over TCP\n")
    for title, fields, setup in scenarios:
        if setup is not None:
            setup()
        print(f"== {title}", flush=True)
        result = simulate_tcp_call(address, emit=print, **fields)
        settle(server)  # the app's own lines about this call (its end) come under its title, not the next
        print(f"-> verbs {result.verbs}, hangup cause {result.hangup_cause}\n", flush=True)
    first_title, first_fields, first_setup = scenarios[0]
    if first_setup is not None:
        first_setup()
    print(f"== a quick loop over TCP: {args.calls} x '{first_title}' (not a benchmark)", flush=True)
    with quiet_calls():
        report = measure_tcp_calls(address, args.calls, concurrency=10, **first_fields)
        settle(server)
        server.stop(deadline=5)
    print(report.summary())
    app.shutdown()
    return 0


def settle(server: object, timeout: float = SETTLE_SECONDS) -> None:
    """Wait until the server has no call left (the client side ends first: the server still logs)."""
    deadline = time.monotonic() + timeout
    while getattr(server, "active", 0) and time.monotonic() < deadline:
        gevent.sleep(0.002)


@contextlib.contextmanager
def quiet_calls() -> Iterator[None]:
    """Hide log records below WARNING (one or two per call: "ended: NORMAL_CLEARING") during the loop, so
    the screen keeps the traces and the figures. ``--log-level DEBUG`` keeps them all."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)
