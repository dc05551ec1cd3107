"""The cluster against three fake FreeSWITCH nodes over real TCP: node choice, down detection,
restarts, busy and paused nodes, and exactly-once originate with failover.

Waits are event-based and bounded (``registry.wait_until``, greenlet joins); durations are measured
with the monotonic clock from the state changes the registry recorded, never by sleeping.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import pytest

from esl_app.cluster import (
    ClusterRegistry,
    ClusterSettings,
    NodeState,
    OriginateTarget,
    Originator,
    StateChange,
)
from esl_app.testing.fake_node import FakeNode

PARK = OriginateTarget(app="park")
SETTLE = 10.0  # the longest any test waits for the cluster to notice something (a loaded CI box)


@pytest.fixture
def nodes():
    started = [FakeNode(f"fs{i}", heartbeat_interval=1.0).start() for i in (1, 2, 3)]
    yield started
    for node in started:
        node.stop()


def cluster_settings(nodes, **overrides) -> ClusterSettings:
    values = dict(
        nodes=[
            {"name": node.name, "host": node.host, "port": node.port, "password": node.password} for node in nodes
        ],
        probe_interval=0.25,
        probe_timeout=1.0,
        heartbeat_interval=1,
        reconnect_min=0.05,
        reconnect_max=0.25,
        reconcile_timeout=2.0,
        job_timeout=20.0,
    )
    values.update(overrides)
    return ClusterSettings(**values)


@pytest.fixture
def registry(nodes):
    cluster = ClusterRegistry(cluster_settings(nodes)).start()
    assert cluster.wait_until(lambda: all_in(cluster, NodeState.UP), SETTLE), cluster.snapshot()
    yield cluster
    cluster.stop()


def all_in(cluster: ClusterRegistry, state: NodeState) -> bool:
    return all(cluster.state(name) is state for name in cluster.monitors)


def sees_sessions(cluster: ClusterRegistry, name: str, sessions: int) -> bool:
    load = cluster.health(name).load
    return load is not None and load.sessions == sessions


def placed_to(nodes, destination: str) -> dict[str, int]:
    return {node.name: node.calls_to(destination) for node in nodes}


def test_least_loaded_node_gets_the_call(nodes, registry):
    for node, load in zip(nodes, (300, 20, 150), strict=True):
        node.set_load(sessions=load)
    assert registry.wait_until(
        lambda: all(sees_sessions(registry, n.name, load) for n, load in zip(nodes, (300, 20, 150), strict=True)),
        SETTLE,
    )
    assert registry.pick("outbound").name == "fs2"
    result = Originator(registry).originate("sofia/gateway/gw1/1000", PARK, timeout=5)
    assert result.status == "placed" and result.node == "fs2", result
    assert placed_to(nodes, "1000") == {"fs1": 0, "fs2": 1, "fs3": 0}
    assert nodes[1].call(result.origination_uuid) is not None  # esl-app chose the channel's UUID
    assert registry.call_exists("fs2", result.origination_uuid, timeout=5) is True
    assert registry.call_exists("fs1", result.origination_uuid, timeout=5) is False


def test_equal_nodes_share_the_calls_evenly(nodes, registry):
    originator = Originator(registry)
    jobs = [gevent.spawn(originator.originate, "sofia/gateway/gw1/1000", PARK, timeout=5) for _ in range(30)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert all(job.value.status == "placed" for job in jobs)
    counts = placed_to(nodes, "1000")
    assert sum(counts.values()) == 30
    assert max(counts.values()) - min(counts.values()) <= 2, counts
    # and one after another, each call seeing the previous ones only as in-flight or in readings
    for _ in range(9):
        assert originator.originate("sofia/gateway/gw1/2000", PARK, timeout=5).placed
    counts = placed_to(nodes, "2000")
    assert sorted(counts.values()) == [3, 3, 3], counts


def test_killed_node_is_down_within_one_second(nodes, registry):
    downs: list[StateChange] = []
    registry.on_change(lambda change: downs.append(change) if change.new is NodeState.DOWN else None)
    killed_at = time.monotonic()
    nodes[1].crash()
    assert registry.wait_until(lambda: registry.state("fs2") is NodeState.DOWN, SETTLE)
    change = [c for c in registry.history if isinstance(c, StateChange) and c.node == "fs2"][-1]
    assert change.new is NodeState.DOWN and change.old is NodeState.UP
    assert change.at - killed_at < 1.0, f"down after {change.at - killed_at:.3f} s ({change.reason})"
    assert registry.state("fs1") is NodeState.UP and registry.state("fs3") is NodeState.UP
    assert registry.wait_until(lambda: [c.node for c in downs] == ["fs2"], SETTLE)  # subscribers told
    for _ in range(10):
        assert registry.pick("outbound").name != "fs2"


def test_a_node_that_stops_answering_is_down_by_its_probe(nodes):
    # the connection stays open but nothing comes back: only the probe (and heartbeat age) can tell.
    # An api that never returns blocks FreeSWITCH's listener for that socket, events included (4.1).
    cluster = ClusterRegistry(cluster_settings(nodes[:1])).start()
    release = gevent.event.Event()
    try:
        assert cluster.wait_until(lambda: all_in(cluster, NodeState.UP), SETTLE)
        hung_at = time.monotonic()
        nodes[0]._api_status = lambda rest, args: release.wait(30) and ""
        assert cluster.wait_until(lambda: cluster.state("fs1") is NodeState.DOWN, SETTLE)
        change = [c for c in cluster.history if isinstance(c, StateChange)][-1]
        assert change.at - hung_at < 1.0 + 0.25 + 0.5, change  # probe timeout + interval + slack
        assert "probe" in change.reason
    finally:
        release.set()
        cluster.stop()


def test_restart_is_detected_and_raised_to_subscribers(nodes, registry):
    restarts = []
    registry.on_restart(restarts.append)
    old_core = nodes[2].core_uuid
    # the registry knows the node's identity (from `global_getvar core_uuid` or a heartbeat) ...
    assert registry.wait_until(lambda: registry.health("fs3").core_uuid == old_core, SETTLE)
    nodes[2].restart()  # back at once on the same port, with a new Core-UUID
    assert registry.wait_until(lambda: bool(restarts), SETTLE), registry.snapshot()
    assert restarts[0].node == "fs3"
    assert restarts[0].old_core_uuid == old_core
    assert registry.wait_until(lambda: registry.health("fs3").core_uuid == nodes[2].core_uuid, SETTLE)
    assert registry.wait_until(lambda: registry.state("fs3") is NodeState.UP, SETTLE)
    assert len(restarts) == 1
    assert registry.restarts_total == {"fs3": 1}


def test_a_node_at_eighty_percent_gets_no_new_originate(nodes, registry):
    nodes[0].set_load(sessions=800)  # of 1000
    nodes[1].set_max_sessions(10)
    nodes[1].set_load(sessions=8)  # 80% of a small node
    assert registry.wait_until(
        lambda: registry.state("fs1") is NodeState.BUSY and registry.state("fs2") is NodeState.BUSY, SETTLE
    )
    originator = Originator(registry)
    results = [originator.originate("sofia/gateway/gw1/3000", PARK, timeout=5) for _ in range(12)]
    assert all(r.node == "fs3" for r in results), [r.node for r in results]
    assert placed_to(nodes, "3000") == {"fs1": 0, "fs2": 0, "fs3": 12}


def test_an_originate_whose_node_dies_mid_job_is_never_placed_twice(nodes, registry):
    for node in nodes:
        node.set_outcome("4000", "answer", ring_seconds=30)  # rings until the node dies
    job = gevent.spawn(Originator(registry).originate, "sofia/gateway/gw1/4000", PARK, timeout=40)
    assert registry.wait_until(lambda: sum(placed_to(nodes, "4000").values()) == 1, SETTLE)
    ringing = next(node for node in nodes if node.calls_to("4000"))
    ringing.crash()
    result = job.get(timeout=SETTLE)
    assert result.status == "unknown" and result.node == ringing.name, result
    assert [a.outcome for a in result.attempts] == ["unknown"]
    assert "unreachable" in result.attempts[0].detail
    assert sum(placed_to(nodes, "4000").values()) == 1


def test_a_node_that_restarts_mid_job_is_not_retried_elsewhere(nodes, registry):
    for node in nodes:
        node.set_outcome("4100", "answer", ring_seconds=30)
    job = gevent.spawn(Originator(registry).originate, "sofia/gateway/gw1/4100", PARK, timeout=40)
    assert registry.wait_until(lambda: sum(placed_to(nodes, "4100").values()) == 1, SETTLE)
    ringing = next(node for node in nodes if node.calls_to("4100"))
    ringing.restart()  # back at once: uuid_exists answers "false", which cannot prove the call never rang
    result = job.get(timeout=SETTLE)
    assert result.status == "unknown", result
    assert "uuid_exists: false" in result.attempts[0].detail
    assert sum(placed_to(nodes, "4100").values()) == 1
    assert registry.call_exists(ringing.name, result.origination_uuid, timeout=5) is False


def test_a_refusing_node_is_asked_then_the_call_moves_on(nodes, registry):
    nodes[1].set_load(sessions=50)
    nodes[2].set_load(sessions=60)
    assert registry.wait_until(lambda: sees_sessions(registry, "fs3", 60), SETTLE)
    nodes[0].pause("outbound")  # the registry has not probed it yet: fs1 is still chosen and refuses
    result = Originator(registry).originate("sofia/gateway/gw1/5000", PARK, timeout=5)
    assert result.status == "placed" and result.node == "fs2", result
    first = result.attempts[0]
    assert (first.node, first.outcome, first.cause) == ("fs1", "refused", "DESTINATION_OUT_OF_ORDER")
    assert "uuid_exists: false" in first.detail
    assert any(cmd == f"uuid_exists {result.origination_uuid}" for cmd in nodes[0].api_commands)
    assert placed_to(nodes, "5000") == {"fs1": 0, "fs2": 1, "fs3": 0}


def test_a_callee_that_is_busy_is_not_called_again_elsewhere(nodes, registry):
    for node in nodes:
        node.set_outcome("6000", "busy")
    result = Originator(registry).originate("sofia/gateway/gw1/6000", PARK, timeout=5)
    assert result.status == "failed" and result.cause == "USER_BUSY", result
    assert len(result.attempts) == 1 and result.attempts[0].node == result.node
    assert nodes[int(result.node[-1]) - 1].calls_to("6000") == 1  # the node that answered the cause
    assert sum(placed_to(nodes, "6000").values()) == 1


def test_a_paused_node_is_drained(nodes, registry):
    paused_at = time.monotonic()
    nodes[2].pause("inbound")  # what an operator runs before maintenance: fsctl pause inbound
    assert "is ready" in nodes[2].run_api("status")  # the node itself still says ready
    assert registry.wait_until(lambda: registry.state("fs3") is NodeState.DRAINING, SETTLE)
    change = [c for c in registry.history if isinstance(c, StateChange) and c.node == "fs3"][-1]
    assert change.at - paused_at < 1.0, f"draining after {change.at - paused_at:.3f} s"
    assert "paused (inbound)" in registry.health("fs3").reason
    originator = Originator(registry)
    for _ in range(9):
        assert originator.originate("sofia/gateway/gw1/7000", PARK, timeout=5).node != "fs3"
    assert nodes[2].calls_to("7000") == 0
    nodes[2].resume("inbound")
    assert registry.wait_until(lambda: registry.state("fs3") is NodeState.UP, SETTLE)


def test_no_eligible_node_fails_without_sending_anything(nodes, registry):
    for name in registry.monitors:
        registry.drain(name)
    result = Originator(registry).originate("sofia/gateway/gw1/8000", PARK, timeout=5)
    assert result.status == "failed" and result.cause == "NO_NODE_AVAILABLE" and result.attempts == []
    assert sum(placed_to(nodes, "8000").values()) == 0


def test_a_node_whose_heartbeats_stop_is_down_after_two_and_a_half_intervals(nodes):
    # connection and probes fine, heartbeats gone (e.g. filtered away): stale data is not trusted
    cluster = ClusterRegistry(cluster_settings(nodes[:1])).start()
    try:
        assert cluster.wait_until(lambda: cluster.health("fs1").last_heartbeat_at is not None, SETTLE)
        nodes[0].set_heartbeat_interval(3600)
        last = cluster.health("fs1").last_heartbeat_at
        assert cluster.wait_until(lambda: cluster.state("fs1") is NodeState.DOWN, SETTLE)
        last = cluster.health("fs1").last_heartbeat_at or last
        change = [c for c in cluster.history if isinstance(c, StateChange)][-1]
        assert "no HEARTBEAT" in change.reason
        assert 2.5 <= change.at - last < 2.5 + 0.25 + 1.0, change  # grace, one probe interval, slack
        nodes[0].set_heartbeat_interval(1)
        assert cluster.wait_until(lambda: cluster.state("fs1") is NodeState.UP, SETTLE)
    finally:
        cluster.stop()


def test_a_node_down_at_start_is_down_then_joins(nodes):
    nodes[0].crash()  # nothing listens on its port
    cluster = ClusterRegistry(cluster_settings(nodes[:2])).start()
    try:
        assert cluster.wait_until(
            lambda: cluster.state("fs2") is NodeState.UP and "cannot connect" in cluster.health("fs1").reason, SETTLE
        )
        assert cluster.state("fs1") is NodeState.DOWN
        assert cluster.pick("outbound").name == "fs2"
        nodes[0].start()
        assert cluster.wait_until(lambda: cluster.state("fs1") is NodeState.UP, SETTLE)
    finally:
        cluster.stop()
