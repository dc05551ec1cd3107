"""``esl-app doctor``: the host checks against a fake /proc and rlimit, the node checks against fake
FreeSWITCH nodes over real TCP, and the command's output and exit status."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from esl_app.cli import main
from esl_app.cluster.settings import ClusterSettings, NodeSettings
from esl_app.doctor import Report, Severity, check_host, check_node, check_nodes
from esl_app.doctor.node import _password_finding, core_db_location, parse_config_params, parse_status
from esl_app.testing.fake_node import FakeNode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
PASSWORD = "a-long-secret-for-tests"


def proc_tree(tmp_path: Path, port_range: str = "32769 65535", somaxconn: str = "4096") -> Path:
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "sys/net/core").mkdir(parents=True)
    (tmp_path / "sys/net/ipv4/ip_local_port_range").write_text(f"{port_range}\n")
    (tmp_path / "sys/net/core/somaxconn").write_text(f"{somaxconn}\n")
    return tmp_path


def rlimit(soft: int, hard: int | None = None):
    return lambda which: (soft, soft if hard is None else hard)


def by_check(findings):
    return {finding.check: finding for finding in findings}


# -- host ------------------------------------------------------------------------------------------


def test_a_well_tuned_host_is_all_ok(tmp_path):
    findings = check_host(proc_tree(tmp_path), rlimit(1_048_576))
    assert [f.severity for f in findings] == [Severity.OK] * 3
    assert by_check(findings)["net.ipv4.ip_local_port_range"].value == "32769-65535 (32767 ports)"
    assert Report(findings=findings).exit_code() == 0


def test_the_common_1024_open_files_is_critical_and_says_how_to_raise_it(tmp_path):
    finding = by_check(check_host(proc_tree(tmp_path), rlimit(1024, 4096)))["open files (ulimit -n)"]
    assert finding.severity is Severity.CRITICAL
    assert finding.value == "1024 (hard 4096)"
    assert "ulimit -n 65536" in finding.fix and "LimitNOFILE" in finding.fix
    assert by_check(check_host(proc_tree(tmp_path / "b"), rlimit(20000)))["open files (ulimit -n)"].severity is (
        Severity.WARNING
    )
    assert (
        by_check(check_host(proc_tree(tmp_path / "c"), rlimit(resource.RLIM_INFINITY)))[
            "open files (ulimit -n)"
        ].severity
        is Severity.OK
    )


def test_narrow_or_rtp_overlapping_port_ranges_and_a_small_backlog_are_warnings(tmp_path):
    narrow = by_check(check_host(proc_tree(tmp_path / "a", "50000 60000", "128"), rlimit(65536)))
    assert narrow["net.ipv4.ip_local_port_range"].severity is Severity.WARNING
    assert "166 new calls/s" in narrow["net.ipv4.ip_local_port_range"].why  # 10001 ports / 60 s
    assert narrow["net.core.somaxconn"].severity is Severity.WARNING
    assert "sysctl -w net.core.somaxconn=4096" in narrow["net.core.somaxconn"].fix
    overlap = by_check(check_host(proc_tree(tmp_path / "b", "1024 65535"), rlimit(65536)))
    assert overlap["net.ipv4.ip_local_port_range"].severity is Severity.WARNING
    assert "RTP" in overlap["net.ipv4.ip_local_port_range"].why
    # Linux's own default touches FreeSWITCH's default RTP range in one edge port only: not flagged
    linux_default = by_check(check_host(proc_tree(tmp_path / "c", "32768 60999"), rlimit(65536)))
    assert linux_default["net.ipv4.ip_local_port_range"].severity is Severity.OK


def test_unreadable_proc_files_are_named_not_a_traceback(tmp_path):
    findings = by_check(check_host(tmp_path, rlimit(65536)))
    assert findings["net.core.somaxconn"].severity is Severity.WARNING
    assert findings["net.core.somaxconn"].value == "unreadable"


def test_this_machine_can_be_checked():
    findings = check_host()
    assert len(findings) == 3
    assert all(finding.value for finding in findings)


# -- parsing what FreeSWITCH answers ----------------------------------------------------------------


def real_status_body() -> str:
    for line in (FIXTURES / "15_inbound_filters_log_sendevent_parsing.jsonl").read_text().splitlines():
        data = json.loads(line).get("bytes_latin1") or ""
        if "session(s) max" in data:
            return data.split("\n\n", 1)[1]
    raise AssertionError("the capture has no api status reply")


def test_status_parsing_on_a_real_1_10_12_reply():
    assert parse_status(real_status_body()) == (1000, 30)
    assert parse_status("-ERR whatever\n") == (None, None)


def test_config_params_parsing():
    text = (
        '<configuration name="switch.conf">\n <settings>\n  <param name="Max-Sessions" value="500"/>\n'
        " </settings>\n</configuration>"
    )
    assert parse_config_params(text) == {"max-sessions": "500"}
    assert parse_config_params("can't find anything\n") is None
    assert parse_config_params("<broken") is None


@pytest.mark.parametrize(
    ("params", "db_dir", "expected"),
    [
        ({}, "/var/lib/freeswitch/db", ("file", "/var/lib/freeswitch/db/core.db")),
        ({}, "/dev/shm/freeswitch", ("file", "/dev/shm/freeswitch/core.db")),
        ({"core-db-name": "/dev/shm/core.db"}, "/var/lib/freeswitch/db", ("file", "/dev/shm/core.db")),
        ({"core-db-name": "fastcore"}, "/var/lib/freeswitch/db/", ("file", "/var/lib/freeswitch/db/fastcore.db")),
        ({"core-db-dsn": "sqlite:///dev/shm/x.db", "core-db-name": "ignored"}, "/db", ("file", "/dev/shm/x.db")),
        (
            {"core-db-dsn": "sqlite://memory://file:core?mode=memory"},
            "/db",
            ("memory", "sqlite://memory://file:core?mode=memory"),
        ),
        ({"core-db-dsn": "pgsql://postgres:hunter2@db/fs"}, "/db", ("external", "pgsql://postgres:***@db/fs")),
    ],
)
def test_where_the_core_db_is_as_switch_core_sqldb_decides(params, db_dir, expected):
    assert core_db_location(params, db_dir) == expected


def test_the_default_password_is_critical_off_loopback_and_a_warning_on_it():
    def finding(check, severity, value="", why="", fix=""):
        return severity, fix

    remote = NodeSettings(name="fs1", host="10.0.0.11", allow_default_password=True)
    assert _password_finding(remote, finding)[0] is Severity.CRITICAL
    assert "event_socket.conf.xml" in _password_finding(remote, finding)[1]
    assert _password_finding(NodeSettings(name="fs1", host="127.0.0.1"), finding)[0] is Severity.WARNING
    assert _password_finding(NodeSettings(name="fs1", host="10.0.0.11", password="x" * 20), finding)[0] is Severity.OK


# -- nodes over TCP ---------------------------------------------------------------------------------


def settings_for(*nodes: FakeNode, **overrides) -> ClusterSettings:
    values = dict(
        nodes=[{"name": n.name, "host": n.host, "port": n.port, "password": n.password} for n in nodes],
        heartbeat_interval=1,
        connect_timeout=3.0,
        command_timeout=10.0,
    )
    values.update(overrides)
    return ClusterSettings(**values)


def tuned_node(name: str = "fs1") -> FakeNode:
    node = FakeNode(name, password=PASSWORD, heartbeat_interval=0.3, max_sessions=800, sessions_per_second=40)
    node.config_params = {
        "switch.conf": {"api-expansion": "false", "core-db-name": "/dev/shm/core.db"},
        "event_socket.conf": {"apply-inbound-acl": "esl_app"},
    }
    return node.start()


def test_a_node_configured_like_docker_freeswitch_passes_every_check():
    node = tuned_node()
    try:
        findings = check_node(settings_for(node).nodes[0], settings_for(node), heartbeat_wait=10.0)
    finally:
        node.stop()
    checks = by_check(findings)
    assert all(f.severity is Severity.OK for f in findings), Report(findings=findings).format_text()
    assert set(checks) == {
        "event socket password", "event socket", "max-sessions", "sessions-per-second",
        "event-heartbeat-interval", "core db", "api-expansion", "event socket ACL",
    }  # fmt: skip
    assert checks["max-sessions"].value == "800 sessions"
    assert checks["sessions-per-second"].value == "40 new sessions/s"
    assert checks["core db"].value == "/dev/shm/core.db (tmpfs)"
    assert checks["event-heartbeat-interval"].value.startswith("measured 0.")
    assert PASSWORD not in Report(findings=findings).format_text()


def test_a_stock_node_gets_a_fix_for_each_problem():
    node = FakeNode("stock", heartbeat_interval=0.3).start()  # ClueCon on loopback, core db on disk
    try:
        node.run_api("fsctl max_sessions 1500")  # changed at run time, not in switch.conf
        settings = settings_for(node)
        checks = by_check(check_node(settings.nodes[0], settings, heartbeat_wait=10.0))
    finally:
        node.stop()
    assert checks["event socket password"].severity is Severity.WARNING
    assert checks["max-sessions"].severity is Severity.WARNING
    assert checks["max-sessions"].value == "1500 sessions, switch.conf says 1000"
    assert "restart" in checks["max-sessions"].why
    assert checks["core db"].severity is Severity.WARNING
    assert checks["core db"].value == "/var/lib/freeswitch/db/core.db (disk)"
    assert "/dev/shm" in checks["core db"].fix
    assert checks["api-expansion"].severity is Severity.WARNING
    assert checks["event socket ACL"].severity is Severity.OK  # listening on loopback only
    for finding in checks.values():
        if finding.severity is not Severity.OK:
            assert finding.fix, finding


def test_a_heartbeat_slower_than_the_cluster_tolerates_is_critical():
    node = FakeNode("slow", password=PASSWORD, heartbeat_interval=30.0).start()  # switch.conf says 30
    try:
        settings = settings_for(node)
        findings = check_node(settings.nodes[0], settings, heartbeat_wait=0.5)
    finally:
        node.stop()
    heartbeat = by_check(findings)["event-heartbeat-interval"]
    assert heartbeat.severity is Severity.CRITICAL
    assert "switch.conf: 30 s" in heartbeat.value
    assert 'event-heartbeat-interval" value="1"' in heartbeat.fix
    assert Report(findings=findings).exit_code() == 1


def test_a_heartbeat_set_in_the_file_but_not_yet_running_says_restart():
    node = FakeNode("stale", password=PASSWORD, heartbeat_interval=30.0)
    node.config_params = {"switch.conf": {"event-heartbeat-interval": "1"}}
    node.start()
    try:
        settings = settings_for(node, heartbeat_interval=20)
        heartbeat = by_check(check_node(settings.nodes[0], settings, heartbeat_wait=0.5))["event-heartbeat-interval"]
    finally:
        node.stop()
    assert heartbeat.severity is Severity.WARNING
    assert "restart" in heartbeat.fix


def test_cluster_settings_that_disagree_with_the_node_are_named():
    node = tuned_node()
    try:
        settings = settings_for(node, heartbeat_interval=20)  # the node beats every second
        heartbeat = by_check(check_node(settings.nodes[0], settings, heartbeat_wait=10.0))["event-heartbeat-interval"]
    finally:
        node.stop()
    assert heartbeat.severity is Severity.WARNING
    assert "heartbeat_interval = 1 in [cluster]" in heartbeat.fix


def test_unreachable_refused_and_wrong_password_nodes_are_critical_with_the_reason():
    stopped = FakeNode("gone", password=PASSWORD).start()
    stopped.stop()
    denied = FakeNode("denied", password=PASSWORD).start()
    denied.deny_clients()
    wrong = FakeNode("wrong", password="another-secret-entirely").start()
    try:
        settings = settings_for(stopped, denied, wrong, connect_timeout=1.0)
        nodes = [node.model_dump() for node in settings.nodes]
        nodes[2]["password"] = PASSWORD  # not the node's
        settings = settings_for(stopped, denied, wrong, connect_timeout=1.0, nodes=nodes)
        findings = check_nodes(settings, heartbeat_wait=0.5)
    finally:
        denied.stop()
        wrong.stop()
    socket_findings = {f.scope.split()[1]: f for f in findings if f.check == "event socket"}
    assert {name: f.severity for name, f in socket_findings.items()} == {
        "gone": Severity.CRITICAL, "denied": Severity.CRITICAL, "wrong": Severity.CRITICAL,
    }  # fmt: skip
    assert "rude-rejection" in socket_findings["denied"].why
    assert "refused the password" in socket_findings["wrong"].why
    assert "listen-ip" in socket_findings["gone"].fix


# -- the command ------------------------------------------------------------------------------------


def test_the_command_checks_every_configured_node_and_exits_1_on_critical(monkeypatch, capsys):
    good, slow = tuned_node("good"), FakeNode("slow", password=PASSWORD, heartbeat_interval=30.0).start()
    nodes = [{"name": n.name, "host": n.host, "port": n.port, "password": n.password} for n in (good, slow)]
    monkeypatch.setenv("ESL_APP_CLUSTER_NODES", json.dumps(nodes))
    monkeypatch.setenv("ESL_APP_CLUSTER_HEARTBEAT_INTERVAL", "1")
    monkeypatch.delenv("ESL_APP_CONFIG_FILE", raising=False)
    try:
        status = main(["doctor", "--heartbeat-wait", "3"])
    finally:
        good.stop()
        slow.stop()
    out = capsys.readouterr().out
    assert status == 1
    assert f"node good (127.0.0.1:{good.port})" in out and f"node slow (127.0.0.1:{slow.port})" in out
    assert "CRITICAL  event-heartbeat-interval" in out
    assert "fix: " in out
    assert out.rstrip().splitlines()[-1].startswith("1 critical")


def test_the_command_is_found_automatically_and_prints_json(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "esl_app.cli", "doctor", "--no-nodes", "--json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["check"] for line in lines] == [
        "open files (ulimit -n)",
        "net.ipv4.ip_local_port_range",
        "net.core.somaxconn",
    ]
    critical = any(line["severity"] == "critical" for line in lines)
    assert result.returncode == (1 if critical else 0)
