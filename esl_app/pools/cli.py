"""``esl-app serve``: worker pools under the supervisor, or one process (``--single``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from pydantic import ValidationError

from ..settings import Settings


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", help="MODULE:APP, e.g. callflows.demo:app")
    parser.add_argument("--host", help="--single: listen address (default: ESL_APP_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="--single: listen port (default: ESL_APP_PORT or 8084)")
    parser.add_argument(
        "--allow-from",
        action="append",
        metavar="ADDRESS|CIDR",
        help="a FreeSWITCH address or network that may connect (repeatable, or comma-separated; 'any' for "
        "everybody). Replaces ESL_APP_ALLOW_FROM and every pool's allow_from. Default: loopback only",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--single", action="store_true", help="one process on one address, every route (default with --host/--port)"
    )
    mode.add_argument("--pools", action="store_true", help="the pools of the settings, under a supervisor (default)")


def wants_single(args: argparse.Namespace) -> bool:
    """Pools are the default; one address asked for (flags or ESL_APP_HOST/PORT) means one process."""
    if args.single or args.pools:
        return bool(args.single)
    return (
        args.host is not None or args.port is not None or "ESL_APP_PORT" in os.environ or "ESL_APP_HOST" in os.environ
    )


def load_settings(args: argparse.Namespace | None = None) -> Settings:
    """The settings, with the command line's overrides; an invalid setting exits with its message."""
    try:
        settings = Settings()
        allow = getattr(args, "allow_from", None)
        if allow:
            pools = {name: pool.model_copy(update={"allow_from": None}) for name, pool in settings.pools.items()}
            settings = Settings.model_validate({**settings.model_dump(), "allow_from": ",".join(allow), "pools": pools})
    except ValidationError as exc:
        raise SystemExit(f"error: invalid settings: {exc}") from None
    return settings


def warn_if_nobody_may_call(where: str, host: str, settings: Settings, pool: str | None = None) -> None:
    """A public listen address with the default loopback-only allow-list is almost always a mistake."""
    peers = settings.peer_filter(pool)
    if peers is not None and peers.only_loopback() and host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"esl-app: warning: {where} listens on {host} but only loopback peers may connect; "
            "set ESL_APP_ALLOW_FROM (or --allow-from) to your FreeSWITCH addresses",
            file=sys.stderr,
            flush=True,
        )


def serve_pools(
    app_target: str, settings: Settings | None = None, settings_factory: Callable[[], Settings] | None = None
) -> int:
    """Run the supervisor until SIGTERM/SIGINT; prints where each pool and the HTTP endpoints listen.

    ``settings_factory``: how SIGHUP reads the settings again (default: ``Settings()``)."""
    from .supervisor import Supervisor
    from .worker import load_app

    settings = settings or Settings()
    try:  # fail here, clearly, rather than in every worker
        app = load_app(app_target)
        app.compile()
    except Exception as exc:
        raise SystemExit(f"error: cannot load {app_target}: {exc}") from None
    unknown = app.declared_pools() - set(settings.served_pools())
    if unknown:
        raise SystemExit(
            f"error: routes declare pools {sorted(unknown)} that the settings do not serve "
            f"(served: {sorted(settings.served_pools())})"
        )

    def announce(supervisor: Supervisor) -> None:
        print("esl-app: ready", flush=True)

    supervisor = Supervisor(app_target, settings, settings_factory=settings_factory or Settings, on_ready=announce)
    try:
        supervisor.setup()
    except OSError as exc:
        supervisor.close()
        raise SystemExit(f"error: {exc}") from None
    for name, pool in supervisor.pools.items():
        host, port = supervisor.pool_address(name)
        peers = settings.peer_filter(name)
        print(
            f"esl-app: pool {name} on {host}:{port} ({pool.settings.workers} workers, capacity "
            f"{pool.settings.capacity}, cps {pool.settings.cps or 'unlimited'}, "
            f"allow {peers.describe() if peers else 'any'})",
            flush=True,
        )
        warn_if_nobody_may_call(f"pool {name}", host, settings, name)
    if supervisor.http_address:
        host, port = supervisor.http_address
        print(f"esl-app: http on {host}:{port} (/metrics /health /ready)", flush=True)
    return supervisor.run(setup=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m esl_app.pools APP``: the pools mode of ``esl-app serve``."""
    parser = argparse.ArgumentParser(prog="python -m esl_app.pools")
    parser.add_argument("app")
    args = parser.parse_args(argv)
    settings = load_settings()
    from .logs import configure

    configure(settings.log_level, settings.log_format, pool="supervisor")
    return serve_pools(args.app, settings)


if __name__ == "__main__":
    sys.exit(main())
