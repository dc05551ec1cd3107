"""A FreeSWITCH cluster as esl-app sees it: node health from HEARTBEAT and probes, the least-loaded
choice, and exactly-once originate with failover (docs/cluster.md).

| module | job |
|---|---|
| ``settings`` | the nodes and thresholds (``ESL_APP_CLUSTER_*``, ``[cluster]`` in the TOML file) |
| ``readings`` | HEARTBEAT and ``api status`` into numbers |
| ``health`` | one node's state machine (up, busy, draining, down), pure |
| ``restart`` | restart detection (Core-UUID, Uptime-msec), pure |
| ``inflight`` | originates sent that no reading counts yet, pure |
| ``choice`` | the least-loaded eligible node, pure |
| ``dialstring`` | the originate command with every value escaped for FreeSWITCH's parser |
| ``registry`` | connections, probes, subscriptions: the live picture |
| ``originate`` | exactly-once originate with failover |
| ``metrics`` | Prometheus gauges per node |
"""

from .dialstring import OriginateTarget, UnsafeOriginateArgument, socket_target
from .health import NodeHealth, NodeState, StateChange
from .originate import OriginateAttempt, OriginateResult, Originator, originate
from .registry import ClusterRegistry, NodeStatus
from .restart import Restart
from .settings import ClusterSettings, NodeSettings, Role

__all__ = [
    "ClusterRegistry",
    "ClusterSettings",
    "NodeHealth",
    "NodeSettings",
    "NodeState",
    "NodeStatus",
    "OriginateAttempt",
    "OriginateResult",
    "OriginateTarget",
    "Originator",
    "Restart",
    "Role",
    "StateChange",
    "UnsafeOriginateArgument",
    "originate",
    "socket_target",
]
