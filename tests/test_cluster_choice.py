"""The least-loaded choice: headroom, in-flight calls, weights, an even spread at equal load."""

from __future__ import annotations

import random
from collections import Counter

from esl_app.cluster.choice import choose
from esl_app.cluster.health import NodeHealth, NodeState
from esl_app.cluster.readings import LoadReading
from esl_app.cluster.settings import ClusterSettings, NodeSettings, Role

NOT_PAUSED = {Role.INBOUND: False, Role.OUTBOUND: False}
SETTINGS = ClusterSettings(nodes=[], heartbeat_interval=1)


def node(name, sessions=0, max_sessions=1000, idle=99.0, weight=1.0, roles=("inbound", "outbound")) -> NodeHealth:
    health = NodeHealth(NodeSettings(name=name, host="127.0.0.1", weight=weight, roles=list(roles)), SETTINGS, 0.0)
    health.connected_now(0.0)
    health.probe_succeeded(0.0, 0.001, LoadReading(sessions, max_sessions, idle, 0, None, 1000, True), NOT_PAUSED)
    return health


def test_least_loaded_wins():
    nodes = [node("a", sessions=100), node("b", sessions=10), node("c", sessions=50)]
    assert choose(nodes, "outbound").name == "b"


def test_headroom_is_relative_to_each_nodes_maximum():
    nodes = [node("small", sessions=50, max_sessions=100), node("big", sessions=200, max_sessions=1000)]
    assert choose(nodes, "outbound").name == "big"


def test_never_busy_draining_or_down():
    busy = node("busy", sessions=800)
    draining = node("draining")
    draining.set_operator_drain(0.0, True)
    down = node("down")
    down.disconnected(0.0, "gone")
    assert busy.state is NodeState.BUSY
    assert choose([busy, draining, down], "outbound") is None
    assert choose([busy, draining, down, node("ok", sessions=700)], "outbound").name == "ok"


def test_in_flight_calls_count_before_any_heartbeat_does():
    a, b = node("a"), node("b")
    rng = random.Random(1)
    picks = []
    for _ in range(10):
        chosen = choose([a, b], "outbound", rng=rng)
        chosen.in_flight.start(0.1)  # sent, not yet in any reading
        picks.append(chosen.name)
    assert Counter(picks) == {"a": 5, "b": 5}


def test_in_flight_calls_can_fill_a_node_up_to_the_busy_threshold():
    a = node("a", sessions=798)  # busy from 800
    a.in_flight.start(0.1)
    assert choose([a], "outbound") is a  # 799 counted: this call makes 800
    a.in_flight.start(0.1)
    assert choose([a], "outbound") is None  # 800 counted: the node is full as far as we know


def test_idle_nodes_get_an_even_spread_not_all_on_the_first():
    nodes = [node("a"), node("b"), node("c")]
    rng = random.Random(7)
    counts = Counter(choose(nodes, "outbound", rng=rng).name for _ in range(3000))
    assert set(counts) == {"a", "b", "c"}
    assert all(850 < count < 1150 for count in counts.values()), counts


def test_idle_cpu_noise_does_not_decide_only_scarce_cpu_does():
    calm = [node("a", idle=99.0), node("b", idle=93.5)]
    rng = random.Random(3)
    counts = Counter(choose(calm, "outbound", rng=rng).name for _ in range(1000))
    assert 400 < counts["a"] < 600, counts  # both have plenty of CPU: a tie
    scarce = [node("a", idle=99.0), node("b", idle=15.0)]
    assert choose(scarce, "outbound").name == "a"


def test_weight_gives_a_proportional_share():
    heavy, light = node("heavy", weight=2.0), node("light", weight=1.0)
    rng = random.Random(5)
    for _ in range(300):
        choose([heavy, light], "outbound", rng=rng).in_flight.start(0.1)
    assert len(heavy.in_flight) == 200 and len(light.in_flight) == 100


def test_role_and_exclusion():
    inbound_only = node("in", roles=("inbound",))
    outbound_only = node("out", sessions=500, roles=("outbound",))
    assert choose([inbound_only, outbound_only], "outbound").name == "out"
    assert choose([inbound_only, outbound_only], Role.INBOUND).name == "in"
    assert choose([inbound_only, outbound_only], "outbound", exclude=frozenset({"out"})) is None
