"""Structured logs: every record carries the call's UUID, the pool and the worker, as text or JSON lines.

The call UUID and pool come from context variables the App sets in the call's greenlet
(``esl_app.app.CALL_UUID`` / ``CALL_POOL``); gevent gives each greenlet its own context, so a record
logged while handling a call names that call and no other.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ..app import CALL_POOL, CALL_UUID

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(pool)s %(worker)s %(call_uuid)s] %(message)s"


class CallContextFilter(logging.Filter):
    """Adds ``call_uuid``, ``pool`` and ``worker`` to every record."""

    def __init__(self, pool: str = "", worker: str = "") -> None:
        super().__init__()
        self.pool = pool
        self.worker = worker or str(os.getpid())

    def filter(self, record: logging.LogRecord) -> bool:
        record.call_uuid = CALL_UUID.get() or "-"
        record.pool = CALL_POOL.get() or self.pool or "-"
        record.worker = self.worker
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, pool, worker, call_uuid (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pool": getattr(record, "pool", "-"),
            "worker": getattr(record, "worker", "-"),
            "call_uuid": getattr(record, "call_uuid", "-"),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text", *, pool: str = "", worker: str = "") -> None:
    """Replace the root handlers with one stderr handler in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallContextFilter(pool, worker))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
