"""The SIP edge: Kamailio in front of the FreeSWITCH nodes, fed with the cluster's health (docs/edge.md).

| module | job |
|---|---|
| ``settings`` | where Kamailio's JSON-RPC is, which SIP address and dispatcher set each node has |
| ``jsonrpc`` | a JSON-RPC 2.0 client over HTTP, cooperative under gevent |
| ``dispatcher_list`` | the dispatcher list file and load-derived ``rweight``, pure |
| ``kamailio`` | ``KamailioFeedback``: cluster state changes into ``dispatcher.set_state`` / ``dispatcher.reload`` |
"""

from .dispatcher_list import DispatcherEntry, dispatcher_list_text, load_rweight
from .jsonrpc import KamailioRPC, KamailioRPCError
from .kamailio import KamailioFeedback
from .settings import EdgeSettings

__all__ = [
    "DispatcherEntry",
    "EdgeSettings",
    "KamailioFeedback",
    "KamailioRPC",
    "KamailioRPCError",
    "dispatcher_list_text",
    "load_rweight",
]
