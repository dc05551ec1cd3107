"""Kamailio and SIPp as child processes on loopback: the SIP edge's tests and benchmark.

- ``Kamailio``: the project's ``docker/kamailio/kamailio.cfg`` in the foreground (``-DD -E``) with its
  own runtime directory, pid file and dispatcher list, listening on free loopback ports; its defines
  (``PING_INTERVAL``, ``CPS_GLOBAL``...) are passed with ``-A``.
- ``SippNode``: a SIPp UAS standing in for a FreeSWITCH node (``docker/kamailio/sipp/uas.xml``): it
  answers OPTIONS and INVITE and logs every INVITE and BYE with its Call-ID, so a test knows which
  node took which call. ``freeze()`` (SIGSTOP) makes it a hung node.
- ``run_callers``: a SIPp UAC placing calls through the edge; which were answered, which refused (503).

Every wait is bounded; a process that dies early fails with its log. Waits and child processes are
gevent-cooperative (``gevent.subprocess``, ``gevent.sleep``), so a cluster registry and fake nodes in the
same process keep running while SIPp places calls.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.subprocess

from ..edge.jsonrpc import KamailioRPC, KamailioRPCError

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_DIR = REPO / "docker" / "kamailio"
KAMAILIO_CFG = KAMAILIO_DIR / "kamailio.cfg"
UAS_SCENARIO = KAMAILIO_DIR / "sipp" / "uas.xml"
UAC_SCENARIO = KAMAILIO_DIR / "sipp" / "uac.xml"
REFUSING_UAS_SCENARIO = KAMAILIO_DIR / "sipp" / "uas-refuse.xml"  # OPTIONS 200, INVITE 503


class EdgeProcessError(RuntimeError):
    """Kamailio or SIPp is missing, did not start, or died."""


def require(program: str) -> str:
    path = shutil.which(program) or next(
        (str(p) for p in (Path("/usr/sbin") / program, Path("/sbin") / program) if p.exists()), None
    )
    if path is None:
        raise EdgeProcessError(f"{program} is not installed (apt-get install kamailio sip-tester; .ci/run does)")
    return path


def free_port(host: str = "127.0.0.1", *, udp: bool = True, tcp: bool = False) -> int:
    """A port free for UDP (and TCP when asked) on ``host`` right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if not (udp and tcp):
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind((host, port))
                except OSError:
                    continue
                return port
    raise EdgeProcessError("no free port")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(interval)


@dataclass
class Destination:
    set_id: int
    uri: str
    rweight: int = 50


