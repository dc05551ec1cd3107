"""The ``esl-app`` command. Each subcommand lives in its own module of this package and exposes
``register(subparsers)``; modules are found automatically, ordered by their ``ORDER``."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from pydantic import ValidationError

from ..settings import Settings
from .common import load_app

__all__ = ["build_parser", "load_app", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esl-app", description="FreeSWITCH call control over the Event Socket")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: ESL_APP_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        level = args.log_level or Settings().log_level
    except ValidationError as exc:  # a bad setting is named, not a traceback
        raise SystemExit(f"error: invalid settings: {exc}") from None
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
