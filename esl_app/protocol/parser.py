"""Sans-IO reader for frames written by FreeSWITCH.

Feed it bytes as they arrive, in chunks of any size; it returns every complete frame. It never
touches a socket, so it is tested by feeding captures whole, byte by byte and in random chunks.
"""

from __future__ import annotations

import re

from .errors import ProtocolError
from .frames import Frame, looks_like_connect_reply
from .headers import Headers, split_header_lines
from .limits import (
    DEFAULT_LIMITS,
    MAX_BODY,
    MAX_HEADER_BLOCK,
    MAX_HEADERS,
    ProtocolLimits,
    parse_length,
    too_many_lines,
)
from .urlcode import decode_value

__all__ = ["MAX_BODY", "MAX_HEADERS", "MAX_HEADER_BLOCK", "Parser"]

# blank lines between frames (CR and LF), matched in C: a flood of them must not loop in Python
_BLANK_LINES = re.compile(rb"[\r\n]*")

# FreeSWITCH's envelopes repeat byte for byte ("Content-Type: command/reply\nReply-Text: +OK",
# "Content-Length: 10234\nContent-Type: text/event-plain"): ~20 per call, each distinct one is parsed
# once. A parsed (eager) Headers is never changed afterwards, so frames share it.
_ENVELOPE_MAX = 256  # bytes: envelopes, not connect replies
_ENVELOPES_KEPT = 1024  # distinct blocks; once full, new ones are parsed and not kept
# A block naming a UUID (a bgapi reply's Job-UUID, a disconnect notice's Controlled-Session-UUID) is new
# for every call: never kept. And a full cache is not cleared: on a real switch every event length is
# another envelope. Either way the cache churned, and its entries' live objects (~6 each) were what the
# collector's middle passes walked (~5,000 objects, ~1.5 ms a pass at 650 calls/s).
# block -> (headers, body length, the limits it was checked against: a parser may have tighter ones)
_ENVELOPES: dict[bytes, tuple[Headers, int, tuple[int, int]]] = {}


class Parser:
    """Turns a byte stream from FreeSWITCH into ``Frame`` objects.

    The work of one ``feed()`` is bounded by what it was given plus at most one header block of
    ``max_header_block`` bytes and ``max_headers`` lines (``ProtocolLimits``): a bigger block or
    body is refused before it is split, so a hostile peer cannot freeze the event loop or
    multiply its bytes into memory.
    """

    __slots__ = ("_buffer", "_pending", "_searched", "max_body", "max_header_block", "max_headers")

    def __init__(
        self,
        max_header_block: int | None = None,
        max_body: int | None = None,
        *,
        max_headers: int | None = None,
        limits: ProtocolLimits = DEFAULT_LIMITS,
    ) -> None:
        self._buffer = bytearray()
        # a header block already parsed whose body has not fully arrived: (headers, body length)
        self._pending: tuple[Headers, int] | None = None
        # how far the buffer was already searched for a block end (a big block arrives in many reads)
        self._searched = 0
        self.max_header_block = limits.max_header_block if max_header_block is None else max_header_block
        self.max_body = limits.max_body if max_body is None else max_body
        self.max_headers = limits.max_headers if max_headers is None else max_headers

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete, in order.

        Raises ``ProtocolError`` when the stream cannot be framed any more. Frames completed by the
        same call before the bad bytes are then on the exception's ``frames`` attribute, so the
        result does not depend on how the bytes were split into reads.
        """
        if data:
            self._buffer += data
        frames: list[Frame] = []
        try:
            self._parse(frames)
        except ProtocolError as exc:
            exc.frames = frames
            raise
        return frames

    def _parse(self, frames: list[Frame]) -> None:
        buffer = self._buffer
        while True:
            if self._pending is not None:
                headers, length = self._pending
                if len(buffer) < length:
                    break
                # one copy: a bytearray slice and then bytes() would be two (3x a 64 MiB body at peak)
                with memoryview(buffer) as view:
                    body = view[:length].tobytes()
                del buffer[:length]
                self._pending = None
                frames.append(Frame(headers, body))
                continue
            # FreeSWITCH writes no blank lines between frames; a robust reader skips them anyway.
            if not buffer:
                break
            if buffer[0] in (10, 13):
                del buffer[: _BLANK_LINES.match(buffer).end()]
                if not buffer:
                    break
            end, sep = _find_block_end(buffer, self._searched)
            if end < 0:
                self._searched = max(0, len(buffer) - 3)
                # the last two bytes may be the start of the terminator, so they do not count yet
                if len(buffer) - 2 > self.max_header_block:
                    raise ProtocolError(
                        f"header block exceeds {self.max_header_block} bytes without a blank line"
                    )
                break
            self._searched = 0
            if end > self.max_header_block:
                # same verdict whether the block arrived in one read or in many
                raise ProtocolError(f"header block exceeds {self.max_header_block} bytes")
            with memoryview(buffer) as view:
                block = view[:end].tobytes()
            del buffer[: end + sep]
            known = _ENVELOPES.get(block) if len(block) <= _ENVELOPE_MAX else None
            if known is not None and known[2] == (self.max_body, self.max_headers):
                headers, length, _ = known
            else:
                # counted in C before any line is split: the split is what costs (tuples, strings)
                if too_many_lines(block, self.max_headers):
                    raise ProtocolError(f"header block has more than {self.max_headers} lines")
                headers = _parse_block(block)
                length = _content_length(headers, self.max_body)
                if (
                    len(block) <= _ENVELOPE_MAX
                    and headers._index is not None
                    and len(_ENVELOPES) < _ENVELOPES_KEPT
                    and b"UUID" not in block
                ):
                    _ENVELOPES[block] = (headers, length, (self.max_body, self.max_headers))
            if length:
                self._pending = (headers, length)
                continue
            frames.append(Frame(headers))

    def eof(self) -> None:
        """Call when the peer closed the connection; raises if it left a frame half-written."""
        if self._pending is not None:
            headers, length = self._pending
            raise ProtocolError(
                f"connection closed inside a {headers.get('Content-Type')!r} body "
                f"({len(self._buffer)} of {length} bytes received)"
            )
        if self._buffer.strip(b"\r\n"):
            raise ProtocolError(f"connection closed inside a header block ({len(self._buffer)} bytes)")


# The blank line ending a block: LF LF, or LF CR LF (a CR LF terminator counts only before the first
# LF LF: the leftmost match). One compiled search: two bytes.find calls took 14.5 us over the ~11 kB
# connect reply, which has an LF every ~40 bytes (CPython 3.11's fastsearch); this takes 6.4.
_BLOCK_END = re.compile(rb"\n\r?\n")


def _find_block_end(buffer: bytearray, start: int) -> tuple[int, int]:
    """Position of the blank line ending the block and the separator's length (LF LF or CR LF CR LF)."""
    found = _BLOCK_END.search(buffer, start)
    if found is None:
        return -1, 2
    end = found.start()
    return end, found.end() - end


