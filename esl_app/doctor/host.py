"""Host checks: the kernel and process limits that cap the calls a host carries.

Read from ``/proc`` (a different root in tests) and ``resource``; nothing is changed, each problem
comes with the command that fixes it and how to keep the fix across reboots.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

from .findings import Finding, Severity

SCOPE = "host"
# every call is one socket in esl-app and in FreeSWITCH (plus RTP, files...): a pool of 1000 calls
# cannot run under the common default of 1024 open files
NOFILE_CRITICAL = 4096
NOFILE_RECOMMENDED = 65536
# esl-app listens with a backlog of 4096 (transport.server); the kernel silently cuts it to somaxconn
SOMAXCONN_RECOMMENDED = 4096
# Linux's default range (32768-60999) holds 28232 ports. Each connection to one server address takes
# one, and keeps it ~60 s in TIME_WAIT after it closes: FreeSWITCH connecting to esl-app at N calls/s
# needs ~60 x N of them.
PORT_RANGE_MIN_WIDTH = 28000
# FreeSWITCH's default RTP range (switch.conf rtp-start-port/rtp-end-port): ephemeral ports there
# make RTP port allocation fail under load
RTP_DEFAULT = (16384, 32768)
SYSCTL_FILE = "/etc/sysctl.d/60-esl-app.conf"


def _read(proc: Path, relative: str) -> str | None:
    try:
        return (proc / relative).read_text().strip()
    except OSError:
        return None


def _unreadable(check: str, path: str) -> Finding:
    return Finding(
        scope=SCOPE,
        check=check,
        severity=Severity.WARNING,
        value="unreadable",
        why=f"{path} could not be read (not Linux, or /proc not mounted)",
        fix="run esl-app doctor on the Linux host (or container with the host's /proc) that runs the calls",
    )


def check_open_files(getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit) -> Finding:
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    shown = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    value = f"{shown} (hard {'unlimited' if hard == resource.RLIM_INFINITY else hard})"
    fix = (
        f"ulimit -n {NOFILE_RECOMMENDED} in the shell that starts it; systemd: LimitNOFILE={NOFILE_RECOMMENDED}; "
        f"docker-compose: ulimits: nofile: {NOFILE_RECOMMENDED}; for FreeSWITCH itself 999999"
    )
    if soft != resource.RLIM_INFINITY and soft < NOFILE_CRITICAL:
        why = f"every call holds a socket: fewer than {NOFILE_CRITICAL} open files fails calls at a few hundred"
        return Finding(
            scope=SCOPE, check="open files (ulimit -n)", severity=Severity.CRITICAL, value=value, why=why, fix=fix
        )
    if soft != resource.RLIM_INFINITY and soft < NOFILE_RECOMMENDED:
        why = f"below {NOFILE_RECOMMENDED}: a busy pool or node runs out of sockets"
        return Finding(
            scope=SCOPE, check="open files (ulimit -n)", severity=Severity.WARNING, value=value, why=why, fix=fix
        )
    return Finding(scope=SCOPE, check="open files (ulimit -n)", severity=Severity.OK, value=value)


def check_port_range(proc: Path = Path("/proc")) -> Finding:
    check, path = "net.ipv4.ip_local_port_range", "sys/net/ipv4/ip_local_port_range"
    text = _read(proc, path)
    if text is None:
        return _unreadable(check, f"/proc/{path}")
    try:
        low, high = (int(part) for part in text.split())
    except ValueError:
        return _unreadable(check, f"/proc/{path}")
    width = high - low + 1
    value = f"{low}-{high} ({width} ports)"
    fix = (
        f'sysctl -w net.ipv4.ip_local_port_range="32769 65535"; persist it in {SYSCTL_FILE}; keep FreeSWITCH\'s '
        "RTP range (switch.conf rtp-start-port/rtp-end-port) outside it"
    )
    if width < PORT_RANGE_MIN_WIDTH:
        why = (
            f"{width} ephemeral ports: each connection to esl-app takes one and holds it ~60 s in TIME_WAIT, "
            f"so about {width // 60} new calls/s exhaust them"
        )
        return Finding(scope=SCOPE, check=check, severity=Severity.WARNING, value=value, why=why, fix=fix)
    if low < RTP_DEFAULT[1] and high >= RTP_DEFAULT[0]:  # sharing the one edge port 32768 is harmless
        why = (
            f"overlaps FreeSWITCH's default RTP ports {RTP_DEFAULT[0]}-{RTP_DEFAULT[1]}: an ephemeral socket can "
            "take a port RTP needs"
        )
        return Finding(scope=SCOPE, check=check, severity=Severity.WARNING, value=value, why=why, fix=fix)
    return Finding(scope=SCOPE, check=check, severity=Severity.OK, value=value)


def check_somaxconn(proc: Path = Path("/proc")) -> Finding:
    check, path = "net.core.somaxconn", "sys/net/core/somaxconn"
    text = _read(proc, path)
    if text is None or not text.isdigit():
        return _unreadable(check, f"/proc/{path}")
    value = int(text)
    if value < SOMAXCONN_RECOMMENDED:
        return Finding(
            scope=SCOPE,
            check=check,
            severity=Severity.WARNING,
            value=str(value),
            why=f"esl-app listens with a backlog of 4096 and the kernel cuts it to {value}: a burst of calls "
            "overflows the queue and FreeSWITCH's connects wait for SYN retries (1 s, 3 s...)",
            fix=f"sysctl -w net.core.somaxconn={SOMAXCONN_RECOMMENDED}; persist it in {SYSCTL_FILE}",
        )
    return Finding(scope=SCOPE, check=check, severity=Severity.OK, value=str(value))


def check_host(
    proc: Path = Path("/proc"), getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit
) -> list[Finding]:
    return [check_open_files(getrlimit), check_port_range(proc), check_somaxconn(proc)]
