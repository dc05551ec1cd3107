"""Exactly-once originate decisions for node answers a fake node cannot give (a refused bgapi, a
write that timed out, a refusal whose call exists after all), with a scripted client per node."""

from __future__ import annotations

import pytest

from esl_app.cluster import ClusterRegistry, ClusterSettings, NodeState, OriginateTarget, Originator
from esl_app.cluster.dialstring import UnsafeOriginateArgument, parse_originate
from esl_app.transport.inbound import CommandFailed, CommandTimeout, JobLost

STATUS = (
    "UP 0 years, 0 days, 0 hours, 5 minutes, 0 seconds, 0 milliseconds, 0 microseconds\n"
    "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready\n"
    "0 session(s) since startup\n{sessions} session(s) - peak 0, last 5min 0 \n"
    "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n1000 session(s) max\nmin idle cpu 0.00/99.00\n"
)
PARK = OriginateTarget(app="park")


class ScriptedJob:
    def __init__(self, outcome):
        self.outcome = outcome

    def wait(self, timeout=None):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class ScriptedClient:
    """Answers the probe like an idle node; ``bgapi`` and ``uuid_exists`` do what the test says."""

    def __init__(self, host, port, password, *, name, on_state, **_):
        self.name, self.on_state = name, on_state
        self.connected = False
        self.sessions = {"fs1": 0, "fs2": 10, "fs3": 20}[name]  # fs1 is chosen first, then fs2
        self.job: object = "+OK"
        self.bgapi_error: BaseException | None = None
        self.exists = "false"
        self.sent: list[str] = []

    def start(self):
        self.connected = True
        self.on_state(self, "connected", None)
        return self

    def stop(self, timeout=1.0):
        self.connected = False

    def wait_connected(self, timeout=None):
        return self.connected

    def api(self, command, timeout=None):
        if command == "status":
            return STATUS.format(sessions=self.sessions)
        if command.startswith("fsctl pause_check"):
            return "false"
        if command.startswith("uuid_exists"):
            self.sent.append(command)
            return self.exists
        return "-ERR unknown"

    def bgapi(self, command, job_uuid=None, timeout=None):
        if self.bgapi_error is not None:
            raise self.bgapi_error
        self.sent.append(command)
        return ScriptedJob(self.job)


@pytest.fixture
def cluster():
    settings = ClusterSettings(
        nodes=[{"name": f"fs{i}", "host": "127.0.0.1", "port": 8021} for i in (1, 2, 3)],
        probe_interval=0.25, heartbeat_interval=1, reconcile_timeout=1.0,
    )  # fmt: skip
    registry = ClusterRegistry(settings, client_factory=ScriptedClient).start()
    assert registry.wait_until(lambda: all(registry.state(n) is NodeState.UP for n in registry.monitors), 5)
    yield registry
    registry.stop()


def client(cluster, name) -> ScriptedClient:
    return cluster.client(name)


def test_a_refused_bgapi_is_asked_about_then_the_next_node_places_the_call(cluster):
    client(cluster, "fs1").job = CommandFailed("bgapi originate", "-ERR permission denied\n")
    result = Originator(cluster).originate("user/1000", PARK, timeout=5)
    assert (result.status, result.node) == ("placed", "fs2")
    assert [(a.node, a.outcome) for a in result.attempts] == [("fs1", "refused"), ("fs2", "placed")]
    assert client(cluster, "fs1").sent[-1] == f"uuid_exists {result.origination_uuid}"
    # the same origination_uuid on both nodes: it names one call in the whole cluster
    assert parse_originate(client(cluster, "fs2").sent[0]).variables["origination_uuid"] == result.origination_uuid


def test_a_refusal_whose_call_exists_after_all_counts_as_placed(cluster):
    client(cluster, "fs1").job = "-ERR DESTINATION_OUT_OF_ORDER\n"
    client(cluster, "fs1").exists = "true"
    result = Originator(cluster).originate("user/1000", PARK, timeout=5)
    assert (result.status, result.node, result.attempts[0].outcome) == ("placed", "fs1", "exists")
    assert not any(cmd.startswith("originate") for cmd in client(cluster, "fs2").sent)


@pytest.mark.parametrize(
    "failure",
    [CommandTimeout("write timed out"), JobLost("connection lost before the result", job_uuid="j", accepted=True)],
    ids=["write-timeout", "job-lost"],
)
def test_a_command_that_may_have_run_is_unknown_never_retried(cluster, failure):
    if isinstance(failure, JobLost):
        client(cluster, "fs1").job = failure
    else:
        client(cluster, "fs1").bgapi_error = failure
    result = Originator(cluster).originate("user/1000", PARK, timeout=5)
    assert (result.status, result.node, [a.outcome for a in result.attempts]) == ("unknown", "fs1", ["unknown"])
    assert client(cluster, "fs2").sent == [] and client(cluster, "fs3").sent == []


def test_may_have_run_and_exists_is_placed(cluster):
    client(cluster, "fs1").job = JobLost("connection lost before the result", job_uuid="j", accepted=True)
    client(cluster, "fs1").exists = "true"
    result = Originator(cluster).originate("user/1000", PARK, timeout=5)
    assert (result.status, result.node) == ("placed", "fs1")


def test_opting_in_retries_after_a_lost_connection_when_the_node_says_false(cluster):
    cluster.settings = cluster.settings.model_copy(update={"failover_on_lost_connection": True})
    client(cluster, "fs1").job = JobLost("connection lost before the result", job_uuid="j", accepted=True)
    result = Originator(cluster).originate("user/1000", PARK, timeout=5)
    assert (result.status, result.node) == ("placed", "fs2")


def test_nothing_is_sent_when_the_attempt_cannot_be_written_down_or_a_value_is_unsafe(cluster):
    def fail(attempt):
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        Originator(cluster).originate("user/1000", PARK, timeout=5, on_attempt=fail)
    with pytest.raises(UnsafeOriginateArgument):
        Originator(cluster).originate("user/1000", PARK, variables={"name": "${system(reboot)}"})
    assert all(client(cluster, name).sent == [] for name in cluster.monitors)
    assert all(len(cluster.health(name).in_flight) == 0 for name in cluster.monitors)
