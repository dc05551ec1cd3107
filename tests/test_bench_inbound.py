"""The inbound benchmark's inputs are what it claims: real-sized CHANNEL_* events, the same in JSON.

(The figures themselves come from ``esl-app bench-inbound``, never from a timed test.)
"""

from __future__ import annotations

from esl_app.bench.inbound import _split_frames, build_stream, to_json_stream
from esl_app.cli import build_parser
from esl_app.protocol import Parser


def test_stream_is_real_sized_channel_events() -> None:
    data, count = build_stream(3)
    frames = Parser().feed(data)
    assert len(frames) == count == 36  # 12 events per call
    events = [frame.event() for frame in frames]
    assert all(event.name.startswith("CHANNEL_") for event in events)
    assert len({event.unique_id for event in events}) == 3
    assert len(data) // count > 5000  # a SIP channel's variables: several kB per event
    assert _split_frames(data) == [frame.to_bytes() for frame in frames]


def test_json_stream_carries_the_same_events() -> None:
    data, _ = build_stream(1)
    plain = [frame.event() for frame in Parser().feed(data)]
    json_events = [frame.event() for frame in Parser().feed(to_json_stream(data))]
    assert [e.format for e in json_events] == ["json"] * len(plain)
    # duplicates (Hangup-Cause twice) become one JSON array, so compare as multisets
    assert [sorted(e.headers.items()) for e in json_events] == [sorted(e.headers.items()) for e in plain]


def test_command_is_registered() -> None:
    args = build_parser().parse_args(["bench-inbound", "--events", "10", "--rounds", "1"])
    assert (args.events, args.rounds, args.concurrency) == (10, 1, 16)
