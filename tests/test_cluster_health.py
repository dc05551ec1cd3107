"""One node's state machine, restart detection and the in-flight ledger, on a fake clock."""

from __future__ import annotations

from esl_app.cluster.health import NodeHealth, NodeState, StateChange
from esl_app.cluster.inflight import InFlightLedger
from esl_app.cluster.readings import LoadReading
from esl_app.cluster.restart import Restart, RestartDetector
from esl_app.cluster.settings import ClusterSettings, NodeSettings, Role

NOT_PAUSED = {Role.INBOUND: False, Role.OUTBOUND: False}


def make(**overrides) -> NodeHealth:
    settings = ClusterSettings(nodes=[], heartbeat_interval=1, probe_interval=0.25, **overrides)
    return NodeHealth(NodeSettings(name="fs1", host="127.0.0.1"), settings, now=0.0)


def beat(sessions=0, max_sessions=1000, idle=99.0, core="core-a", uptime=10_000) -> LoadReading:
    return LoadReading(sessions, max_sessions, idle, 0, core, uptime)


def status(sessions=0, max_sessions=1000, idle=99.0, ready=True, uptime=10_000) -> LoadReading:
    return LoadReading(sessions, max_sessions, idle, 0, None, uptime, ready)


def up(health: NodeHealth, now: float = 0.1) -> None:
    health.connected_now(now)
    health.probe_succeeded(now, 0.001, status(), NOT_PAUSED)
    assert health.state is NodeState.UP


def changes(health: NodeHealth) -> list[tuple[str, str]]:
    return [(n.old.value, n.new.value) for n in health.take_notices() if isinstance(n, StateChange)]


def test_unknown_until_connected_and_read():
    health = make()
    assert health.state is NodeState.DOWN
    health.connected_now(0.1)
    assert health.state is NodeState.DOWN  # connected, but nothing read yet: no calls
    health.heartbeat(0.2, beat())
    assert health.state is NodeState.DOWN  # load known, pause state not yet
    health.probe_succeeded(0.3, 0.001, status(), NOT_PAUSED)
    assert health.state is NodeState.UP
    assert changes(health) == [("down", "up")]


def test_connection_lost_is_down_at_once_and_forgets_the_old_readings():
    health = make()
    up(health)
    health.disconnected(0.5, "connection lost: EOF")
    assert health.state is NodeState.DOWN and health.reason == "connection lost: EOF"
    assert health.load is None
    health.connected_now(0.7)
    assert health.state is NodeState.DOWN  # must read the (maybe restarted) node again first
    assert changes(health) == [("down", "up"), ("up", "down")]


def test_stale_heartbeat_is_down_after_two_and_a_half_intervals():
    health = make()
    up(health)
    health.heartbeat(1.0, beat())
    health.probe_succeeded(3.4, 0.001, status(), NOT_PAUSED)  # probes still answer
    health.tick(3.4)
    assert health.state is NodeState.UP
    health.tick(3.6)
    assert health.state is NodeState.DOWN and "no HEARTBEAT" in health.reason
    health.heartbeat(3.7, beat())
    assert health.state is NodeState.UP


def test_no_heartbeat_at_all_after_connecting_is_down():
    health = make()
    up(health, now=0.0)
    health.tick(2.4)
    assert health.state is NodeState.UP
    health.tick(2.6)
    assert health.state is NodeState.DOWN


def test_probe_failure_is_down_until_the_next_good_probe():
    health = make()
    up(health)
    health.probe_failed(0.5, "no reply within 1 s")
    assert health.state is NodeState.DOWN and "probe failed" in health.reason
    health.probe_succeeded(0.75, 0.002, status(), NOT_PAUSED)
    assert health.state is NodeState.UP


def test_busy_at_eighty_percent_or_low_idle_cpu():
    health = make()
    up(health)
    health.heartbeat(0.5, beat(sessions=799))
    assert health.state is NodeState.UP
    health.heartbeat(0.6, beat(sessions=800))
    assert health.state is NodeState.BUSY and "800/1000" in health.reason
    health.heartbeat(0.7, beat(sessions=10, idle=9.5))
    assert health.state is NodeState.BUSY and "idle CPU" in health.reason
    health.heartbeat(0.8, beat(sessions=10, idle=50))
    assert health.state is NodeState.UP


