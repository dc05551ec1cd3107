"""The SIP edge with a real Kamailio (docker/kamailio/kamailio.cfg) and SIPp on loopback.

SIPp UAS instances stand in for FreeSWITCH nodes (they answer OPTIONS and INVITE and log each INVITE
and BYE by Call-ID); a SIPp UAC places the calls. Each test starts its own Kamailio with its own
ports, dispatcher list and limits. Counts and generous bounds, polling with deadlines: a loaded
2-core machine passes.
"""

from __future__ import annotations

import time
from pathlib import Path

import gevent
import pytest

from esl_app.testing.sip_edge import (
    REFUSING_UAS_SCENARIO,
    Destination,
    Kamailio,
    SippNode,
    max_per_second,
    run_callers,
    wait_for,
)

SETTLE = 15.0  # the longest a state may take to show in Kamailio on a loaded box

# tests that are not about the CPS limit keep it far away
NO_LIMIT = {"CPS_GLOBAL": 10_000, "CPS_PER_SOURCE": 10_000}
FAST_PROBES = {"PING_INTERVAL": 1, "PROBE_THRESHOLD": 2, "FR_TIMER": 1000}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def nodes(workdir):
    started = [SippNode(workdir, f"node{i}").start() for i in (1, 2)]
    yield started
    for node in started:
        node.stop()


def start_edge(workdir: Path, destinations: list[Destination], **defines) -> Kamailio:
    return Kamailio(workdir / "kamailio", destinations, defines={**FAST_PROBES, **NO_LIMIT, **defines}).start()


@pytest.fixture
def edge_factory(workdir):
    started: list[Kamailio] = []

    def make(destinations: list[Destination], **defines) -> Kamailio:
        edge = start_edge(workdir, destinations, **defines)
        started.append(edge)
        return edge

    yield make
    for edge in started:
        edge.stop()


def target(edge: Kamailio) -> str:
    return f"127.0.0.1:{edge.sip_port}"


def all_active(edge: Kamailio, nodes: list[SippNode], set_id: int = 1) -> bool:
    return all(edge.flags(set_id, node.uri).startswith("A") for node in nodes)


def test_invites_spread_by_weight_and_byes_follow_their_invite(workdir, nodes, edge_factory):
    light, heavy = nodes
    edge = edge_factory([Destination(1, light.uri, 25), Destination(1, heavy.uri, 75)])
    assert wait_for(lambda: all_active(edge, nodes), SETTLE)

    result = run_callers(workdir, target(edge), calls=60, rate=30)

    assert len(result.answered) == 60, (result, edge.log_tail())
    took = {node.name: set(node.invites()) for node in nodes}
    assert took[light.name] | took[heavy.name] == set(result.answered)
    assert not took[light.name] & took[heavy.name]
    # rweight 25:75 -> 15:45 of 60 (algorithm 11 deals a 100-slot table; allow slack)
    assert 8 <= len(took[light.name]) <= 22, {k: len(v) for k, v in took.items()}
    assert len(took[heavy.name]) >= 1.5 * len(took[light.name])
    # every BYE reached the node that took its INVITE, and only that node
    assert wait_for(lambda: sum(len(node.byes()) for node in nodes) == 60, SETTLE)
    for node in nodes:
        assert set(node.byes()) == took[node.name]


def test_a_stopped_node_is_taken_out_by_probing_and_gets_no_invite(workdir, nodes, edge_factory):
    alive, frozen = nodes
    edge = edge_factory([Destination(1, alive.uri), Destination(1, frozen.uri)])
    assert wait_for(lambda: all_active(edge, nodes), SETTLE)

    frozen.freeze()  # SIGSTOP: a hung node; anything sent to it waits in its socket buffer
    stopped_at = time.monotonic()
    assert wait_for(lambda: edge.flags(1, frozen.uri).startswith("I"), SETTLE), edge.flags(1, frozen.uri)
    taken_out = time.monotonic() - stopped_at
    # ping interval 1 s x threshold 2, each probe failing after FR_TIMER 1 s; slack for a loaded box
    assert taken_out < 1 * 2 + 1 + 4, taken_out

    result = run_callers(workdir, target(edge), calls=20, rate=20)
    assert len(result.answered) == 20, (result, edge.log_tail())
    assert set(alive.invites()) >= set(result.answered)

    frozen.thaw()  # whatever was queued for it is read now: it must hold none of those calls
    assert wait_for(lambda: edge.flags(1, frozen.uri).startswith("A"), SETTLE)  # back once it answers
    assert not set(frozen.invites()) & set(result.answered)


