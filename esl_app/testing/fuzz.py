"""A seeded mutation fuzzer for the ESL codec: hostile frames through the parser and event decoding.

Volume comes from a hand-rolled mutator on ``random.Random(seed)``: it runs at tens of thousands of
frames per second, so a million frames take minutes on one core, and any failure is replayed from its
seed and index. (Hypothesis drives the structured part in the test suite; its per-example overhead
would make a million frames take hours, and atheris needs a clang-built CPython to be useful.)

Seeds are real frames: the captures of FreeSWITCH 1.10.12 (when a ``fixtures/transcripts`` folder is
given) and the real-sized SIP call of ``esl_app.bench.traffic``, plus events written in all three
formats by ``esl_app.protocol.switch``. Each input is 1-4 frames, mutated (bit flips, NUL/CR/LF and
bad ``%`` escapes, huge, negative and duplicated ``Content-Length``, floods of tiny headers, deep
JSON nesting, XML DTDs and encoding declarations, truncation, splicing) and fed in random splits.

The oracle: only ``ProtocolError`` may come out of ``Parser.feed``, ``Frame.event``, reading every
header and ``Frame.to_bytes``; one input may take at most ``time_limit`` seconds (a SIGALRM stops a
hang); RSS may grow by at most ``rss_limit_mb``; a sample is run under ``tracemalloc`` and its peak
must stay under ``alloc_limit`` times the input plus 1 MiB; and every tenth input is also parsed
whole, and must give the same frames and the same verdict as the split feed.
"""

from __future__ import annotations

import itertools
import json
import random
import resource
import signal
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol import Frame, Parser, ProtocolError, switch

# frames FreeSWITCH writes, as the parser reads them (connect reply, replies, events of each format)
_EXTRA_VALUES = [("Caller-Caller-ID-Name", "Jöhn 😀"), ("variable_sip_h_X", "a%b\r\nc"), ("Multi", "ARRAY::a|:b")]


@dataclass
class FuzzReport:
    inputs: int = 0
    frames_generated: int = 0
    frames_parsed: int = 0
    protocol_errors: int = 0
    seconds: float = 0.0
    slowest_input: float = 0.0  # CPU seconds of the costliest input (wall time also counts waiting for a core)
    slowest_input_wall: float = 0.0
    rss_growth_mb: float = 0.0
    alloc_peak: int = 0  # the largest tracemalloc peak of the sampled inputs, in bytes
    alloc_peak_input: int = 0  # the size of that input
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class _Hang(Exception):
    """Raised by the alarm inside a parse that took longer than the per-input bound."""


def seed_frames(transcripts: Path | None = None) -> list[bytes]:
    """Real frames to mutate: the captures' (when given) and a real-sized SIP call's."""
    seeds: list[bytes] = []
    if transcripts is not None and transcripts.is_dir():
        for path in sorted(transcripts.glob("*.jsonl")):
            streams: dict[str, list[bytes]] = {}
            for line in path.open(encoding="utf-8"):
                record = json.loads(line)
                if record.get("dir") in ("FS->APP", "FS->CLIENT"):
                    streams.setdefault(record["conn"], []).append(record["bytes_latin1"].encode("latin-1"))
            for reads in streams.values():
                try:
                    seeds.extend(frame.to_bytes() for frame in Parser().feed(b"".join(reads)))
                except ProtocolError:
                    continue
    from ..bench.traffic import CallTemplates

    templates = CallTemplates()
    uuid, app = b"0b6c9c1e-5f0e-4d55-9a55-0123456789ab", b"5d2f1b0a-1111-4222-8333-444455556666"
    seeds.append(templates.render(templates.connect_reply, uuid))
    start, done = templates.execute("playback", "ivr/welcome.wav", answered=True)
    for template in (start, done, templates.hangup_sequence("NORMAL_CLEARING", True)):
        seeds.extend(frame.to_bytes() for frame in Parser().feed(templates.render(template, uuid, app)))
    headers = [("Event-Name", "CUSTOM"), ("Unique-ID", uuid.decode()), *_EXTRA_VALUES]
    for body in ("", "body ö\n", "<cdr>&amp;</cdr>"):
        seeds += [switch.event_plain(headers, body), switch.event_json(headers, body), switch.event_xml(headers, body)]
    seeds += [switch.reply("+OK"), switch.api_response("+OK up 1 day\n"), switch.final_notice(uuid.decode()),
              switch.linger_notice(uuid.decode(), "", 10)]  # fmt: skip
    return seeds


_SPECIAL = [b"\x00", b"\r", b"\n", b"\r\n", b"\n\n", b"\n\r\n", b"%", b"%G1", b"%0", b"%FF", b"%%", b"%C3%28",
            b"\xff", b"\xc3", b":", b" ", b"\t", b"&", b"<", b"]]>", b'"', b"\\", b"[", b"{"]  # fmt: skip