def test_paused_node_is_draining_though_status_says_ready():
    health = make()
    up(health)
    health.probe_succeeded(0.5, 0.001, status(ready=True), {Role.INBOUND: True, Role.OUTBOUND: False})
    assert health.state is NodeState.DRAINING and "inbound" in health.reason
    health.heartbeat(0.6, beat())  # heartbeats carry no sign of the pause: still draining
    assert health.state is NodeState.DRAINING
    health.probe_succeeded(0.75, 0.001, status(), NOT_PAUSED)
    assert health.state is NodeState.UP


def test_a_pause_in_a_direction_the_node_does_not_serve_does_not_drain_it():
    settings = ClusterSettings(nodes=[], heartbeat_interval=1)
    health = NodeHealth(NodeSettings(name="out", host="127.0.0.1", roles=["outbound"]), settings, now=0.0)
    health.connected_now(0.1)
    health.probe_succeeded(0.2, 0.001, status(), {Role.INBOUND: True, Role.OUTBOUND: False})
    assert health.state is NodeState.UP


def test_full_pause_makes_status_not_ready():
    health = make()
    up(health)
    health.probe_succeeded(0.5, 0.001, status(ready=False), NOT_PAUSED)
    assert health.state is NodeState.DRAINING
    health.heartbeat(0.6, beat())  # a heartbeat does not undo what status said
    assert health.state is NodeState.DRAINING


def test_operator_drain():
    health = make()
    up(health)
    health.set_operator_drain(0.5, True)
    assert health.state is NodeState.DRAINING and health.reason == "drained by operator"
    health.set_operator_drain(0.6, False)
    assert health.state is NodeState.UP


def test_restart_by_core_uuid_and_by_uptime_going_back():
    detector = RestartDetector("fs1")
    assert detector.observe(1.0, "core-a", 5_000) is None
    assert detector.observe(2.0, None, 6_000) is None  # a status reply: no Core-UUID
    assert detector.observe(2.1, "core-a", 5_900) is None  # a heartbeat queued before that status reply
    restart = detector.observe(3.0, "core-b", 2_018)
    assert isinstance(restart, Restart) and restart.old_core_uuid == "core-a" and restart.new_core_uuid == "core-b"
    # uptime going back, seen first from a status reply, then the new Core-UUID: one restart, not two
    assert detector.observe(4.0, "core-b", 30_000) is None
    back = detector.observe(10.0, None, 1_900)
    assert back is not None and "Uptime-msec" in back.reason
    assert detector.observe(10.5, "core-c", 2_000) is None


def test_restart_is_a_notice_and_voids_the_in_flight_calls():
    health = make()
    up(health)
    health.heartbeat(0.5, beat(core="core-a", uptime=50_000))
    token = health.in_flight.start(0.6)
    health.in_flight.finish(token, 0.7, placed=True)
    assert len(health.in_flight) == 1
    health.heartbeat(1.5, beat(core="core-b", uptime=2_000))
    restarts = [n for n in health.take_notices() if isinstance(n, Restart)]
    assert [r.new_core_uuid for r in restarts] == ["core-b"]
    assert len(health.in_flight) == 0


def test_in_flight_counts_until_a_reading_arrives_after_the_call_was_placed():
    ledger = InFlightLedger()
    a, b, c = ledger.start(1.0), ledger.start(1.0), ledger.start(1.0)
    assert len(ledger) == 3
    ledger.finish(a, 1.5, placed=False)  # failed: no session left behind
    ledger.finish(b, 1.5, placed=True)
    assert len(ledger) == 2
    ledger.reading_arrived(1.4)  # older than the placement: does not count it yet
    assert len(ledger) == 2
    ledger.reading_arrived(1.6)
    assert len(ledger) == 1  # c is still being placed
    ledger.finish(c, 2.0, placed=True)
    ledger.reading_arrived(2.1)
    assert len(ledger) == 0
