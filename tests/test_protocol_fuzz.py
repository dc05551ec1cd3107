"""The fuzzer, small: a few seconds of mutated real frames in the suite (``esl-app fuzz`` runs a million).

Plus the structured part with hypothesis: hostile header blocks and event payloads built from parts
(``Content-Length`` spellings and values, percent escapes, NUL and CR bytes) through the same oracle.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transcripts import ROOT, TRANSCRIPTS

from esl_app.protocol import Parser, ProtocolError
from esl_app.testing import fuzz


def test_fuzz_run_of_real_captures_finds_nothing() -> None:
    report = fuzz.run(15_000, seed=16, transcripts=TRANSCRIPTS, sample_every=200)
    assert report.ok, report.failures
    assert report.frames_generated >= 15_000 and report.frames_parsed > 5_000
    assert 0 < report.protocol_errors < report.inputs  # the mutations do reach the error paths
    assert report.alloc_peak > 0


def test_the_seeds_are_the_real_captures_and_a_sip_call() -> None:
    seeds = fuzz.seed_frames(TRANSCRIPTS)
    assert len(seeds) > 200
    assert sum(1 for seed in seeds if b"text/event-json" in seed[:200]) >= 2
    assert max(len(seed) for seed in seeds) > 9_000  # the real-sized connect reply


def test_the_oracle_catches_an_escaping_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(payload: bytes, *_args: object) -> None:
        raise RecursionError("deep")

    monkeypatch.setattr("esl_app.protocol.frames.parse_json_event", broken)
    report = fuzz.run(3_000, seed=1)
    assert not report.ok and "RecursionError" in report.failures[0]


def test_fuzz_command_prints_the_count_and_the_time() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "esl_app.cli", "fuzz", "--frames", "2000", "--seed", "3"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2,0" in done.stdout and "frames generated" in done.stdout and " s (" in done.stdout


LENGTHS = st.one_of(
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    st.integers(4200, 6000).map(lambda n: b"1" * n),
    st.binary(max_size=12),
)
NAMES = st.sampled_from([b"Content-Length", b" Content-Length", b"content-length", b"Content-Length ", b"X"])
VALUE = st.lists(st.sampled_from([b"%", b"%0", b"%G", b"%41", b"\x00", b"\r", b"a", b"\xff", b" ", b":"]), max_size=8)
TYPES = st.sampled_from([b"text/event-plain", b"text/event-json", b"text/event-xml", b"command/reply", b"api/response"])


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    lines = [b"Content-Type: " + draw(TYPES)]
    if draw(st.booleans()):
        lines.insert(0, b"Event-Name: CHANNEL_DATA")
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(NAMES) + b": " + draw(LENGTHS))
    for _ in range(draw(st.integers(0, 3))):
        lines.append(b"X-Value: " + b"".join(draw(VALUE)))
    body = draw(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"[" * 1200, b'{"a":' * 1200, b"<!DOCTYPE x []><x/>", b'<?xml encoding="hex"?><e/>']),
            st.builds(lambda n: b"Event-Name: X\nContent-Length: " + n + b"\n\nbody", LENGTHS),
        )
    )
    if draw(st.booleans()):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\n".join(lines) + b"\n\n" + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_frames(), st.integers(1, 64))
def test_structured_hostile_frames_only_raise_protocol_error(data: bytes, chunk: int) -> None:
    parser = Parser()
    try:
        frames = [frame for at in range(0, len(data), chunk) for frame in parser.feed(data[at : at + chunk])]
    except ProtocolError:
        return
    for frame in frames:
        try:
            if frame.is_event or frame.is_connect_reply:
                frame.event().headers.items()
        except ProtocolError:
            continue
        # framing and serialization agree: read back, one frame, same kind, body and length (values
        # may differ: a raw value's leading spaces and trailing CR do not survive, spec appendix A)
        again = Parser().feed(frame.to_bytes())
        if len(frame.headers):
            (copy,) = again
            assert (copy.kind, copy.body, copy.headers.get("Content-Length")) == (
                frame.kind, frame.body, frame.headers.get("Content-Length"),
            )  # fmt: skip
