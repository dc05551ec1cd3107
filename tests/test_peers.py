"""Who may connect (issue 16 part 5): an allow-list of FreeSWITCH addresses and networks, checked at
accept over real TCP. A denied peer (a client socket bound to 127.0.0.2) sees the connection close
before any byte; it is counted in ``esl_app_connections_denied_total`` and never reaches the door."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gevent
import gevent.socket
import pytest
from pydantic import ValidationError

from esl_app import App, Call
from esl_app.metrics import PoolMetrics
from esl_app.pools import PoolWorker
from esl_app.session import SessionSettings
from esl_app.settings import PoolSettings, Settings
from esl_app.testing.peer import CallScript, connect_tcp
from esl_app.transport import OutboundServer
from esl_app.transport.peers import PeerFilter, PeerListError, parse_entry

ALLOWED, DENIED = "127.0.0.1", "127.0.0.2"
CLI = [sys.executable, "-m", "esl_app.cli"]


def first_bytes(port: int, source: str, sock_module=gevent.socket) -> bytes:
    """Connect from ``source`` and read what the server sends first ("connect" when admitted, b"" when
    the connection is closed at accept)."""
    sock = sock_module.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return b""
    finally:
        sock.close()


def make_app() -> App:
    app = App("peers-test", SessionSettings(hangup_wait=0.2))

    @app.route("1000")
    def line(call: Call) -> None:
        call.answer()

    return app


# -- the list --------------------------------------------------------------------------------------


def test_addresses_networks_ipv6_and_mapped_ipv4_peers():
    peers = PeerFilter(["10.0.0.5", "192.168.0.0/16", "2001:db8::/32", "::1"])
    assert peers.allows("10.0.0.5") and not peers.allows("10.0.0.6")
    assert peers.allows("192.168.44.1") and not peers.allows("192.169.0.1")
    assert peers.allows("2001:db8::7") and not peers.allows("2001:db9::7")
    assert peers.allows("::1") and not peers.allows("::2")
    assert peers.allows("::ffff:10.0.0.5")  # an IPv4 peer on a dual-stack listener
    assert peers.allows("fe80::1%eth0") is False and PeerFilter(["fe80::/10"]).allows("fe80::1%eth0")
    assert not peers.allows("not-an-address")
    assert peers.allows("10.0.0.5")  # from the cache now: same verdict
    assert PeerFilter.build(["any"]) is None and PeerFilter.build(["10.0.0.1", "ANY"]) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.5/24", "'10.0.0.5/24' has host bits set: did you mean 10.0.0.0/24?"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address, a CIDR network or 'any'"),
        ("freeswitch1", "'freeswitch1' is not an IP address, a CIDR network or 'any'"),
    ],
)
def test_a_bad_entry_is_a_clear_error_naming_it(entry, message):
    with pytest.raises(PeerListError, match="^" + message.replace("?", r"\?").replace(".", r"\.") + "$"):
        parse_entry(entry)
    with pytest.raises(ValidationError, match="allow_from"):
        Settings(allow_from=[entry])
    with pytest.raises(ValidationError, match=r"pools\.inbound\.allow_from"):
        Settings(pools={"inbound": {"allow_from": entry}})


def test_settings_default_to_loopback_and_read_lists_from_the_environment(monkeypatch):
    peers = Settings().peer_filter()
    assert peers is not None and peers.entries == ("127.0.0.0/8", "::1") and peers.only_loopback()
    monkeypatch.setenv("ESL_APP_ALLOW_FROM", "10.0.0.5, 10.0.1.0/24")
    monkeypatch.setenv("ESL_APP_POOLS__OUTBOUND__ALLOW_FROM", '["10.9.0.0/16"]')
    settings = Settings()
    assert settings.allow_from == ["10.0.0.5", "10.0.1.0/24"]
    assert settings.peer_filter("inbound").entries == ("10.0.0.5", "10.0.1.0/24")  # the global list
    assert settings.peer_filter("outbound").entries == ("10.9.0.0/16",)  # its own
    with pytest.raises(ValidationError, match="the allow-list is empty"):
        Settings(allow_from=[])


# -- over TCP, in process --------------------------------------------------------------------------


def test_single_server_closes_a_denied_peer_before_any_byte():
    denied: list[str] = []
    server = OutboundServer(
        make_app().handle, "127.0.0.1", 0, peers=PeerFilter([f"{ALLOWED}/32"]), on_denied=denied.append
    )
    server.start()
    try:
        port = server.address[1]
        assert first_bytes(port, DENIED) == b""
        assert denied == [DENIED] and server.denied == 1 and server.accepted == 0
        assert first_bytes(port, ALLOWED).startswith(b"connect\n\n")
        record = connect_tcp(("127.0.0.1", port), CallScript(destination="1000")).run()
        assert record.verbs == ["answer"]
        assert server.denied == 1
    finally:
        server.stop(2)


def test_a_pool_worker_counts_denied_peers_and_they_never_reach_the_door():
    metrics = PoolMetrics("inbound")
    app = make_app()
    app.observer = metrics
    worker = PoolWorker(app, "inbound", PoolSettings(port=0, capacity=1), metrics=metrics,
                        peers=PeerFilter([f"{ALLOWED}/32"]))  # fmt: skip
    worker.start()
    try:
        port = worker.address[1]
        for _ in range(3):
            assert first_bytes(port, DENIED) == b""
        sample = metrics.registry.get_sample_value
        assert sample("esl_app_connections_denied_total", {"pool": "inbound"}) == 3
        assert worker.admission.admitted == 0 and worker.admission.refused["capacity"] == 0
        record = connect_tcp(("127.0.0.1", port), CallScript(destination="1000")).run()
        assert record.verbs == ["answer"]  # the denied peers took no capacity (capacity 1)
        assert sample("esl_app_calls_accepted_total", {"pool": "inbound"}) == 1
    finally:
        worker.drain(2)


# -- esl-app serve, both modes ---------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESL_APP_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    return {**env, "ESL_APP_LOG_LEVEL": "WARNING", "ESL_APP_STOP_DEADLINE": "3", **extra}


def _lines_until(proc: subprocess.Popen, last: str, timeout: float = 30.0) -> list[str]:
    """stdout lines up to the one starting with ``last`` (unbuffered reads: select sees every byte)."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line.strip() for line in data.decode().splitlines(keepends=True) if line.endswith("\n")]
        if lines and any(line.startswith(last) for line in lines):
            return lines
        if not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            raise AssertionError(f"no {last!r} line within {timeout} s; got {lines}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"esl-app exited ({proc.wait()}); got {lines}")
        data += chunk


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_serve_single_takes_allow_from_on_the_command_line():
    proc = subprocess.Popen(
        [*CLI, "serve", "callflows.demo:app", "--single", "--port", "0", "--allow-from", f"{ALLOWED}/32"],
        stdout=subprocess.PIPE, bufsize=0, env=_env(),
    )  # fmt: skip
    try:
        lines = _lines_until(proc, "esl-app: accepting calls from")
        port = int(lines[0].rpartition(":")[2])
        assert f"esl-app: accepting calls from {ALLOWED}/32" in lines
        assert first_bytes(port, DENIED, socket) == b""
        assert first_bytes(port, ALLOWED, socket).startswith(b"connect\n\n")
    finally:
        _stop(proc)


def test_serve_pools_denies_at_accept_and_shows_it_in_metrics(tmp_path: Path):
    proc = subprocess.Popen(
        [*CLI, "serve", "callflows.demo:app", "--pools"],
        stdout=subprocess.PIPE, bufsize=0, cwd=tmp_path,
        env=_env(ESL_APP_ALLOW_FROM=f"{ALLOWED}/32", ESL_APP_POOLS__INBOUND__PORT="0",
                 ESL_APP_POOLS__OUTBOUND__WORKERS="0", ESL_APP_HTTP_PORT="0",
                 PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )  # fmt: skip
    try:
        lines = _lines_until(proc, "esl-app: ready")
        pool = next(line for line in lines if line.startswith("esl-app: pool inbound on "))
        port = int(pool.split()[4].rpartition(":")[2])
        http = int(next(line for line in lines if line.startswith("esl-app: http on ")).split()[3].rpartition(":")[2])
        assert pool.endswith(f"allow {ALLOWED}/32)")
        assert first_bytes(port, DENIED, socket) == b""
        assert first_bytes(port, DENIED, socket) == b""
        assert first_bytes(port, ALLOWED, socket).startswith(b"connect\n\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert 'esl_app_connections_denied_total{pool="inbound"} 2.0' in text
    finally:
        _stop(proc)


def test_serve_refuses_to_start_on_a_bad_allow_list():
    done = subprocess.run(
        [*CLI, "serve", "callflows.demo:app", "--single", "--port", "0", "--allow-from", "10.0.0.5/8"],
        capture_output=True, text=True, timeout=30, env=_env(),
    )  # fmt: skip
    assert done.returncode != 0
    assert "error: invalid settings" in done.stderr and "'10.0.0.5/8' has host bits set" in done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stdout
    done = subprocess.run(
        [*CLI, "serve", "callflows.demo:app", "--pools"],
        capture_output=True, text=True, timeout=30, env=_env(ESL_APP_POOLS__INBOUND__ALLOW_FROM="bogus"),
    )  # fmt: skip
    assert done.returncode != 0 and "'bogus' is not an IP address" in done.stderr
    assert "Traceback" not in done.stderr
