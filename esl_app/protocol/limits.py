"""Bounds on what one frame from the peer may cost, and their defaults.

A frame is read in the event loop's read callback: every call of the worker waits while it is
parsed. So the work and the memory one frame can cause must be bounded near what FreeSWITCH really
writes, with generous headroom:

* the largest header block is the ``connect`` reply (3.5 kB on loopback, 20-100+ kB with the
  variables of a real SIP call) and the inner header block of an event carrying the same variables;
  1 MiB is ten times that;
* a real call's block has 100-300 header lines (the captures: at most 106 in an envelope, 170 in an
  event; a real-sized SIP call 258); 10,000 is ample, and it is the line count that drives the cost
  (each line becomes a tuple and two strings: an 8 MB block of ``a:`` lines cost +400 MB);
* a body (``api`` output, an event with an XML CDR) may be large; it costs its own size.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .errors import ProtocolError

MAX_HEADER_BLOCK = 1024 * 1024
MAX_HEADERS = 10_000
MAX_BODY = 64 * 1024 * 1024


class ProtocolLimits(BaseModel):
    """What one frame may hold; over it, the parser raises ``ProtocolError`` before doing the work."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_header_block: int = Field(MAX_HEADER_BLOCK, ge=64, description="bytes of one header block")
    max_headers: int = Field(MAX_HEADERS, ge=8, description="lines of one header block (or members of an event)")
    max_body: int = Field(MAX_BODY, ge=0, description="bytes of one body (Content-Length)")


DEFAULT_LIMITS = ProtocolLimits()


def too_many_lines(block: bytes, max_headers: int) -> bool:
    """More than ``max_headers`` lines, counted in C before any line is split.

    A header line takes three bytes at least (a name, the colon, the LF), so a block shorter than
    three per allowed line cannot hold too many and is not counted: real blocks (10-30 kB) cost
    nothing, and counting only starts where splitting would cost far more.
    """
    return len(block) >= 3 * max_headers and block.count(b"\n") >= max_headers


def parse_length(text: str, max_length: int, what: str) -> int:
    """A decimal length of ASCII digits, at most ``max_length``; anything else is a ``ProtocolError``.

    The digits are counted before ``int()``: past 4,300 digits ``int()`` raises ``ValueError`` (and
    before that limit it costs quadratic time).
    """
    if not (text.isascii() and text.isdigit()):
        if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
            raise ProtocolError(f"{what} is negative: {text[:40]}")
        raise ProtocolError(f"{what} is not a number: {text[:40]!r}")
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(max_length)):
        raise ProtocolError(f"{what} of {len(text)} digits exceeds the limit of {max_length} bytes")
    length = int(significant)
    if length > max_length:
        raise ProtocolError(f"{what} {length} exceeds the limit of {max_length} bytes")
    return length
