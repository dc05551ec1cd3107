"""Exceptions a call flow can meet.

They derive from greenswitch's own exceptions where the meaning is the same, so code written against
greenswitch (``except OutboundSessionHasGoneAway``) keeps working on esl-app.
"""

from __future__ import annotations

from greenswitch.esl import NotConnectedError, OutboundSessionHasGoneAway


class EslAppError(Exception):
    """Base of every esl-app error."""


class CallEnded(EslAppError, OutboundSessionHasGoneAway):
    """The call left this application: the flow cannot control it any more."""

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class CallHangup(CallEnded):
    """The call was hung up (by the caller, the far end, FreeSWITCH or the flow itself).

    Raised at the flow's next call-control verb, and at once inside a verb that was waiting.
    """


class CallTransferred(CallEnded):
    """The flow transferred the call elsewhere; it is still up but no longer ours."""


class ConnectionClosed(EslAppError, NotConnectedError):
    """The Event Socket connection is closed; no reply will come."""


class CommandError(EslAppError):
    """FreeSWITCH answered a command with ``-ERR``."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"{command!r} failed: {reply.strip()}")
        self.command = command
        self.reply = reply


class CommandTimeout(EslAppError, TimeoutError):
    """A reply or an application's completion did not arrive within its timeout."""


class RouteError(EslAppError):
    """The route table is invalid (conflicting or malformed routes); raised at start."""


class UnsafeArgumentError(EslAppError, ValueError):
    """An argument a verb cannot pass safely (e.g. a quote inside a space-separated argument)."""