def test_over_the_global_cps_limit_callers_get_503_and_nodes_see_at_most_the_limit(workdir, nodes, edge_factory):
    limit = 5
    edge = edge_factory([Destination(1, node.uri) for node in nodes], CPS_GLOBAL=limit)
    assert wait_for(lambda: all_active(edge, nodes), SETTLE)

    result = run_callers(workdir, target(edge), calls=60, rate=30)

    assert result.attempts == 60, result
    assert len(result.refused) >= 20, (len(result.answered), len(result.refused))
    seen = sum(len(node.invites()) for node in nodes)
    assert seen == len(result.answered)
    # at most `limit` per wall-clock second (+1: the second boundaries are fitted to SIPp's clock)
    assert max_per_second([t for node in nodes for t in node.invite_times()]) <= limit + 1


def test_the_per_source_limit_refuses_one_flooding_caller_and_not_the_others(workdir, nodes, edge_factory):
    edge = edge_factory([Destination(1, node.uri) for node in nodes], CPS_PER_SOURCE=5, CPS_GLOBAL=1000)
    assert wait_for(lambda: all_active(edge, nodes), SETTLE)

    calm = gevent.spawn(run_callers, workdir, target(edge), calls=6, rate=2, host="127.0.0.3", name="calm")
    flood = run_callers(workdir, target(edge), calls=60, rate=30, host="127.0.0.2", name="flood")
    calm_result = calm.get(timeout=60)

    assert len(flood.refused) >= 20, (len(flood.answered), len(flood.refused))
    assert len(calm_result.answered) == 6 and not calm_result.refused, calm_result


def test_a_5xx_from_a_node_moves_the_call_to_the_next_node(workdir, edge_factory):
    good = SippNode(workdir, "good").start()
    refusing = SippNode(workdir, "refusing", scenario=REFUSING_UAS_SCENARIO).start()
    try:
        # ping interval 10 s: the probes do not bring the refusing node back during the test
        edge = edge_factory([Destination(1, good.uri), Destination(1, refusing.uri)], PING_INTERVAL=10)
        assert wait_for(lambda: all_active(edge, [good, refusing]), SETTLE)

        result = run_callers(workdir, target(edge), calls=10, rate=10)

        assert len(result.answered) == 10, (result, edge.log_tail())
        assert set(good.invites()) == set(result.answered)
        # the refusing node was tried first at least once (then marked trying), and failed over
        assert 1 <= len(refusing.invites()) < 10
        assert set(refusing.invites()) <= set(result.answered)
    finally:
        good.stop()
        refusing.stop()


def test_a_silent_node_times_out_to_the_next_node(workdir, nodes, edge_factory):
    good, silent = nodes
    # probes 10 s apart: the silent node stays active in the dispatcher, so calls do reach it first
    edge = edge_factory([Destination(1, good.uri), Destination(1, silent.uri)], PING_INTERVAL=10)
    assert wait_for(lambda: all_active(edge, nodes), SETTLE)
    silent.freeze()

    result = run_callers(workdir, target(edge), calls=8, rate=8)

    assert len(result.answered) == 8, (result, edge.log_tail())
    assert set(good.invites()) == set(result.answered)
    silent.thaw()  # it now reads what was sent to it: calls tried there first, then moved on after FR_TIMER
    assert wait_for(lambda: len(silent.invites()) >= 1, SETTLE)
    assert set(silent.invites()) <= set(result.answered)