_LENGTHS = [b"-1", b"-0", b"0", b"1", b"99999999999999999999", b"1" * 5000, b"-" + b"9" * 5000, b"0" * 5000 + b"5",
            b" 3 ", b"+5", b"1_0", b"0x10", b"\xef\xbc\x95", b"", b"67108865", b"4294967296"]  # fmt: skip
_TYPES = [b"command/reply", b"api/response", b"text/event-plain", b"text/event-json", b"text/event-xml",
          b"text/disconnect-notice", b"auth/request", b"log/data", b"x/unknown"]  # fmt: skip
_XML_HEADS = [b'<?xml version="1.0" encoding="hex"?>', b'<?xml version="" encoding="u"?>',
              b'<?xml version="1.0" encoding="utf-32"?>', b'<?xml version="1.0" encoding="idna"?>',
              b'<?xml version="1.0" encoding="punycode"?>', b'<!DOCTYPE e [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>',
              b'<!DOCTYPE e SYSTEM "file:///etc/passwd">', b"\xef\xbb\xbf", b"\xff\xfe"]  # fmt: skip


class Mutator:
    """Seeded mutations of real frames; ``frames()`` yields (wire bytes, frames in them)."""

    def __init__(self, seeds: list[bytes], seed: int) -> None:
        self.seeds = seeds
        self.random = random.Random(seed)

    def one_input(self) -> tuple[bytes, int]:
        rnd = self.random
        count = rnd.choice((1, 1, 2, 3, 4))
        parts = []
        for _ in range(count):
            frame = rnd.choice(self.seeds)
            for _ in range(rnd.choice((0, 1, 1, 2, 3, 6))):
                frame = self.mutate(frame)
            parts.append(frame)
        return b"".join(parts), count

    def mutate(self, data: bytes) -> bytes:  # one branch per mutation
        rnd = self.random
        size = len(data)
        at = rnd.randrange(size + 1)
        op = rnd.randrange(16)
        if op == 0 and size:  # flip bits
            index = rnd.randrange(size)
            return data[:index] + bytes([data[index] ^ (1 << rnd.randrange(8))]) + data[index + 1 :]
        if op == 1:
            return data[:at] + rnd.choice(_SPECIAL) + data[at:]
        if op == 2:  # delete a range
            return data[:at] + data[at + rnd.randrange(1, 64) :]
        if op == 3:  # duplicate a range
            end = min(size, at + rnd.randrange(1, 256))
            return data[:end] + data[at:end] * rnd.randrange(1, 4) + data[end:]
        if op == 4:  # another Content-Length value
            head, sep, rest = data.partition(b"Content-Length: ")
            if sep:
                _, nl, tail = rest.partition(b"\n")
                return head + sep + rnd.choice(_LENGTHS) + nl + tail
            return b"Content-Length: " + rnd.choice(_LENGTHS) + b"\n" + data
        if op == 5:  # a duplicated Content-Length, maybe spelled with spaces
            spelling = rnd.choice((b" Content-Length", b"Content-Length ", b"content-length", b"Content-Length"))
            line = spelling + b": " + str(rnd.randrange(0, 64)).encode() + b"\n"
            end = data.find(b"\n")
            return data[: end + 1] + line + data[end + 1 :] if end >= 0 else line + data
        if op == 6:  # another Content-Type (a reply read as an event, an event as another format)
            head, sep, rest = data.partition(b"Content-Type: ")
            if sep:
                _, nl, tail = rest.partition(b"\n")
                return head + sep + rnd.choice(_TYPES) + nl + tail
            return b"Content-Type: " + rnd.choice(_TYPES) + b"\n" + data
        if op == 7:  # truncate
            return data[:at]
        if op == 8:  # splice with another seed
            other = rnd.choice(self.seeds)
            return data[:at] + other[rnd.randrange(len(other) + 1) :]
        if op == 9 and rnd.random() < 0.1:  # a flood of tiny headers (rarely: they are big)
            return data[:at] + b"a:\n" * rnd.choice((100, 3000, 12_000)) + data[at:]
        if op == 10:  # deep JSON nesting
            return data[:at] + rnd.choice((b"[", b'{"a":', b"[[{")) * rnd.choice((10, 500, 1100)) + data[at:]
        if op == 11:  # XML declarations and DTDs at the start of a body
            body_at = data.find(b"\n\n")
            body_at = body_at + 2 if body_at >= 0 else 0
            return data[:body_at] + rnd.choice(_XML_HEADS) + data[body_at:]
        if op == 12:  # bad percent escapes in values
            return data.replace(b"%", rnd.choice((b"%%", b"%G", b"%0", b"%ZZ", b"%")), rnd.randrange(1, 20))
        if op == 13:  # NUL, CR and CR LF line ends everywhere
            return data.replace(b"\n", rnd.choice((b"\r\n", b"\n\x00", b"\r", b"\n\r")), rnd.randrange(1, 50))
        if op == 14:  # random bytes
            return data[:at] + rnd.randbytes(rnd.randrange(1, 32)) + data[at:]
        # a body shorter or longer than its Content-Length
        return data + rnd.choice((b"", b"x", b"\n", b"\n\n", b"Content-Type: command/reply\n\n"))

    def splits(self, data: bytes) -> list[bytes]:
        """Random reads: a few cut points anywhere, now and then 1-7 byte reads of a short input."""
        rnd = self.random
        size = len(data)
        if size < 2:
            return [data]
        if size < 4096 and rnd.random() < 0.02:
            cuts = list(range(0, size, rnd.randrange(1, 8)))[1:]
        else:
            cuts = sorted(rnd.sample(range(1, size), min(size - 1, rnd.choice((0, 1, 2, 3, 8)))))
        bounds = [0, *cuts, size]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _exercise(frames: list[Frame]) -> None:
    """What an application does with frames: events decoded, every header read, frames re-serialized."""
    for frame in frames:
        try:
            if frame.is_event or frame.is_connect_reply:
                event = frame.event()
                _ = (event.name, event.headers.items())
            _ = (frame.headers.items(), frame.reply_text, frame.to_bytes())
        except ProtocolError:
            continue


