"""The ``esl-app`` command, run as a user runs it: in subprocesses, against real TCP ports."""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import callflows.demo as demo

CLI = [sys.executable, "-m", "esl_app.cli"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("esl-app")
PROCESS_TIMEOUT = 15.0


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESL_APP_")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        cwd=cwd,
        env=env if env is not None else cli_env(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of the process's stdout, or fail after ``timeout`` (never blocks the test for good)."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], timeout)[0]:
        raise AssertionError(f"no output from {proc.args} within {timeout} s")
    return proc.stdout.readline()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


class Served:
    def __init__(self, proc: subprocess.Popen, port: int, banner: str, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.banner = banner
        self.log = log


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``esl-app serve callflows.demo:app`` on a free port given through ESL_APP_PORT."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*CLI, "serve", "callflows.demo:app"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=cli_env(ESL_APP_PORT=str(port), ESL_APP_STOP_DEADLINE="5"),
        )
    try:
        banner = read_line(proc, PROCESS_TIMEOUT)
        assert banner.startswith("esl-app: serving"), (banner, log.read_text())
        yield Served(proc, port, banner.strip(), log)
    finally:
        stop(proc)


# -- routes -----------------------------------------------------------------------------------------


def test_routes_prints_the_compiled_demo_table():
    done = run_cli("routes", "callflows.demo:app")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "callflows.demo:app: 2 routes, 1 guards"
    assert re.fullmatch(r"  exact   destination=1000 +-> main line", lines[1])
    assert re.fullmatch(r"  regex   destination=/\(\?P<extension>1\[1-9\]\\d\{2\}\)/ +-> direct extension", lines[2])
    assert lines[3] == "  default -> unknown_number"
    assert len(lines) == 4


def test_routes_through_the_console_script():
    assert CONSOLE_SCRIPT.exists(), "the package is not installed with its esl-app script"
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "routes", "callflows.demo:app"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == run_cli("routes", "callflows.demo:app").stdout


def test_routes_of_an_app_without_default_says_404(tmp_path: Path):
    (tmp_path / "tiny_pbx.py").write_text(
        textwrap.dedent(
            """
            from esl_app import App, prefix

            app = App("tiny")

            @app.route(prefix("9"), caller="1001")
            def outside(call):
                call.hangup()
            """
        )
    )
    done = run_cli("routes", "tiny_pbx:app", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "tiny_pbx:app: 1 routes, 0 guards",
        f"  prefix  {'destination=9* caller=1001':<60} -> outside",
        "  default -> 404 / UNALLOCATED_NUMBER",
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("callflows.demo", "error: expected MODULE:APP (e.g. callflows.demo:app), got 'callflows.demo'"),
        (":app", "error: expected MODULE:APP"),
        ("callflows.demo:", "error: expected MODULE:APP"),
        ("no_such_module_for_esl_app:app", "error: cannot import 'no_such_module_for_esl_app'"),
        ("callflows.demo:nothing", "error: 'callflows.demo:nothing' is not an esl_app.App (got NoneType)"),
        ("callflows.demo:is_open", "error: 'callflows.demo:is_open' is not an esl_app.App (got function)"),
    ],
)
@pytest.mark.parametrize("command", ["routes", "serve"])
def test_a_bad_module_app_is_a_clear_error(command, target, message):
    done = run_cli(command, target, "--port", "0") if command == "serve" else run_cli(command, target)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout


CONFLICTING = """
from esl_app import App

app = App("clash")

@app.route("1000")
def first(call):
    call.hangup()

@app.route("1000")
def second(call):
    call.hangup()
"""


@pytest.mark.parametrize("command", ["routes", "serve"])
def test_conflicting_routes_are_a_clear_error(tmp_path: Path, command):
    (tmp_path / "clash_pbx.py").write_text(CONFLICTING)
    env = cli_env(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    args = [command, "clash_pbx:app", *(["--port", "0"] if command == "serve" else [])]
    done = run_cli(*args, env=env)  # run from the project dir: the module is found through PYTHONPATH
    assert done.returncode == 1
    assert "error: invalid routes: routes 'first' and 'second' have the same conditions" in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout


# -- serve and simulate -----------------------------------------------------------------------------


def test_serve_listens_on_esl_app_port(served: Served):
    assert served.banner == f"esl-app: serving callflows.demo:app on 127.0.0.1:{served.port}"
    with socket.create_connection(("127.0.0.1", served.port), timeout=5):
        pass


def test_simulate_prints_the_wire_trace(served: Served):
    done = run_cli("simulate", "--port", str(served.port), "--destination", "1000", "--dtmf", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"simulating a call 1001 -> 1000 to 127.0.0.1:{served.port}\n")
    assert re.search(r"FS -> APP  connect reply: 1001 -> 1000 context default uuid \S+ \(async, full", out)
    assert "APP -> FS  sendmsg execute answer" in out
    assert "FS -> APP  event CHANNEL_HANGUP_COMPLETE NORMAL_CLEARING" in out
    assert out.index("connect reply") < out.index("sendmsg execute answer") < out.index("CHANNEL_HANGUP_COMPLETE")
    # open or closed depends on the real clock in the server: either way the call is answered and ends well
    assert re.search(
        r"^result: verbs=\['answer', 'playback'.*\] hangup_cause=NORMAL_CLEARING answered=True$", out, re.M
    )


def test_simulate_a_blocked_caller(served: Served):
    done = run_cli("simulate", "--port", str(served.port), "--caller", "666")
    assert done.returncode == 0, done.stderr
    assert "APP -> FS  sendmsg execute respond '403 Forbidden'" in done.stdout
    assert "result: verbs=['respond'] hangup_cause=CALL_REJECTED answered=False" in done.stdout


def test_simulate_repeat_prints_calls_per_second(served: Served):
    done = run_cli("simulate", "--port", str(served.port), "--repeat", "20", "--concurrency", "5")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"20 calls \(0 failed\) in [\d.]+ s: \d+ calls/s; setup latency \(connect -> first execute\) "
        r"p50 [\d.]+ ms, p99 [\d.]+ ms\n",
        done.stdout,
    )


def test_simulate_without_a_server_is_a_clear_error():
    port = free_port()
    done = run_cli("simulate", "--port", str(port))
    assert done.returncode != 0
    assert f"error: cannot reach 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_stops_serve_gracefully(served: Served):
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=5) == 0
    assert "esl-app: stopping; active calls have 5 s to finish" in served.proc.stdout.read()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", served.port), timeout=1):
        pass  # no longer listening


def test_sigterm_lets_an_active_call_finish(served: Served):
    import gevent

    from esl_app.testing.peer import CallScript, connect_tcp

    # a slow prompt keeps the call up while the server is asked to stop
    peer = connect_tcp(("127.0.0.1", served.port), CallScript(dtmf="1", app_seconds={"playback": 0.6}))
    call = gevent.spawn(peer.run)
    gevent.sleep(0.3)
    assert not call.dead
    served.proc.send_signal(signal.SIGTERM)
    record = call.get(timeout=10)
    assert record.verbs[:2] == ["answer", "playback"]
    assert record.hung_up_by == "app" and record.hangup_cause == "NORMAL_CLEARING"
    assert record.protocol_errors == []
    started = time.monotonic()
    assert served.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5


# -- demo -------------------------------------------------------------------------------------------


def test_demo_runs_every_scenario_and_a_loop():
    done = run_cli("--log-level", "WARNING", "demo", "--calls", "20")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.match(r"esl-app demo: callflows\.demo:app served on 127\.0\.0\.1:\d+; FreeSWITCH is simulated", out)
    titles = [title for title, _fields, _setup in demo.SCENARIOS]
    assert [line[3:] for line in out.splitlines() if line.startswith("== ")] == [
        *titles,
        f"a quick loop over TCP: 20 x '{titles[0]}' (not a benchmark)",
    ]
    assert out.count("FS -> APP  connect reply") == len(titles)
    assert "-> verbs ['respond'], hangup cause CALL_REJECTED" in out
    assert "-> verbs ['pre_answer', 'playback'], hangup cause UNALLOCATED_NUMBER" in out
    assert re.search(r"^20 calls \(0 failed\) in [\d.]+ s: \d+ calls/s", out, re.M)
    assert "Traceback" not in done.stderr


def test_demo_shows_the_traces_and_the_figures_not_a_line_per_loop_call():
    """At the default log level, each traced call's lines stay under its own title, and the loop's
    calls log nothing (500 "ended: NORMAL_CLEARING" lines used to bury the traces)."""
    env = cli_env(PYTHONUNBUFFERED="1")  # one stream in the order it was written
    done = subprocess.run(
        [*CLI, "demo", "--calls", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=PROCESS_TIMEOUT * 2, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    titles = [i for i, line in enumerate(lines) if line.startswith("== ")]
    assert len(titles) == len(demo.SCENARIOS) + 1
    for start, end in itertools.pairwise(titles):
        section = lines[start:end]
        assert sum(" ended: " in line for line in section) == 1, "\n".join(section)  # the traced call's end
    loop = lines[titles[-1] :]
    assert loop[0].startswith("== a quick loop over TCP: 60 x ")
    assert re.match(r"60 calls \(0 failed\) in [\d.]+ s: \d+ calls/s", loop[1]), loop
    assert len(loop) == 2, loop  # the title and the figures: no log line from the loop's calls
    assert sum(" ended: " in line for line in lines) == len(demo.SCENARIOS)


def test_demo_at_debug_level_keeps_every_line():
    done = run_cli("--log-level", "DEBUG", "demo", "--calls", "20")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(" ended: ") == len(demo.SCENARIOS) + 20


def test_demo_main_in_process(monkeypatch, capsys):
    """``main(["demo"])`` in this process: its scenarios replace ``callflows.demo.clock``."""
    from esl_app.cli import main

    monkeypatch.setattr(demo, "clock", demo.clock)  # restored after the test whatever the demo does
    assert main(["--log-level", "WARNING", "demo", "--calls", "5"]) == 0
    out = capsys.readouterr().out
    assert all(f"== {title}" in out for title, _fields, _setup in demo.SCENARIOS)
    assert "5 calls (0 failed)" in out
