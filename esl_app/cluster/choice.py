"""Which node gets the next call: the least-loaded eligible one. Pure logic.

A node's cost is its load after one more call, against its share of the cluster::

    cost = (Session-Count + in flight + 1) / (busy_sessions_ratio x Max-Sessions x weight x cpu_factor)

- "in flight" are the originates this process sent that no reading counts yet (``InFlightLedger``),
  so calls placed between two heartbeats spread instead of piling on one node;
- ``weight`` makes a node of weight 2 carry twice the sessions of a node of weight 1;
- ``cpu_factor`` is 1 while Idle-CPU is at least ``CPU_COMFORT`` points above ``min_idle_cpu`` and
  falls towards 0 as idle CPU nears the threshold: CPU only decides when it is scarce, so the noise of
  idle CPU between nodes does not send every call to the node that happened to idle most.

Eligible: state ``up``, serving the role, and one more call keeps it under the busy threshold.
Ties (equal cost, e.g. idle nodes) are broken at random, so equal nodes get an even spread.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .health import NodeHealth, NodeState
from .settings import Role

CPU_COMFORT = 20.0  # idle-CPU points above min_idle_cpu from which CPU stops weighing
_TIE = 1e-9


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    cost: float


def node_cost(health: NodeHealth) -> float | None:
    """The node's cost for one more call, or None when it must not get one."""
    load = health.load
    if health.state is not NodeState.UP or load is None or load.max_sessions <= 0:
        return None
    settings = health.settings
    limit = settings.busy_sessions_ratio * load.max_sessions
    after = load.sessions + len(health.in_flight) + 1
    if after > limit:
        return None
    spare_cpu = load.idle_cpu - settings.min_idle_cpu
    if spare_cpu <= 0:
        return None
    cpu_factor = min(1.0, spare_cpu / CPU_COMFORT)
    return after / (limit * health.node.weight * cpu_factor)


def choose(
    nodes: Sequence[NodeHealth],
    role: Role | str,
    *,
    exclude: frozenset[str] = frozenset(),
    rng: random.Random | None = None,
) -> NodeHealth | None:
    """The least-loaded eligible node for ``role``, or None when no node may take a call."""
    role = Role(role)
    best: list[NodeHealth] = []
    best_cost = float("inf")
    for health in nodes:
        if role not in health.node.roles or health.name in exclude:
            continue
        cost = node_cost(health)
        if cost is None:
            continue
        if cost < best_cost - _TIE:
            best, best_cost = [health], cost
        elif cost <= best_cost + _TIE:
            best.append(health)
    if not best:
        return None
    return best[0] if len(best) == 1 else (rng or random).choice(best)
