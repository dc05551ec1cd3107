"""What a node tells about itself: a HEARTBEAT event or an ``api status`` reply, read into numbers.

Pure parsing, no I/O. Header names and the ``status`` layout are FreeSWITCH 1.10.12's
(``send_heartbeat()`` in switch_core.c, ``status_function`` in mod_commands.c); a reading that lacks
what it needs raises ``ReadingError`` instead of inventing zeros.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol import Event


class ReadingError(ValueError):
    """A heartbeat or status reply that cannot be read (missing or non-numeric fields)."""


@dataclass(frozen=True, slots=True)
class LoadReading:
    """A node's load at one moment. ``sessions_per_second`` is the rate of the last full second
    (``Session-Per-Sec-Last``); HEARTBEAT's ``Session-Per-Sec`` is the budget left, not a rate."""

    sessions: int
    max_sessions: int
    idle_cpu: float
    sessions_per_second: int | None = None
    core_uuid: str | None = None
    uptime_msec: int | None = None
    ready: bool | None = None  # api status: "is ready" / "is not ready" (full pause, stopping); heartbeat: None
    switchname: str | None = None


def _int(value: str | None, name: str) -> int:
    if value is None:
        raise ReadingError(f"missing {name}")
    try:
        return int(value.strip())
    except ValueError:
        raise ReadingError(f"{name} is not an integer: {value!r}") from None


def _float(value: str | None, name: str) -> float:
    if value is None:
        raise ReadingError(f"missing {name}")
    try:
        return float(value.strip())
    except ValueError:
        raise ReadingError(f"{name} is not a number: {value!r}") from None


def heartbeat_reading(event: Event) -> LoadReading:
    """Read a HEARTBEAT event (plain, json or xml: the headers are the same)."""
    if event.name != "HEARTBEAT":
        raise ReadingError(f"not a HEARTBEAT event: {event.name!r}")
    last = event.get("Session-Per-Sec-Last")
    return LoadReading(
        sessions=_int(event.get("Session-Count"), "Session-Count"),
        max_sessions=_int(event.get("Max-Sessions"), "Max-Sessions"),
        idle_cpu=_float(event.get("Idle-CPU"), "Idle-CPU"),
        sessions_per_second=_int(last, "Session-Per-Sec-Last") if last is not None else None,
        core_uuid=event.get("Core-UUID"),
        uptime_msec=_int(event.get("Uptime-msec"), "Uptime-msec"),
        switchname=event.get("FreeSWITCH-Switchname"),
    )


_UP = re.compile(
    r"^UP (\d+) years?, (\d+) days?, (\d+) hours?, (\d+) minutes?, (\d+) seconds?, (\d+) milliseconds?", re.M
)
_READY = re.compile(r"\) is (not )?ready", re.M)
_SESSIONS = re.compile(r"^(\d+) session\(s\) - peak", re.M)
_RATE = re.compile(r"^(\d+) session\(s\) per Sec out of max", re.M)
_MAX = re.compile(r"^(\d+) session\(s\) max", re.M)
_CPU = re.compile(r"^min idle cpu [\d.]+/([\d.]+)", re.M)
_YEAR_MS, _DAY_MS = 365 * 86_400_000, 86_400_000


def status_reading(text: str) -> LoadReading:
    """Read the body of ``api status``::

        UP 0 years, 0 days, 0 hours, 2 minutes, 33 seconds, 304 milliseconds, 660 microseconds
        FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready
        28 session(s) since startup
        2 session(s) - peak 4, last 5min 4
        0 session(s) per Sec out of max 30, peak 2, last 5min 2
        1000 session(s) max
        min idle cpu 0.00/89.73
    """
    if text.startswith("-ERR"):
        raise ReadingError(f"status failed: {text.strip()}")
    fields = {}
    for name, pattern in (("sessions", _SESSIONS), ("rate", _RATE), ("max", _MAX), ("cpu", _CPU)):
        match = pattern.search(text)
        if match is None:
            raise ReadingError(f"api status reply has no {name} line: {text[:200]!r}")
        fields[name] = match.group(1)
    up = _UP.search(text)
    uptime = None
    if up is not None:
        years, days, hours, minutes, seconds, millis = (int(g) for g in up.groups())
        uptime = years * _YEAR_MS + days * _DAY_MS + ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis
    ready = _READY.search(text)
    return LoadReading(
        sessions=int(fields["sessions"]),
        max_sessions=int(fields["max"]),
        idle_cpu=float(fields["cpu"]),
        sessions_per_second=int(fields["rate"]),
        uptime_msec=uptime,
        ready=ready is not None and ready.group(1) is None,
    )


def pause_reading(text: str) -> bool:
    """``fsctl pause_check inbound|outbound`` answers ``true`` or ``false`` (no newline)."""
    answer = text.strip().lower()
    if answer not in ("true", "false"):
        raise ReadingError(f"fsctl pause_check answered {text.strip()!r}")
    return answer == "true"
