"""An ordered, case-insensitive multimap of header fields.

FreeSWITCH repeats some headers (CHANNEL_HANGUP_COMPLETE carries ``Hangup-Cause`` twice) and looks
names up case-insensitively, so a plain dict loses information. ``Headers`` keeps every pair in wire
order; ``get``/``[]`` return the first occurrence, ``get_all`` every one.

Lazy mode (``Headers.from_block``): a serialized event of a real call has 100-250 headers, and a call
control application reads five of them. A lazy ``Headers`` keeps the raw header block (bytes) and
finds a name in it when asked (``bytes.find`` on a lower-cased copy: the first line that starts with
``name:``, any case; a name spelled as asked early in the block is found without that copy), then
decodes that one value. Everything that needs all pairs (iteration,
``items``, ``get_all``, ``len``, equality) parses the whole block once, exactly as the eager path
does, and drops the raw bytes. A name that is not found at line start but occurs somewhere in the
block (e.g. written with spaces around it) also takes the full parse, so results match the eager
parse except for an earlier duplicate spelled with surrounding whitespace, which FreeSWITCH never
writes.

Packing (``Headers.pack``): the connect reply lives as long as its call (~11 kB on a real SIP call,
the largest part of a call held in a playback). A call that waits long packs it with zlib, against
the first block this process packed as a preset dictionary: the blocks of one switch share nearly
every name and many values, so ~11 kB becomes ~1-2 kB. Values already read stay cached; the next
lookup of another name inflates the block again (tens of microseconds) and keeps it inflated until
the next pack.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from .urlcode import decode_value

ARRAY_PREFIX = "ARRAY::"
# The preset dictionary of ``Headers.pack``: the first block packed in this process, kept for good (a
# block packed against it needs the very same bytes to be inflated).
_zdict: bytes | None = None

# (block, block.lower()) of the long-lived block looked up last (see Headers.from_block)
_recent_lower: tuple[bytes | None, bytes] = (None, b"")


def split_header_lines(block: bytes) -> list[tuple[str, bytes]]:
    """Split a header block into (name, raw value) pairs, FreeSWITCH style.

    Split on ``\\n`` only (never ``splitlines``), strip one trailing ``\\r``, split at the first ``:``
    and skip the spaces after it. Lines without a colon are ignored, empty values are kept.
    """
    pairs: list[tuple[str, bytes]] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        name, colon, value = line.partition(b":")
        if not colon or not name:
            continue
        pairs.append((name.decode("utf-8", "surrogateescape").strip(), value.lstrip(b" ")))
    return pairs


class Headers:
    __slots__ = (
        "_cache", "_encoded", "_index", "_items", "_keep_lower", "_lower", "_packed", "_raw", "event_block",
    )  # fmt: skip

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] | None = list(items)
        index: dict[str, list[str]] = {}
        for name, value in self._items:
            index.setdefault(name.lower(), []).append(value)
        self._index: dict[str, list[str]] | None = index
        self._raw: bytes | None = None
        self._packed: tuple[bytes, bytes] | None = None
        self.event_block = False  # a whole serialized event (connect reply), known to the parser

    @classmethod
    def from_block(
        cls,
        block: bytes,
        *,
        encoded: bool,
        lower: bytes | None = None,
        event_block: bool = False,
        short_lived: bool = False,
    ) -> Headers:
        """Lazy headers over a raw block of ``Name: value`` lines (values URL-decoded if ``encoded``).

        ``lower`` is ``block.lower()`` if the caller has it. ``short_lived`` (events) keeps the
        lower-cased copy once a lookup made it; long-lived blocks (channel data) do not, to keep
        their memory at the size of the block, and share the one most recently made instead (a
        call reads its channel data in bursts: the handshake, the routing). A ``lower`` given for a
        long-lived block becomes that shared one, so its first lookups do not lower it again.
        """
        global _recent_lower
        self = cls.__new__(cls)
        self._items = None
        self._index = None
        self._raw = block
        self._packed = None
        if lower is not None and not short_lived:
            _recent_lower = (block, lower)
            lower = None
        self._lower = lower
        self._keep_lower = short_lived
        self._encoded = encoded
        self._cache = None
        self.event_block = event_block
        return self

    # -- packing -------------------------------------------------------------------------------
    def pack(self) -> bool:
        """Compress the raw block of lazy headers (see the module's doc); False when there is none
        (already packed, or fully parsed). Reading goes on as before."""
        raw = self._raw
        if raw is None or self._index is not None:
            return False
        global _zdict
        if _zdict is None:
            _zdict = raw
        packer = zlib.compressobj(1, zdict=_zdict)
        self._packed = (packer.compress(raw) + packer.flush(), _zdict)
        self._raw = self._lower = None
        return True

    @property
    def packed(self) -> bool:
        return self._packed is not None

    def _block(self) -> bytes:
        """The raw block, inflated again (and kept so) if it was packed."""
        raw = self._raw
        if raw is None:
            assert self._packed is not None
            data, zdict = self._packed
            inflater = zlib.decompressobj(zdict=zdict)
            raw = self._raw = inflater.decompress(data) + inflater.flush()
            self._packed = None
        return raw

    # -- lazy internals ------------------------------------------------------------------------
    def _materialize(self) -> dict[str, list[str]]:
        raw = self._block()
        encoded = self._encoded
        pairs = [
            (name, decode_value(value) if encoded else value.decode("utf-8", "surrogateescape"))
            for name, value in split_header_lines(raw)
        ]
        index: dict[str, list[str]] = {}
        for name, text in pairs:
            index.setdefault(name.lower(), []).append(text)
        self._items = pairs
        self._index = index
        self._raw = self._lower = self._cache = None
        return index

    def _lowered(self, raw: bytes) -> bytes:
        global _recent_lower
        lower = self._lower
        if lower is not None:
            return lower
        recent = _recent_lower
        if recent[0] is raw:
            return recent[1]
        lower = raw.lower()
        if self._keep_lower:
            self._lower = lower
        else:
            _recent_lower = (raw, lower)
        return lower

    def _exact_early(self, raw: bytes, exact: bytes, name: str) -> int:
        """Where the value of ``name`` starts if it is spelled as asked on a line in the first quarter
        of the block, with no line of another case before it; else -1.

        Without a lower-cased copy of the ~10 kB block: only the part before the line is lowered,
        which alone can hold an earlier line of another case (a name has no LF, so no occurrence
        straddles the line's own). FreeSWITCH writes its canonical spelling, and the names a call
        reads in every event (Unique-ID ~650 bytes in, Hangup-Cause) sit early: this saved a
        ``bytes.lower()`` of the whole event on six of a call's seven events.
        """
        if self._lower is not None or _recent_lower[0] is raw:
            return -1  # the lower-cased copy exists: one find in it is cheaper
        at = raw.find(b"\n" + exact + b":", 0, len(raw) >> 2)
        if at < 0:
            return -1  # absent, other case, or late: the whole copy is made once and kept
        key = name.lower().encode() + b":"
        before = raw[:at].lower()
        if before.startswith(key) or b"\n" + key in before:
            return -1
        return at + 1 + len(key)

    def _lazy_first(self, name: str) -> tuple[bool, str | None]:
        """(True, value or None) when the raw block answers; (False, None) when a full parse must."""
        cache = self._cache
        if cache is not None and name in cache:
            return True, cache[name]
        if not name.isascii() or ":" in name or "\n" in name:
            return False, None
        raw = self._block()
        exact = name.encode()
        if raw.startswith(exact) and raw[len(exact) : len(exact) + 1] == b":":
            # the first line (an event's Event-Name): nothing before it, no lower-cased copy needed
            start = len(exact) + 1
        elif (found := self._exact_early(raw, exact, name)) >= 0:
            start = found
        else:
            lower = self._lowered(raw)
            key = name.lower().encode()
            first = lower.find(key)
            if first < 0:
                # a miss costs one scan, and is remembered: a verb's result headers are often asked
                # twice (its own reading, a resumable flow's journal)
                if cache is None:
                    cache = self._cache = {}
                cache[name] = None
                return True, None
            key += b":"
            if first == 0 and lower.startswith(key):
                start = len(key)
            else:
                at = lower.find(b"\n" + key, max(first - 1, 0))
                if at < 0:
                    return False, None  # e.g. ' Name :' (the eager parse strips names): be exact
                start = at + 1 + len(key)
        end = raw.find(b"\n", start)
        value = raw[start:] if end < 0 else raw[start:end]
        if value.endswith(b"\r"):
            value = value[:-1]
        value = value.lstrip(b" ")
        text = decode_value(value) if self._encoded else value.decode("utf-8", "surrogateescape")
        if cache is None:
            cache = self._cache = {}
        cache[name] = text
        return True, text

    def _full(self) -> dict[str, list[str]]:
        index = self._index
        return index if index is not None else self._materialize()

    # -- the mapping -----------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        index = self._index
        if index is None:
            found, value = self._lazy_first(name)
            if found:
                return default if value is None else value
            index = self._materialize()
        values = index.get(name.lower())
        return values[0] if values else default

    def get_last(self, name: str, default: str | None = None) -> str | None:
        values = self._full().get(name.lower())
        return values[-1] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._full().get(name.lower(), ()))

    def get_array(self, name: str) -> list[str]:
        """A header serialized as ``ARRAY::v1|:v2`` split into its values (a plain value gives one)."""
        value = self.get(name)
        if value is None:
            return []
        if value.startswith(ARRAY_PREFIX):
            return value[len(ARRAY_PREFIX) :].split("|:")
        return [value]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if self._index is None:
            found, value = self._lazy_first(name)
            if found:
                return value is not None
        return name.lower() in self._full()

    def _pairs(self) -> list[tuple[str, str]]:
        if self._items is None:
            self._materialize()
        assert self._items is not None
        return self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs())

    def __len__(self) -> int:
        return len(self._pairs())

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs())

    def to_dict(self) -> dict[str, str]:
        """First occurrence of each name, in wire order (convenient for logs and assertions)."""
        out: dict[str, str] = {}
        for name, value in self._pairs():
            out.setdefault(name, value)
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._pairs() == other._pairs()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._pairs()!r})"
