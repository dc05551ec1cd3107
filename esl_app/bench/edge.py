"""The SIP edge's calls-per-second limit, measured: SIPp callers through the project's kamailio.cfg to
SIPp nodes, once with no limit and once with ``CPS_GLOBAL``; what reached the nodes and what was refused.

Each round starts its own Kamailio and nodes on loopback (``esl_app.testing.sip_edge``); the report
gives medians over the rounds. Needs ``kamailio`` and ``sipp`` (Debian: kamailio, sip-tester), run
from a checkout (the config is ``docker/kamailio/kamailio.cfg``).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..testing.sip_edge import Destination, Kamailio, SippNode, max_per_second, run_callers, wait_for

UNLIMITED = 1_000_000


@dataclass
class EdgeRound:
    mode: str
    offered_cps: float  # INVITEs the callers sent per second
    answered: int
    refused: int
    node_cps: float  # INVITEs the nodes took per second: mean over the whole seconds inside the run
    node_max_per_second: int  # the most INVITEs the nodes took in one wall-clock second (fitted: max_per_second)
    refused_cps: float


@dataclass
class EdgeReport:
    calls: int
    rate: int
    limit: int
    rounds: list[EdgeRound]

    def median(self, mode: str, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.rounds if r.mode == mode)

    def table(self) -> str:
        lines = [
            f"SIPp callers -> Kamailio (docker/kamailio/kamailio.cfg) -> 2 SIPp nodes; {self.calls} calls at "
            f"{self.rate}/s, medians of {len(self.rounds) // 2} rounds",
            f"{'mode':<14}{'offered/s':>10}{'at nodes/s':>12}{'max in 1 s':>12}{'503/s':>8}{'answered':>10}{'503':>6}",
        ]
        for mode in dict.fromkeys(r.mode for r in self.rounds):
            lines.append(
                f"{mode:<14}{self.median(mode, 'offered_cps'):>10.1f}{self.median(mode, 'node_cps'):>12.1f}"
                f"{self.median(mode, 'node_max_per_second'):>12.0f}{self.median(mode, 'refused_cps'):>8.1f}"
                f"{self.median(mode, 'answered'):>10.0f}{self.median(mode, 'refused'):>6.0f}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"calls": self.calls, "rate": self.rate, "limit": self.limit, "rounds": [asdict(r) for r in self.rounds]}


def one_round(workdir: Path, mode: str, calls: int, rate: int, limit: int) -> EdgeRound:
    nodes = [SippNode(workdir, f"node{i}").start() for i in (1, 2)]
    edge = Kamailio(
        workdir / "kamailio",
        [Destination(1, node.uri) for node in nodes],
        defines={"CPS_GLOBAL": limit, "CPS_PER_SOURCE": limit, "PIKE_DENSITY": UNLIMITED, "PING_INTERVAL": 1},
    )
    try:
        edge.start()
        if not wait_for(lambda: all(edge.flags(1, n.uri).startswith("A") for n in nodes), 15):
            raise RuntimeError("the SIPp nodes did not become active in Kamailio")
        result = run_callers(workdir, f"127.0.0.1:{edge.sip_port}", calls=calls, rate=rate)
        times = sorted(t for node in nodes for t in node.invite_times())
    finally:
        edge.stop()
        for node in nodes:
            node.stop()
    sending = calls / rate  # SIPp paces the INVITEs; the calls' own duration is not part of the rate
    per_second = Counter(math.floor(t) for t in times)
    # the first and last wall-clock seconds are partly outside the run: rates come from the ones between
    inner = sorted(per_second)[1:-1]
    node_cps = statistics.mean(per_second[second] for second in inner) if inner else len(times) / sending
    return EdgeRound(
        mode=mode,
        offered_cps=result.attempts / sending,
        answered=len(result.answered),
        refused=len(result.refused),
        node_cps=node_cps,
        node_max_per_second=max_per_second(times),
        refused_cps=len(result.refused) / sending,
    )


def run(calls: int, rate: int, limit: int, rounds: int, progress: Callable[[str], None] = print) -> EdgeReport:
    report = EdgeReport(calls, rate, limit, [])
    with tempfile.TemporaryDirectory(prefix="esl-app-bench-edge-") as base:
        for index in range(rounds):
            for mode, cps in (("no limit", UNLIMITED), (f"limit {limit}/s", limit)):
                workdir = Path(base) / f"{index}-{cps}"
                outcome = one_round(workdir, mode, calls, rate, cps)
                progress(f"round {index + 1} {mode}: {outcome.answered} answered, {outcome.refused} refused")
                report.rounds.append(outcome)
    return report
