"""The ACD across 4 worker processes sharing Redis: many callers, few agents, never a double offer
and never a lost caller (the workers log every answered bridge; see esl_app/queue/bench.py)."""

from __future__ import annotations

import itertools
from collections import defaultdict

from data_fixtures import REDIS_URL, redis_client, redis_prefix  # noqa: F401

from esl_app.queue.bench import run


def test_four_processes_never_double_offer_nor_lose_a_caller(redis_prefix):  # noqa: F811
    calls = 120
    result = run(redis_url=REDIS_URL, workers=4, agents=4, calls=calls, rate=60, talk_seconds=0.15,
                 audit=True, prefix=redis_prefix)  # fmt: skip
    assert result.failed == 0
    # every caller was bridged exactly once and answered: none lost, none offered twice
    assert result.bridges_per_call == [1] * calls
    assert len(result.audit) == calls
    assert all(a["outcome"] == "answered" and a["offers"] == 1 for a in result.audit)
    assert len({a["caller"] for a in result.audit}) == calls
    # an agent never had two callers at once: its bridges never overlap
    by_agent: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for a in result.audit:
        by_agent[a["agent"]].append((a["start"], a["end"]))
    assert set(by_agent) <= {f"b{i}" for i in range(4)}
    for agent, spans in by_agent.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"agent {agent} got a second caller while on a call"
    # more callers than agents: most offers followed an agent's call end, in another process too
    assert len(result.latency_ms.get("free", [])) > calls // 2
