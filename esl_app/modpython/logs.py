"""esl-app's log records on FreeSWITCH's console and log (``freeswitch.consoleLog``).

Inside FreeSWITCH nobody configures Python's ``logging``, so without this a flow's errors (``flow
failed`` with its traceback) would go nowhere. Installed once, on the ``esl_app`` logger and the
root logger, only when neither has a handler already (a site's own logging setup wins).
"""

from __future__ import annotations

import logging
from typing import Any

# FreeSWITCH's level names (switch_log.c: switch_log_str2level)
_LEVELS = [
    (logging.CRITICAL, "CRIT"),
    (logging.ERROR, "ERR"),
    (logging.WARNING, "WARNING"),
    (logging.INFO, "INFO"),
    (logging.DEBUG, "DEBUG"),
]


def freeswitch_level(levelno: int) -> str:
    for threshold, name in _LEVELS:
        if levelno >= threshold:
            return name
    return "DEBUG"


class ConsoleLogHandler(logging.Handler):
    """Writes each record with ``freeswitch.consoleLog(level, text)`` (callable from any thread)."""

    def __init__(self, freeswitch: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.freeswitch = freeswitch
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.freeswitch.consoleLog(freeswitch_level(record.levelno), self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def install_console_logging(freeswitch: Any, level: int = logging.INFO) -> ConsoleLogHandler | None:
    """Route log records to FreeSWITCH unless logging is configured already; returns the handler."""
    root = logging.getLogger()
    ours = logging.getLogger("esl_app")
    if root.handlers or ours.handlers or not hasattr(freeswitch, "consoleLog"):
        return None
    handler = ConsoleLogHandler(freeswitch, level)
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler
