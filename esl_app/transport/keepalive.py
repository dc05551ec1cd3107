"""TCP keepalive for call connections: a switch host that crashed or is cut off frees its calls.

Without it a dead peer is never noticed on an idle connection (no FIN, no RST ever arrives), and a
call waiting for an event holds its slot until the longest timeout. With the defaults below Linux
declares the peer dead after ``idle + interval * count`` = 25 s of silence from its kernel.
``TCP_USER_TIMEOUT`` bounds the same way the case keepalive does not cover: data written and never
acknowledged.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("esl_app.transport")


@dataclass(slots=True, frozen=True)
class KeepaliveSettings:
    enabled: bool = True
    idle: int = 10  # seconds of silence before the first probe (TCP_KEEPIDLE)
    interval: int = 5  # seconds between probes (TCP_KEEPINTVL)
    count: int = 3  # unanswered probes before the connection is reset (TCP_KEEPCNT)

    @property
    def dead_after(self) -> int:
        """Seconds after which an unreachable peer's connection fails."""
        return self.idle + self.interval * self.count


def enable_keepalive(sock: Any, settings: KeepaliveSettings) -> bool:
    """Turn keepalive on for ``sock`` (a no-op for sockets that are not TCP). True when set."""
    if not settings.enabled:
        return False
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    # Linux names; macOS has TCP_KEEPALIVE for the idle time instead
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for option, value in (
        (idle, settings.idle),
        (getattr(socket, "TCP_KEEPINTVL", None), settings.interval),
        (getattr(socket, "TCP_KEEPCNT", None), settings.count),
        (getattr(socket, "TCP_USER_TIMEOUT", None), settings.dead_after * 1000),
    ):
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError as exc:  # not a TCP socket (a unix socket, an in-memory pipe): nothing to probe
        log.debug("keepalive not set: %s", exc)
        return False
    return True


def has_keepalive(sock: Any) -> bool:
    """Keepalive already on: a socket accepted from a listener that has it (Linux copies the listener's
    SO_KEEPALIVE and TCP_KEEP* to each accepted socket), so one read instead of five writes per call."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
    except (OSError, AttributeError):  # not a TCP socket (an in-memory pipe)
        return False
