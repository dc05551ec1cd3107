"""The supervisor with real worker processes and real TCP: separate processes per pool, a worker
killed with SIGKILL is replaced and its calls show up as lost, SIGTERM drains without cutting a call,
SIGHUP reloads code without dropping one, and /metrics, /health and /ready answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import gevent
import gevent.socket
import pytest

from esl_app.testing.peer import CallScript, connect_tcp

APP = """
from esl_app import App, Call

app = App("pools-test")

@app.route("1000", pool="inbound")
def inbound_line(call: Call) -> None:
    call.answer()
    call.playback("inbound-{version}.wav")

@app.route("2000", pool="outbound")
def dialer(call: Call) -> None:
    call.answer()
    call.playback("outbound-{version}.wav")
"""


@dataclass
class Running:
    process: subprocess.Popen
    ports: dict[str, int]
    http: int
    directory: Path

    def status(self) -> dict:
        return json.loads(self.get("/ready")[1])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in self.get("/metrics")[1].splitlines():
            key, _, value = line.rpartition(" ")
            if key == wanted:
                return float(value)
        return 0.0

    def pids(self, pool: str) -> list[int]:
        return [w["pid"] for w in self.status()["pools"][pool]["workers"] if w["state"] == "ready"]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what}")):
            while True:
                try:
                    if predicate():
                        return
                except (OSError, KeyError, ValueError):
                    pass
                gevent.sleep(0.05)

    def place(self, pool: str, **fields):
        return connect_tcp(("127.0.0.1", self.ports[pool]), CallScript(**fields)).run()


@pytest.fixture
def supervisor(tmp_path: Path):
    started: list[Running] = []

    def start(outbound_workers: int = 1, **env: str) -> Running:
        (tmp_path / "pools_app.py").write_text(textwrap.dedent(APP.format(version="v1")))
        environ = {
            **os.environ,
            "ESL_APP_POOLS__INBOUND__PORT": "0",
            "ESL_APP_POOLS__OUTBOUND__PORT": "0",
            "ESL_APP_POOLS__OUTBOUND__WORKERS": str(outbound_workers),
            "ESL_APP_HTTP_PORT": "0",
            "ESL_APP_HANGUP_WAIT": "0.2",
            "ESL_APP_STOP_DEADLINE": "10",
            "ESL_APP_RESTART_BACKOFF": "0.2",
            "ESL_APP_LOG_LEVEL": "WARNING",
            **env,
        }
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "esl_app.pools", "pools_app:app"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.PIPE,
            text=True,
        )
        ports: dict[str, int] = {}
        http = 0
        assert process.stdout is not None
        for line in process.stdout:  # blocking is fine: no greenlet runs yet
            if line.startswith("esl-app: pool "):
                words = line.split()
                ports[words[2]] = int(words[4].rpartition(":")[2])
            elif line.startswith("esl-app: http on "):
                http = int(line.split()[3].rpartition(":")[2])
            elif line.strip() == "esl-app: ready":
                break
        else:
            raise AssertionError(f"supervisor exited: {process.wait()}")
        running = Running(process, ports, http, tmp_path)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
            try:
                running.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()


def test_two_pools_run_as_separate_processes_on_their_own_ports(supervisor):
    running = supervisor(outbound_workers=2)
    # "ready" means every pool has a worker up; the second outbound worker may still be importing
    running.wait_for(lambda: len(running.pids("outbound")) == 2, what="both outbound workers")
    inbound, outbound = running.pids("inbound"), running.pids("outbound")
    assert len(inbound) == 1 and len(outbound) == 2
    assert not set(inbound) & set(outbound) and running.process.pid not in inbound + outbound
    assert running.ports["inbound"] != running.ports["outbound"]
    assert running.place("inbound", destination="1000").executed[1] == ("playback", "inbound-v1.wav")
    assert running.place("outbound", destination="2000").executed[1] == ("playback", "outbound-v1.wav")
    assert running.place("inbound", destination="2000").executed == [("respond", "404 Not Found")]
    assert running.get("/health")[0] == 200
    assert running.get("/ready")[0] == 200
    assert running.metric("esl_app_calls_accepted_total", pool="inbound") == 2
    assert running.metric("esl_app_workers", pool="outbound", state="ready") == 2


def test_overload_is_refused_at_the_door_and_counted_across_workers(supervisor):
    running = supervisor(outbound_workers=2, ESL_APP_POOLS__OUTBOUND__CAPACITY="3")
    calls = [
        gevent.spawn(running.place, "outbound", destination="2000", app_seconds={"playback": 1.0}) for _ in range(8)
    ]
    gevent.joinall(calls, timeout=20, raise_error=True)
    records = [g.value for g in calls]
    assert sum(r.verbs == ["answer", "playback"] for r in records) == 3
    refused = [r for r in records if r.variables.get("esl_app_refused") == "capacity"]
    assert len(refused) == 5 and all(r.executed[-1] == ("respond", "503 Service Unavailable") for r in refused)
    assert running.metric("esl_app_calls_refused_total", pool="outbound", reason="capacity") == 5
    assert running.metric("esl_app_refusal_seconds_count", pool="outbound") == 5
    assert running.metric("esl_app_refusal_seconds_sum", pool="outbound") / 5 < 0.001


def test_a_worker_killed_with_sigkill_is_replaced_and_its_calls_show_as_lost(supervisor):
    running = supervisor()
    held = gevent.spawn(running.place, "outbound", destination="2000", app_seconds={"playback": 30})
    running.wait_for(lambda: running.metric("esl_app_calls_active", pool="outbound") == 1, what="the held call")
    [victim] = running.pids("outbound")
    os.kill(victim, signal.SIGKILL)
    record = held.get(timeout=5)
    assert record.closed_by == "app" and record.continued_in_dialplan  # the dialplan's fallback runs
    running.wait_for(lambda: running.pids("outbound") and running.pids("outbound") != [victim], what="replacement")
    assert running.metric("esl_app_calls_lost_total", pool="outbound") == 1
    assert running.metric("esl_app_worker_restarts_total", pool="outbound", reason="SIGKILL") == 1
    assert running.metric("esl_app_calls_active", pool="outbound") == 0  # its live gauge is gone
    assert running.place("outbound", destination="2000").verbs == ["answer", "playback"]
    assert running.get("/ready")[0] == 200


def test_sigterm_drains_without_cutting_a_call(supervisor):
    running = supervisor()
    held = gevent.spawn(running.place, "inbound", destination="1000", app_seconds={"playback": 1.5})
    running.wait_for(lambda: running.metric("esl_app_calls_active", pool="inbound") == 1, what="the held call")
    running.process.send_signal(signal.SIGTERM)
    running.wait_for(lambda: running.get("/ready")[0] == 503, what="/ready to turn false")
    assert running.get("/health")[0] == 200  # alive while draining

    def refused_at_connect() -> bool:
        try:
            gevent.socket.create_connection(("127.0.0.1", running.ports["inbound"]), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    running.wait_for(refused_at_connect, timeout=5, what="new connections to be refused")
    record = held.get(timeout=10)
    assert record.verbs == ["answer", "playback"]
    assert record.hangup_cause == "NORMAL_CLEARING" and record.hung_up_by == "app"
    running.wait_for(lambda: running.process.poll() is not None, what="the supervisor to exit")
    assert running.process.returncode == 0


def test_sighup_reloads_code_without_dropping_a_call(supervisor):
    running = supervisor()
    [old] = running.pids("inbound")
    held = gevent.spawn(running.place, "inbound", destination="1000", app_seconds={"playback": 2.0})
    running.wait_for(lambda: running.metric("esl_app_calls_active", pool="inbound") == 1, what="the held call")
    (running.directory / "pools_app.py").write_text(textwrap.dedent(APP.format(version="v2")))
    running.process.send_signal(signal.SIGHUP)
    # the reload is done when the new worker serves and the old one stopped accepting (it drains)
    running.wait_for(
        lambda: running.status()["generation"] == 1 and running.pids("inbound") and old not in running.pids("inbound"),
        what="reload",
    )
    assert running.get("/ready")[0] == 200
    assert running.place("inbound", destination="1000").executed[1] == ("playback", "inbound-v2.wav")
    record = held.get(timeout=10)  # the call in flight on the old worker finished normally
    assert record.executed[1] == ("playback", "inbound-v1.wav")
    assert record.hangup_cause == "NORMAL_CLEARING" and record.hung_up_by == "app"
    running.wait_for(lambda: old not in [w["pid"] for w in running.status()["pools"]["inbound"]["workers"]])
    assert running.metric("esl_app_calls_lost_total", pool="inbound") == 0
