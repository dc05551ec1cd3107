"""Errors raised by the sans-IO codec."""

from collections.abc import Sequence


class ProtocolError(ValueError):
    """Bytes from the peer that cannot be framed (the connection cannot be trusted any more)."""

    #: frames that the failing ``Parser.feed()`` call had completed before the bad bytes
    frames: Sequence[object] = ()


class UnsafeCommandError(ValueError):
    """A command whose text would break ESL framing (CR, LF or NUL where they are not allowed)."""
