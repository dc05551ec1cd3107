"""gevent transports: the outbound Event Socket server and the per-connection reader/writer."""

from .connection import Connection
from .server import OutboundServer

__all__ = ["Connection", "OutboundServer"]
