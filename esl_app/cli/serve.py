"""``esl-app serve MODULE:APP``: the worker pools of the settings under a supervisor (docs/pools.md),
or, with ``--single`` (or ``--host``/``--port``/``ESL_APP_HOST``/``ESL_APP_PORT``), one process on one
address running every route."""

from __future__ import annotations

import argparse
import gc
import signal
from typing import Any

import gevent

from ..settings import Settings
from .common import compile_or_exit, load_app

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    from ..pools.cli import add_serve_arguments

    serve = sub.add_parser("serve", help="run the outbound Event Socket server for an app (worker pools)")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..pools.cli import load_settings, serve_pools, wants_single

    settings = load_settings(args)
    if not wants_single(args):
        from ..pools.logs import configure

        configure(args.log_level or settings.log_level, settings.log_format, pool="supervisor")
        # SIGHUP reads the settings again: with the same command-line overrides
        return serve_pools(args.app, settings, settings_factory=lambda: load_settings(args))
    return serve_single(args, settings)


def serve_single(args: argparse.Namespace, settings: Settings) -> int:
    from ..handoff import HandoffSigner
    from ..pools.cli import warn_if_nobody_may_call
    from ..transport import OutboundServer
    from ..transport.collector import settle

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    app = load_app(args.app)
    app.session_settings = settings.session()
    app.max_calls = settings.max_calls
    app.handoff_extension = settings.handoff_extension
    if settings.handoff_secret is not None:
        app.handoff = HandoffSigner(settings.handoff_secret.get_secret_value())
    compile_or_exit(app)
    app.startup()
    settle()  # start-up is done: its objects out of the collector's way before the first call
    peers = settings.peer_filter()
    server = OutboundServer(
        app.handle, host, port, backlog=settings.backlog, peers=peers, keepalive=app.session_settings.keepalive
    )
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
    gc.freeze()  # start-up's objects out of the collector's scans (esl_app.pools.worker.main)
    print(f"esl-app: serving {args.app} on {server.address[0]}:{server.address[1]}", flush=True)
    print(f"esl-app: accepting calls from {peers.describe() if peers else 'any address'}", flush=True)
    warn_if_nobody_may_call("the server", host, settings)
    server.serve_forever()
    app.shutdown()
    return 0
