"""Prometheus figures per queue, read from the shared state in Redis at scrape time (so every
process and host reports the same numbers; register the collector in one place only)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .service import QueueService

# rejoined: callers back after their worker died (same place); expired: ones that never came back
COUNTERS = ("offered", "answered", "abandoned", "timeout", "exit", "answered_in_sl", "rejoined", "expired")


class QueueCollector(Collector):
    """``esl_app_queue_*``: waiting, longest wait, offered/answered/abandoned..., service level, agents by state."""

    def __init__(self, service: QueueService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        waiting = GaugeMetricFamily("esl_app_queue_waiting", "Callers waiting", labels=["queue"])
        longest = GaugeMetricFamily("esl_app_queue_longest_wait_seconds", "Longest current wait", labels=["queue"])
        events = CounterMetricFamily("esl_app_queue_callers", "Callers by what became of them",
                                     labels=["queue", "outcome"])  # fmt: skip
        level = GaugeMetricFamily("esl_app_queue_service_level_ratio",
                                  "Answered within the service-level time / answered", labels=["queue"])  # fmt: skip
        agents = GaugeMetricFamily("esl_app_queue_agents", "Agents by status and state",
                                   labels=["queue", "status", "state"])  # fmt: skip
        queues = sorted(q.decode() for q in self.service.client.smembers(self.service.prefix + "acd:queues"))
        for queue in queues:
            status = self.service.queue_status(queue)
            waiting.add_metric([queue], float(status["waiting"]))  # type: ignore[arg-type]
            longest.add_metric([queue], float(status["longest_wait_seconds"]))  # type: ignore[arg-type]
            stats: dict[str, int] = status["stats"]  # type: ignore[assignment]
            for name in COUNTERS:
                events.add_metric([queue, name], float(stats.get(name, 0)))
            if stats.get("answered"):
                level.add_metric([queue], stats.get("answered_in_sl", 0) / stats["answered"])
            counts: dict[tuple[str, str], int] = {}
            for agent in status["agents"].values():  # type: ignore[attr-defined]
                key = (agent["status"], agent["state"])
                counts[key] = counts.get(key, 0) + 1
            for (agent_status, state), count in counts.items():
                agents.add_metric([queue, agent_status, state], float(count))
        yield from (waiting, longest, events, level, agents)
