"""esl-app: FreeSWITCH call control in Python over the outbound Event Socket."""

from .app import App, Reject
from .call import BridgeResult, Call, RecordResult
from .errors import (
    CallEnded,
    CallHangup,
    CallTransferred,
    CommandError,
    CommandTimeout,
    ConnectionClosed,
    EslAppError,
    RouteError,
    UnsafeArgumentError,
)
from .protocol import Expand, UnsafeCommandError
from .routing import exact, prefix, regex

__all__ = [
    "App",
    "BridgeResult",
    "Call",
    "CallEnded",
    "CallHangup",
    "CallTransferred",
    "CommandError",
    "CommandTimeout",
    "ConnectionClosed",
    "EslAppError",
    "Expand",
    "RecordResult",
    "Reject",
    "RouteError",
    "UnsafeArgumentError",
    "UnsafeCommandError",
    "exact",
    "prefix",
    "regex",
]
__version__ = "0.1.0"
