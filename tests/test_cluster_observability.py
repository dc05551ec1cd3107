"""``esl-app cluster status|pause|resume``, the Prometheus collector and the state-change log lines,
against fake nodes over TCP."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from esl_app.cli import main
from esl_app.cluster import ClusterRegistry, ClusterSettings, NodeState
from esl_app.cluster.metrics import register
from esl_app.testing.fake_node import FakeNode


@pytest.fixture
def nodes():
    started = [FakeNode(f"fs{i}", heartbeat_interval=1.0).start() for i in (1, 2, 3)]
    yield started
    for node in started:
        node.stop()


@pytest.fixture
def cluster_env(nodes, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no esl-app.toml or .env of the developer's
    monkeypatch.setenv(
        "ESL_APP_CLUSTER_NODES",
        json.dumps([{"name": n.name, "host": n.host, "port": n.port, "password": n.password} for n in nodes]),
    )
    monkeypatch.setenv("ESL_APP_CLUSTER_PROBE_INTERVAL", "0.25")
    monkeypatch.setenv("ESL_APP_CLUSTER_HEARTBEAT_INTERVAL", "1")
    return nodes


def test_status_prints_one_line_per_node(cluster_env, capsys):
    nodes = cluster_env
    nodes[0].set_load(sessions=12)
    assert main(["cluster", "status", "--settle", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:7] == ["node", "state", "sessions", "idle", "cpu", "sess/s", "heartbeat"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == {"fs1", "fs2", "fs3"}
    assert all(row[1] == "up" for row in rows.values())
    assert rows["fs1"][2] == "12/1000"
    assert rows["fs1"][3] == "99.0%"
    assert rows["fs1"][5] != "-" and rows["fs1"][5].endswith("s")  # heartbeat age: one was heard
    assert rows["fs1"][6].endswith("ms")  # probe round trip


def test_pause_drains_the_node_for_every_process_and_resume_undoes_it(cluster_env, capsys):
    nodes = cluster_env
    assert main(["cluster", "pause", "fs2", "--direction", "inbound"]) == 0
    assert nodes[1].paused_inbound and not nodes[1].paused_outbound
    assert main(["cluster", "status", "--json", "--settle", "10"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_name = {node["name"]: node for node in lines}
    assert by_name["fs2"]["state"] == "draining" and by_name["fs2"]["paused"] == ["inbound"]
    assert main(["cluster", "resume", "fs2", "--direction", "inbound"]) == 0
    assert not nodes[1].paused_inbound


def test_status_exits_1_when_a_node_is_down(cluster_env, capsys):
    cluster_env[2].crash()
    assert main(["cluster", "status", "--settle", "2"]) == 1
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["fs3"][1] == "down"


def test_unknown_node_and_missing_settings_are_named(cluster_env, monkeypatch):
    with pytest.raises(SystemExit, match="no node 'fs9'"):
        main(["cluster", "pause", "fs9"])
    monkeypatch.delenv("ESL_APP_CLUSTER_NODES")
    with pytest.raises(SystemExit, match="no cluster nodes configured"):
        main(["cluster", "status"])


def test_gauges_per_node_and_a_log_line_per_state_change(nodes, caplog):
    settings = ClusterSettings(
        nodes=[{"name": n.name, "host": n.host, "port": n.port} for n in nodes], probe_interval=0.25,
        heartbeat_interval=1, reconnect_min=0.05,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="esl_app.cluster")
    cluster = ClusterRegistry(settings).start()
    try:
        assert cluster.wait_until(lambda: all(cluster.state(n.name) is NodeState.UP for n in nodes), 10)
        nodes[0].set_load(sessions=850)
        assert cluster.wait_until(lambda: cluster.state("fs1") is NodeState.BUSY, 10)
        assert cluster.wait_until(lambda: cluster.health("fs2").last_heartbeat_at is not None, 10)
        registry = CollectorRegistry()
        register(cluster, registry)
        text = generate_latest(registry).decode()
        assert 'esl_app_cluster_node_state{node="fs1",state="busy"} 1.0' in text
        assert 'esl_app_cluster_node_state{node="fs1",state="up"} 0.0' in text
        assert 'esl_app_cluster_node_sessions{node="fs1"} 850.0' in text
        assert 'esl_app_cluster_node_max_sessions{node="fs2"} 1000.0' in text
        assert 'esl_app_cluster_node_idle_cpu_percent{node="fs3"} 99.0' in text
        assert 'esl_app_cluster_node_heartbeat_age_seconds{node="fs2"}' in text
        assert 'esl_app_cluster_node_probe_rtt_seconds{node="fs3"}' in text
        assert 'esl_app_cluster_node_state_changes_total{node="fs1",state="busy"} 1.0' in text
        assert 'esl_app_cluster_node_restarts_total{node="fs1"} 0.0' in text
    finally:
        cluster.stop()
    messages = [record.getMessage() for record in caplog.records if record.name == "esl_app.cluster"]
    assert any(m.startswith("cluster node fs1: down -> up") for m in messages), messages
    assert any(m.startswith("cluster node fs1: up -> busy (850/1000 sessions)") for m in messages), messages