class Kamailio:
    def __init__(
        self,
        workdir: Path,
        destinations: list[Destination],
        *,
        cfg: Path = KAMAILIO_CFG,
        host: str = "127.0.0.1",
        defines: dict[str, int | str] | None = None,
        rpc_port: int = 0,
    ) -> None:
        self.workdir = Path(workdir)
        self.destinations = destinations
        self.cfg = cfg
        self.host = host
        self.defines = {"CHILDREN": 2, **(defines or {})}
        self.sip_port = 0
        self.rpc_port = rpc_port  # 0: a free one at start
        self.process: gevent.subprocess.Popen | None = None
        self.list_file = self.workdir / "dispatcher.list"
        self.log_file = self.workdir / "kamailio.log"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}/RPC"

    @property
    def rpc(self) -> KamailioRPC:
        return KamailioRPC(self.rpc_url, timeout=2.0)

    def write_list(self, destinations: list[Destination]) -> None:
        self.list_file.write_text(
            "".join(f"{d.set_id} {d.uri} 8 0 rweight={d.rweight}\n" for d in destinations)
        )

    def start(self, timeout: float = 30.0) -> Kamailio:
        binary = require("kamailio")
        if not self.cfg.is_file():
            raise EdgeProcessError(f"{self.cfg}: no such file (the edge runs from a checkout: docker/kamailio/)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_list(self.destinations)
        self.sip_port = free_port(self.host, udp=True, tcp=True)
        self.rpc_port = self.rpc_port or free_port("127.0.0.1", udp=False)
        defines = {
            **self.defines,
            "SIP_IP": self.host,
            "SIP_PORT": self.sip_port,
            "RPC_PORT": self.rpc_port,
            "DISPATCHER_LIST": f'"{self.list_file}"',
        }
        command = [binary, "-DD", "-E", "-f", str(self.cfg), "-P", str(self.workdir / "kamailio.pid")]
        command += ["-Y", str(self.workdir), "-m", "64", "-M", "8"]
        for name, value in defines.items():
            command += ["-A", f"{name}={value}"]
        self.command = command
        with open(self.log_file, "wb") as log:
            self.process = gevent.subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        if not wait_for(self._answers, timeout, 0.1):
            self.stop()
            raise EdgeProcessError(f"Kamailio did not answer JSON-RPC within {timeout:g} s:\n{self.log_tail()}")
        return self

    def _answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise EdgeProcessError(f"Kamailio exited ({self.command}):\n{self.log_tail()}")
        try:
            self.rpc.call("core.version")
        except KamailioRPCError:
            return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def flags(self, set_id: int, uri: str) -> str:
        """``AP``, ``IP``, ``DX``...: the destination's state in Kamailio now."""
        return self.rpc.destinations()[(set_id, uri)]["flags"]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except gevent.subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SippNode:
    """A SIPp UAS standing in for one FreeSWITCH node."""

    def __init__(self, workdir: Path, name: str, *, host: str = "127.0.0.1", scenario: Path = UAS_SCENARIO) -> None:
        self.workdir = Path(workdir)
        self.name = name
        self.host = host
        self.scenario = scenario
        self.port = 0
        self.log_file = self.workdir / f"{name}.log"
        self.process: gevent.subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def start(self, port: int | None = None) -> SippNode:
        binary = require("sipp")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        command = [binary, "-sf", str(self.scenario), "-i", self.host, "-p", str(self.port), "-nostdin"]
        command += ["-trace_logs", "-log_file", str(self.log_file), "-t", "u1"]
        self.process = gevent.subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=self.workdir
        )
        self.started_at = time.time()  # SIPp's [clock_tick] counts from its start, just after exec
        gevent.sleep(0.05)
        if self.process.poll() is not None:
            raise EdgeProcessError(f"sipp UAS {self.name} exited at once: {command}")
        return self

    def _lines(self, word: str) -> list[list[str]]:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line.split()[1:] for line in text.splitlines() if line.startswith(word + " ")]

    def invites(self) -> list[str]:
        """Call-IDs of the INVITEs this node took, in order."""
        return [fields[0] for fields in self._lines("INVITE") if fields]

    def invite_times(self) -> list[float]:
        """When each INVITE arrived (wall clock, from SIPp's [clock_tick]; ~10 ms off at worst)."""
        return [self.started_at + int(fields[1]) / 1000 for fields in self._lines("INVITE") if len(fields) > 1]

    def byes(self) -> list[str]:
        return [fields[0] for fields in self._lines("BYE") if fields]

    def freeze(self) -> None:
        """SIGSTOP: the node hangs; what reaches it waits in its socket buffer until ``thaw``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.process = None


def max_per_second(times: list[float], fit_ms: int = 60) -> int:
    """The most events in one wall-clock second. SIPp's [clock_tick] sits on the wall clock only to within
    tens of ms (its process start), so the second boundaries are fitted within +-``fit_ms``: the
    alignment giving the smallest maximum (the one Kamailio's per-second counter most likely used)."""
    if not times:
        return 0
    return min(
        max(Counter(math.floor(t + shift / 1000) for t in times).values()) for shift in range(-fit_ms, fit_ms + 1, 5)
    )


@dataclass
class CallerResult:
    answered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    returncode: int = 0
    elapsed: float = 0.0

    @property
    def attempts(self) -> int:
        return len(self.answered) + len(self.refused)


def run_callers(
    workdir: Path,
    target: str,
    *,
    calls: int,
    rate: float,
    host: str = "127.0.0.1",
    service: str = "1000",
    name: str = "callers",
    timeout: float = 120.0,
) -> CallerResult:
    """Place ``calls`` calls at ``rate`` per second through ``target`` (host:port); wait for them all."""
    binary = require("sipp")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / f"{name}.log"
    log_file.unlink(missing_ok=True)
    command = [binary, "-sf", str(UAC_SCENARIO), target, "-s", service, "-i", host, "-nostdin", "-t", "u1"]
    command += ["-m", str(calls), "-r", str(rate), "-rp", "1000", "-recv_timeout", "10000"]
    command += ["-trace_logs", "-log_file", str(log_file), "-timeout", f"{int(timeout)}s"]
    started = time.monotonic()
    completed = gevent.subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        cwd=workdir, timeout=timeout + 30, check=False,
    )  # fmt: skip
    result = CallerResult(returncode=completed.returncode, elapsed=time.monotonic() - started)
    with contextlib.suppress(FileNotFoundError):
        for line in log_file.read_text(errors="replace").splitlines():
            word, _, call_id = line.partition(" ")
            if word == "ANSWERED":
                result.answered.append(call_id.strip())
            elif word == "REFUSED":
                result.refused.append(call_id.strip())
    return result
