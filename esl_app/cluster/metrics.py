"""Prometheus metrics for the cluster, per node, read from the registry when scraped.

A collector rather than gauges set on every change: heartbeat age grows between events, and a scrape
must see it as it is now.

| metric | type | labels |
|---|---|---|
| ``esl_app_cluster_node_state`` | gauge, 1 for the node's current state | node, state |
| ``esl_app_cluster_node_sessions`` | gauge | node |
| ``esl_app_cluster_node_max_sessions`` | gauge | node |
| ``esl_app_cluster_node_in_flight`` | gauge: originates sent that no reading counts yet | node |
| ``esl_app_cluster_node_idle_cpu_percent`` | gauge | node |
| ``esl_app_cluster_node_sessions_per_second`` | gauge (Session-Per-Sec-Last) | node |
| ``esl_app_cluster_node_heartbeat_age_seconds`` | gauge | node |
| ``esl_app_cluster_node_probe_rtt_seconds`` | gauge | node |
| ``esl_app_cluster_node_state_changes_total`` | counter | node, state (entered) |
| ``esl_app_cluster_node_restarts_total`` | counter | node |
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .health import NodeState

if TYPE_CHECKING:
    from .registry import ClusterRegistry


class ClusterCollector(Collector):
    def __init__(self, cluster: ClusterRegistry) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        nodes = self.cluster.snapshot()
        state = GaugeMetricFamily(
            "esl_app_cluster_node_state", "1 for the node's current state", labels=["node", "state"]
        )
        gauges = {
            "sessions": GaugeMetricFamily("esl_app_cluster_node_sessions", "Session-Count", labels=["node"]),
            "max_sessions": GaugeMetricFamily("esl_app_cluster_node_max_sessions", "Max-Sessions", labels=["node"]),
            "in_flight": GaugeMetricFamily(
                "esl_app_cluster_node_in_flight", "Originates sent by this process not yet counted", labels=["node"]
            ),
            "idle_cpu": GaugeMetricFamily("esl_app_cluster_node_idle_cpu_percent", "Idle-CPU", labels=["node"]),
            "sessions_per_second": GaugeMetricFamily(
                "esl_app_cluster_node_sessions_per_second", "Sessions created in the last second", labels=["node"]
            ),
            "heartbeat_age": GaugeMetricFamily(
                "esl_app_cluster_node_heartbeat_age_seconds", "Seconds since the last HEARTBEAT", labels=["node"]
            ),
            "probe_rtt": GaugeMetricFamily(
                "esl_app_cluster_node_probe_rtt_seconds", "Round-trip time of the last api status", labels=["node"]
            ),
        }
        for node in nodes:
            for value in NodeState:
                state.add_metric([node.name, value.value], 1.0 if node.state is value else 0.0)
            for field, family in gauges.items():
                reading = getattr(node, field)
                if reading is not None:
                    family.add_metric([node.name], float(reading))
        yield state
        yield from gauges.values()
        changes = CounterMetricFamily(
            "esl_app_cluster_node_state_changes", "State changes, by the state entered", labels=["node", "state"]
        )
        for (node_name, entered), count in sorted(self.cluster.state_changes_total.items()):
            changes.add_metric([node_name, entered], count)
        yield changes
        restarts = CounterMetricFamily("esl_app_cluster_node_restarts", "Node restarts seen", labels=["node"])
        for node in nodes:
            restarts.add_metric([node.name], self.cluster.restarts_total.get(node.name, 0))
        yield restarts


def register(cluster: ClusterRegistry, registry: CollectorRegistry | None = None) -> ClusterCollector:
    """Expose ``cluster`` on ``registry`` (prometheus_client's default registry when None)."""
    from prometheus_client import REGISTRY

    collector = ClusterCollector(cluster)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
