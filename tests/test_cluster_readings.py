"""HEARTBEAT and ``api status`` read into numbers, from the real FreeSWITCH 1.10.12 captures."""

from __future__ import annotations

import pytest
from transcripts import load

from esl_app.cluster.readings import ReadingError, heartbeat_reading, pause_reading, status_reading
from esl_app.protocol import Event, Headers, Parser


def _captured_heartbeats() -> list[Event]:
    parser = Parser()
    frames = parser.feed(load("07_event_formats_plain_json_xml_heartbeat")["inbound"].received)
    events = [frame.event() for frame in frames if frame.is_event]
    return [event for event in events if event.name == "HEARTBEAT"]


def test_heartbeats_in_every_format_read_the_same():
    beats = _captured_heartbeats()
    assert {event.format for event in beats} == {"plain", "json", "xml"}
    for event in beats:
        reading = heartbeat_reading(event)
        assert reading.sessions == 2
        assert reading.max_sessions == 1000
        assert 80 < reading.idle_cpu < 100
        assert reading.sessions_per_second == 0  # Session-Per-Sec-Last, not the 30 tokens left
        assert reading.core_uuid == "452ba012-8aeb-4c06-bbf3-04f1c9694843"
        assert reading.uptime_msec and reading.uptime_msec > 160_000
        assert reading.ready is None  # a heartbeat does not say whether the node is paused


def test_status_reply_as_captured():
    text = (
        "UP 0 years, 0 days, 0 hours, 2 minutes, 33 seconds, 304 milliseconds, 660 microseconds\n"
        "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready\n"
        "28 session(s) since startup\n"
        "2 session(s) - peak 4, last 5min 4 \n"
        "0 session(s) per Sec out of max 30, peak 2, last 5min 2 \n"
        "1000 session(s) max\n"
        "min idle cpu 0.00/89.73\n"
        "Current Stack Size/Max 240K/8192K\n"
    )
    reading = status_reading(text)
    assert (reading.sessions, reading.max_sessions, reading.idle_cpu) == (2, 1000, 89.73)
    assert reading.uptime_msec == 153_304
    assert reading.ready is True
    assert status_reading(text.replace("is ready", "is not ready")).ready is False


@pytest.mark.parametrize("text", ["-ERR status Command not found!\n", "UP 0 years\n", ""])
def test_unreadable_status_is_a_named_error(text):
    with pytest.raises(ReadingError):
        status_reading(text)


def test_heartbeat_without_numbers_is_a_named_error():
    event = Event(Headers([("Event-Name", "HEARTBEAT"), ("Session-Count", "many")]))
    with pytest.raises(ReadingError, match="Session-Count"):
        heartbeat_reading(event)


def test_pause_check_answers():
    assert pause_reading("true") is True
    assert pause_reading("false") is False
    with pytest.raises(ReadingError):
        pause_reading("-ERR permission denied\n")