def _parse_block(block: bytes) -> Headers:
    if block.startswith(b"Event-Name:"):
        lazy = _lazy_connect_reply(block)
        if lazy is not None:
            return lazy
    # lines without a colon are skipped: e.g. the second line of a getvar reply whose value had a newline
    pairs = [(name, value.decode("utf-8", "surrogateescape")) for name, value in split_header_lines(block)]
    headers = Headers(pairs)
    # The connect reply is a whole serialized CHANNEL_DATA event: its values are URL-encoded. Every
    # other envelope is raw, so decoding it would corrupt a Reply-Text that holds '%41' (spec 1.5).
    # only a block with an Event-Name line can be one (nearly every envelope has none: not looked at)
    if b"event-name" in block.lower() and looks_like_connect_reply(headers):
        headers = Headers((name, decode_value(value)) for name, value in pairs)
    return headers


def _lazy_connect_reply(block: bytes) -> Headers | None:
    """The connect reply as FreeSWITCH writes it, kept raw: values are decoded when read.

    ``Event-Name`` is the first line, so the block is a connect reply exactly when its first
    ``Content-Type`` line says ``command/reply`` (``looks_like_connect_reply``). Anything less
    regular (another spelling of Content-Type before it) returns None: the eager parse decides.
    """
    lower = block.lower()
    at = lower.find(b"\ncontent-type:")
    if at < 0 or lower.find(b"content-type") != at + 1:
        return None
    # A lazy lookup finds the first line that starts with the name. A Content-Length spelled with a
    # leading space before it (which the eager parse counts) would frame the body by one value and
    # serialize the other; FreeSWITCH writes none in a connect reply, so any takes the exact path.
    if b"content-length" in lower:
        return None
    end = block.find(b"\n", at + 1)
    value = block[at + 14 : end if end >= 0 else len(block)]
    if value.strip().lower() != b"command/reply":
        return None
    # values are URL-encoded (spec 1.5); the lower-cased copy is not kept with it (this lives as long as
    # the call), only shared for the lookups that follow (the handshake's, the routing's)
    return Headers.from_block(block, encoded=True, lower=lower, event_block=True)


def _content_length(headers: Headers, max_body: int) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    # ASCII digits only: int() would also take '1_0', '+5' or full-width digits, and raise ValueError
    # past 4,300 digits
    return parse_length(raw.strip(), max_body, "Content-Length")
