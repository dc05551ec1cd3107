"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from ..app import App
from ..errors import RouteError


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


def compile_or_exit(app: App) -> None:
    try:
        app.compile()
    except RouteError as exc:
        raise SystemExit(f"error: invalid routes: {exc}") from None




def script_fields(args: argparse.Namespace) -> dict[str, Any]:
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


