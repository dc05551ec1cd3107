"""Cluster settings from the environment and from the [cluster] table of the TOML file."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from esl_app.cluster.settings import ClusterSettings, Role


def test_from_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "ESL_APP_CLUSTER_NODES",
        '[{"name": "fs1", "host": "127.0.0.1", "password": "pw", "roles": "both"},'
        ' {"name": "fs2", "host": "127.0.0.2", "port": 8022, "roles": ["outbound"], "weight": 2}]',
    )
    monkeypatch.setenv("ESL_APP_CLUSTER_PROBE_INTERVAL", "0.25")
    monkeypatch.setenv("ESL_APP_CLUSTER_HEARTBEAT_INTERVAL", "1")
    settings = ClusterSettings()
    fs1, fs2 = settings.nodes
    assert fs1.roles == {Role.INBOUND, Role.OUTBOUND} and fs1.password.get_secret_value() == "pw"
    assert fs2.roles == {Role.OUTBOUND} and fs2.port == 8022 and fs2.weight == 2
    assert settings.probe_interval == 0.25
    assert settings.heartbeat_max_age == 2.5
    assert "pw" not in repr(settings)  # the password is a secret


def test_from_the_toml_cluster_table(monkeypatch, tmp_path):
    config = tmp_path / "esl-app.toml"
    config.write_text(
        "port = 9000\n"
        "[cluster]\nbusy_sessions_ratio = 0.9\nmin_idle_cpu = 5\n"
        '[[cluster.nodes]]\nname = "fs1"\nhost = "127.0.0.1"\nroles = ["inbound"]\n'
    )
    monkeypatch.setenv("ESL_APP_CONFIG_FILE", str(config))
    settings = ClusterSettings()
    assert settings.busy_sessions_ratio == 0.9 and settings.min_idle_cpu == 5
    assert [node.name for node in settings.nodes] == ["fs1"]


def test_a_toml_file_without_cluster_table_is_fine(monkeypatch, tmp_path):
    config = tmp_path / "esl-app.toml"
    config.write_text("port = 9000\n")
    monkeypatch.setenv("ESL_APP_CONFIG_FILE", str(config))
    assert ClusterSettings().nodes == []


def test_invalid_settings_are_named():
    with pytest.raises(ValidationError, match="unique"):
        ClusterSettings(nodes=[{"name": "a", "host": "h"}, {"name": "a", "host": "h2"}])
    with pytest.raises(ValidationError):
        ClusterSettings(heartbeat_interval=0.5)  # FreeSWITCH takes whole seconds, at least 1
    with pytest.raises(ValidationError):
        ClusterSettings(nodes=[{"name": "a", "host": "h", "roles": ["sideways"]}])


def test_the_shipped_password_is_refused_for_a_node_off_loopback():
    from esl_app.cluster import ClusterRegistry
    from esl_app.transport.inbound import DefaultPasswordRefused

    remote = ClusterSettings(nodes=[{"name": "fs1", "host": "10.0.0.11"}])  # password defaults to ClueCon
    with pytest.raises(DefaultPasswordRefused, match="fs1"):
        ClusterRegistry(remote)
    allowed = ClusterSettings(nodes=[{"name": "fs1", "host": "10.0.0.11", "allow_default_password": True}])
    assert ClusterRegistry(allowed).state("fs1").value == "down"  # built, not started: nothing connects
