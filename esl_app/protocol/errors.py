"""Errors raised by the sans-IO codec."""


class ProtocolError(ValueError):
    """Bytes from the peer that cannot be framed (the connection cannot be trusted any more)."""


class UnsafeCommandError(ValueError):
    """A command whose text would break ESL framing (CR, LF or NUL where they are not allowed)."""
