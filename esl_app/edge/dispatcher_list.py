"""Kamailio's dispatcher list file and the load-derived relative weights, pure.

Line format (dispatcher module, 5.6): ``setid destination flags priority attributes``. Flags: 4 =
disabled (not chosen, not probed), 8 = probing (OPTIONS keepalives). ``dispatcher.reload`` rebuilds
every destination from the file and forgets states set over RPC, so the file carries the state too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cluster.health import NodeHealth, NodeState

DS_DISABLED = 4
DS_PROBING = 8
RWEIGHT_STEP = 10  # coarse steps: a reload only when a node's share really moved


@dataclass(frozen=True, slots=True)
class DispatcherEntry:
    set_id: int
    uri: str
    rweight: int
    disabled: bool
    name: str

    def line(self) -> str:
        flags = DS_DISABLED if self.disabled else DS_PROBING
        return f"{self.set_id} {self.uri} {flags} 0 rweight={self.rweight};node={self.name}"


def load_rweight(health: NodeHealth, max_weight: float) -> int:
    """1..100: the node's configured weight (relative to the largest) times its free capacity below the
    busy threshold, rounded to steps of 10. A node with no reading yet gets its full weight."""
    share = health.node.weight / max_weight if max_weight > 0 else 1.0
    load = health.load
    if load is not None and load.max_sessions > 0:
        threshold = health.settings.busy_sessions_ratio * load.max_sessions
        share *= max(0.0, 1.0 - load.sessions / threshold)
    stepped = round(share * 100 / RWEIGHT_STEP) * RWEIGHT_STEP
    return max(1, min(100, stepped))


def is_disabled(state: NodeState) -> bool:
    return state is not NodeState.UP


def dispatcher_list_text(entries: list[DispatcherEntry]) -> str:
    header = "# written by esl-app (esl_app.edge.kamailio): edits are overwritten\n"
    return header + "".join(entry.line() + "\n" for entry in sorted(entries, key=lambda e: (e.set_id, e.uri)))