def _feed(chunks: list[bytes]) -> tuple[list[Frame], bool]:
    parser = Parser()
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            frames += parser.feed(chunk)
        parser.eof()
    except ProtocolError as exc:
        frames += exc.frames  # type: ignore[arg-type]
        return frames, True
    return frames, False


def _on_alarm(_signum: int, _frame: object) -> None:
    raise _Hang()


def run(
    frames: int,
    *,
    seed: int = 0,
    transcripts: Path | None = None,
    time_limit: float = 2.0,
    rss_limit_mb: float = 512.0,
    alloc_limit: float = 40.0,
    sample_every: int = 500,
    progress: bool = False,
) -> FuzzReport:
    """Feed at least ``frames`` generated frames; stop at the first failure of the oracle."""
    report = FuzzReport()
    mutator = Mutator(seed_frames(transcripts), seed)
    alarm = hasattr(signal, "setitimer")
    previous = signal.signal(signal.SIGALRM, _on_alarm) if alarm else None
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    next_progress = started + 10
    try:
        while report.frames_generated < frames and not report.failures:
            data, count = mutator.one_input()
            index = report.inputs
            report.inputs += 1
            report.frames_generated += count
            chunks = mutator.splits(data)
            sampled = index % sample_every == 0
            t0, cpu0 = time.perf_counter(), time.process_time()
            try:
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, time_limit)
                if sampled:
                    tracemalloc.start()
                try:
                    parsed, refused = _feed(chunks)
                    _exercise(parsed)
                    if index % 10 == 0:
                        whole, whole_refused = _feed([data])
                        if (whole, whole_refused) != (parsed, refused):
                            report.failures.append(f"input {index}: split-dependent result")
                finally:
                    if sampled:
                        peak = tracemalloc.get_traced_memory()[1]
                        tracemalloc.stop()
                        if peak > report.alloc_peak:
                            report.alloc_peak, report.alloc_peak_input = peak, len(data)
                        if peak > (1 << 20) + alloc_limit * len(data):
                            report.failures.append(f"input {index}: {peak} bytes allocated for {len(data)}")
                    if alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except _Hang:
                report.failures.append(f"input {index}: took over {time_limit} s")
                parsed, refused = [], False
            except Exception as exc:  # the point: nothing but ProtocolError may escape
                report.failures.append(f"input {index}: {type(exc).__name__}: {str(exc)[:200]}")
                parsed, refused = [], False
            report.slowest_input = max(report.slowest_input, time.process_time() - cpu0)
            report.slowest_input_wall = max(report.slowest_input_wall, time.perf_counter() - t0)
            report.frames_parsed += len(parsed)
            report.protocol_errors += refused
            if report.failures:
                report.failures[-1] += f" (seed {seed}; input repr: {data[:300]!r}...)"
            if index % 1000 == 0:
                growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
                report.rss_growth_mb = growth
                if growth > rss_limit_mb:
                    report.failures.append(f"RSS grew by {growth:.0f} MB")
            if progress and time.perf_counter() > next_progress:
                next_progress += 10
                rate = report.frames_generated / (time.perf_counter() - started)
                print(f"  {report.frames_generated:,} frames, {rate:,.0f}/s", flush=True)
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    report.seconds = time.perf_counter() - started
    report.rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return report
