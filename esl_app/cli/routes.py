"""``esl-app routes MODULE:APP``: print the compiled route table."""

from __future__ import annotations

import argparse
import sys

from ..errors import RouteError
from .common import load_app

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    routes = sub.add_parser("routes", help="print the compiled route table")
    routes.add_argument("app")
    routes.set_defaults(func=cmd_routes)


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


