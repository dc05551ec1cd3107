"""Helpers for the protocol tests: the real FreeSWITCH 1.10.12 captures in ``fixtures/transcripts``.

Each ``.jsonl`` line with a ``conn`` holds one real socket read or write (``bytes_latin1`` decoded as
latin-1 gives the exact bytes). A read boundary is where ``recv`` returned, not a frame boundary.

Importing this module also makes the project importable when pytest runs without the package
installed (the ``tests`` folder is on ``sys.path``, the project root is not).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from esl_app.protocol import Frame, Parser  # noqa: E402  (needs the path set above)

TRANSCRIPTS = ROOT / "fixtures" / "transcripts"
FROM_SWITCH = ("FS->APP", "FS->CLIENT")
TO_SWITCH = ("APP->FS", "CLIENT->FS")


@dataclass(frozen=True)
class Connection:
    """One TCP connection of a capture: what FreeSWITCH wrote (as read) and what it was sent."""

    capture: str
    name: str
    reads: tuple[bytes, ...]  # FreeSWITCH -> application/client, one item per socket read
    writes: tuple[bytes, ...]  # application/client -> FreeSWITCH, one item per write

    @property
    def received(self) -> bytes:
        return b"".join(self.reads)

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)


def capture_names() -> list[str]:
    return sorted(path.stem for path in TRANSCRIPTS.glob("*.jsonl"))


@cache
def load(capture: str) -> dict[str, Connection]:
    """Connections of one capture by name (``inbound``, ``outbound#3``, ...), in order of appearance."""
    reads: dict[str, list[bytes]] = {}
    writes: dict[str, list[bytes]] = {}
    with (TRANSCRIPTS / f"{capture}.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if "conn" not in record:
                continue  # a NOTE line
            data = record["bytes_latin1"].encode("latin-1")
            assert len(data) == record["len"]
            reads.setdefault(record["conn"], [])
            writes.setdefault(record["conn"], [])
            if record["dir"] in FROM_SWITCH:
                reads[record["conn"]].append(data)
            else:
                assert record["dir"] in TO_SWITCH, record["dir"]
                writes[record["conn"]].append(data)
    return {
        name: Connection(capture, name, tuple(reads[name]), tuple(writes[name])) for name in reads
    }


def connections() -> list[Connection]:
    return [conn for capture in capture_names() for conn in load(capture).values()]


def parse(chunks: Iterable[bytes], *, eof: bool = True) -> list[Frame]:
    """Feed chunks to a fresh parser; every frame, and a check that nothing was left half-read."""
    parser = Parser()
    frames: list[Frame] = []
    for chunk in chunks:
        frames += parser.feed(chunk)
    if eof:
        parser.eof()
        assert parser.buffered == 0
    return frames


@cache
def frames_of(capture: str, conn: str) -> tuple[Frame, ...]:
    """The frames FreeSWITCH wrote on one connection, parsed from the captured reads."""
    return tuple(parse(load(capture)[conn].reads))


def byte_by_byte(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def random_chunks(data: bytes, seed: int, max_size: int = 4096) -> list[bytes]:
    """Split at random points; sizes drawn from 1..max_size, often tiny, so that splits land in
    header lines, between the two LFs of a terminator and inside bodies."""
    rng = random.Random(seed)
    chunks: list[bytes] = []
    i = 0
    while i < len(data):
        size = rng.choice((1, 2, 3, rng.randint(1, 64), rng.randint(1, max_size)))
        chunks.append(data[i : i + size])
        i += size
    return chunks


def split_everywhere(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every two-piece split of ``data``."""
    for i in range(len(data) + 1):
        yield data[:i], data[i:]
