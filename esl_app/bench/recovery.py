"""Calls outliving their workers: the demo's main line through real worker processes, one killed with
SIGKILL every ``--kill-every`` calls, at a different step each time, in both socket modes.

    python -m esl_app.bench.recovery --calls 200 --kill-every 50

Runs the pools supervisor (``python -m esl_app.pools``) with two workers on one port; each call runs
the dialplan's two ``socket`` actions to that port (``dialplan/esl_app.xml``), with the per-call fake
FreeSWITCH (``esl_app.testing.dialplan``). Every ``kill-every``-th call, as its Nth application starts,
the worker serving it is found (the process holding the server end of its TCP connection) and
killed. It prints how many calls were lost, how many completed prompts were heard twice and how many
bridges were placed twice (all three must be 0), and how many calls were resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.pool import Pool

from ..testing.dialplan import DialplanRecord, once, run_dialplan
from ..testing.peer import CallScript, FakeFreeSWITCH

APP_MODULE = """
from datetime import datetime
from zoneinfo import ZoneInfo

import callflows.demo as demo

_MOMENT = datetime(2026, 11, 25, 10, 30, tzinfo=ZoneInfo("Europe/London"))  # opening hours
demo.clock = lambda: _MOMENT
app = demo.app
"""
STEPS = ["answer", "playback", "play_and_get_digits", "bridge"]  # the main line's applications
TIMES = {"answer": 0.02, "playback": 0.15, "play_and_get_digits": 0.15, "bridge": 0.15}


@dataclass
class Supervisor:
    """The pools supervisor, started on free ports, with the demo app."""

    workers: int = 2
    extra: str = ""  # more of the app module (routes, startup hooks), after the demo's
    env: dict[str, str] = field(default_factory=dict)  # more environment for the supervisor and workers
    process: subprocess.Popen | None = None
    port: int = 0
    http: int = 0
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="esl-app-recovery-")))

    def start(self) -> Supervisor:
        (self.directory / "recovery_app.py").write_text(textwrap.dedent(APP_MODULE) + textwrap.dedent(self.extra))
        env = {
            **os.environ,
            "ESL_APP_POOLS__INBOUND__PORT": "0",
            "ESL_APP_POOLS__INBOUND__WORKERS": str(self.workers),
            "ESL_APP_POOLS__OUTBOUND__PORT": "0",
            "ESL_APP_HTTP_PORT": "0",
            "ESL_APP_HANGUP_WAIT": "0.2",
            "ESL_APP_RESTART_BACKOFF": "0.2",
            "ESL_APP_LOG_LEVEL": "ERROR",
            **self.env,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "esl_app.pools", "recovery_app:app"],
            cwd=self.directory, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("esl-app: pool inbound"):
                self.port = int(line.split()[4].rpartition(":")[2])
            elif line.startswith("esl-app: http on "):
                self.http = int(line.split()[3].rpartition(":")[2])
            elif line.strip() == "esl-app: ready":
                break
        else:
            raise RuntimeError(f"the supervisor exited: {self.process.wait()}")
        self.wait_ready()
        return self

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ready", timeout=5) as reply:
            return json.loads(reply.read())

    def pids(self) -> list[int]:
        workers = self.status()["pools"]["inbound"]["workers"]
        return [w["pid"] for w in workers if w["state"] == "ready"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.pids()) == self.workers:
                    return
            except (OSError, KeyError, ValueError):
                pass
            gevent.sleep(0.05)
        raise RuntimeError(f"the pool did not get {self.workers} ready workers within {timeout} s")

    def metric(self, name: str, **labels: str) -> float:
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                key, _, value = line.rpartition(" ")
                if key == wanted:
                    return float(value)
        return 0.0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serving_pid(peer: FakeFreeSWITCH, pids: list[int]) -> int | None:
    """The worker process holding the server end of ``peer``'s connection (Linux /proc)."""
    local_port = peer.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rpartition(":")[2], 16) == local_port:  # the remote end is the fake
                inodes.add(fields[9])
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_link.startswith("socket:[") and with_link[8:-1] in inodes:
                    return pid
        except OSError:
            continue
    return None


@dataclass
class Outcome:
    calls: int = 0
    killed: int = 0
    lost: int = 0
    repeated_prompts: int = 0
    double_bridges: int = 0
    resumed: int = 0
    wrong_flow: int = 0
    records: list[DialplanRecord] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"calls: {self.calls}, workers killed: {self.killed}, calls resumed: {self.resumed}, "
            f"lost: {self.lost}, repeated prompts: {self.repeated_prompts}, "
            f"bridges placed twice: {self.double_bridges}, flows not completed as scripted: {self.wrong_flow}"
        )


def run(supervisor: Supervisor, calls: int, kill_every: int, concurrency: int = 8) -> Outcome:
    outcome = Outcome(calls=calls)
    targets = [("127.0.0.1", supervisor.port)] * 2  # the dialplan's two socket actions

    def one(number: int) -> None:
        mode = "async" if number % 2 else "static"
        script = CallScript(destination="1000", dtmf="1", mode=mode, app_seconds=TIMES)
        kill_when = kill = None
        if kill_every and number % kill_every == 0:
            step = (number // kill_every - 1) % len(STEPS) + 1

            def at_step(executed: list[tuple[str, str]]) -> bool:
                return sum(1 for app, _ in executed if app != "set") >= step

            def kill_worker(peer: FakeFreeSWITCH) -> None:
                pid = serving_pid(peer, supervisor.pids())
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    outcome.killed += 1

            kill_when, kill = once(at_step), kill_worker
        record = run_dialplan(targets, script, kill_when=kill_when, kill=kill, safety_timeout=60)
        outcome.records.append(record)
        if record.lost or record.hangup_cause is None:
            outcome.lost += 1
        outcome.repeated_prompts += len(record.repeated_prompts)
        outcome.double_bridges += record.count("bridge") > 1
        outcome.resumed += len(record.sockets) > 1
        if [app for app, _ in record.executed if app != "set"] != STEPS:
            outcome.wrong_flow += 1

    pool = Pool(concurrency)
    for number in range(1, calls + 1):
        pool.spawn(one, number)
    pool.join(raise_error=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--kill-every", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    with Supervisor() as supervisor:
        started = time.monotonic()
        outcome = run(supervisor, args.calls, args.kill_every, args.concurrency)
        print(outcome.line())
        print(f"resumed by checkpoint (metrics): {_resumed_metrics(supervisor)}; {time.monotonic() - started:.1f} s")
    return 0 if outcome.lost == outcome.repeated_prompts == outcome.double_bridges == 0 else 1


def _resumed_metrics(supervisor: Supervisor) -> dict[str, float]:
    found = {}
    for name in ("welcome", "menu", "bridge", "after_bridge", "unnamed"):
        value = supervisor.metric("esl_app_calls_resumed_total", pool="inbound", checkpoint=name)
        if value:
            found[name] = value
    return found


if __name__ == "__main__":
    sys.exit(main())
