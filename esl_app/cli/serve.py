"""``esl-app serve MODULE:APP``: the outbound Event Socket server."""

from __future__ import annotations

import argparse
import signal
from typing import Any

import gevent

from ..settings import Settings
from .common import compile_or_exit, load_app

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the outbound Event Socket server for an app")
    serve.add_argument("app", help="MODULE:APP, e.g. callflows.demo:app")
    serve.add_argument("--host", help="listen address (default: ESL_APP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: ESL_APP_PORT or 8084)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..transport import OutboundServer

    settings = Settings()
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    app = load_app(args.app)
    app.session_settings = settings.session()
    app.max_calls = settings.max_calls
    compile_or_exit(app)
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


