"""The parser against every real FreeSWITCH 1.10.12 capture in ``fixtures/transcripts``.

Per connection the bytes FreeSWITCH wrote are fed as captured reads, whole, byte by byte and in
random chunks; all four must give the same frames. Then specific frames are checked against what the
spec (``esl-protocol.md``) says they contain.
"""

from __future__ import annotations

import collections

import pytest
import transcripts
from transcripts import byte_by_byte, capture_names, frames_of, load, parse, random_chunks

from esl_app.protocol import Frame, FrameKind, Parser, commands, switch
from esl_app.protocol.switch import FINAL_NOTICE_BODY, CommandReader

SEEDS = (1, 2, 3, 4)


def _frames_of(name: str, conn: str) -> list[Frame]:
    return list(frames_of(name, conn))


# --------------------------------------------------------------------------------------------------
# Chunking: the result never depends on where the reads ended
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("capture", capture_names())
def test_every_capture_parses_identically_however_it_is_split(capture: str) -> None:
    conns = load(capture)
    assert conns, capture
    for conn in conns.values():
        data = conn.received
        as_read = parse(conn.reads)
        assert as_read, f"{capture} {conn.name}: no frames"
        assert parse([data]) == as_read, f"{capture} {conn.name}: whole"
        assert parse(byte_by_byte(data)) == as_read, f"{capture} {conn.name}: byte by byte"
        for seed in SEEDS:
            chunks = random_chunks(data, seed)
            assert parse(chunks) == as_read, f"{capture} {conn.name}: random chunks, seed {seed}"
        # nothing is lost or invented: the frames serialize back to exactly the captured stream
        assert b"".join(frame.to_bytes() for frame in as_read) == data
        for frame in as_read:
            assert frame.kind is not FrameKind.UNKNOWN, frame
            if frame.is_event:
                frame.event()  # every event payload parses too


def test_captures_really_split_and_merge_frames_across_reads() -> None:
    """The captured read boundaries are worth testing: some reads end inside a frame, some carry several."""
    ends_inside = carries_several = 0
    for conn in transcripts.connections():
        parser = Parser()
        for read in conn.reads:
            got = parser.feed(read)
            carries_several += len(got) > 1
            ends_inside += parser.buffered > 0 or parser._pending is not None
    assert ends_inside > 10
    assert carries_several > 10


def test_frame_kinds_across_all_captures() -> None:
    counts: collections.Counter[FrameKind] = collections.Counter()
    for conn in transcripts.connections():
        counts.update(frame.kind for frame in frames_of(conn.capture, conn.name))
    observed = {
        FrameKind.REPLY,
        FrameKind.API,
        FrameKind.EVENT_PLAIN,
        FrameKind.EVENT_JSON,
        FrameKind.EVENT_XML,
        FrameKind.DISCONNECT,
        FrameKind.AUTH,
        FrameKind.LOG,
    }
    for kind in observed:
        assert counts[kind] > 0, kind
    assert FrameKind.UNKNOWN not in counts
    assert FrameKind.REJECTION not in counts  # not captured: built below
    # the captures as they are today (update when captures are added)
    assert counts == {
        FrameKind.EVENT_PLAIN: 678,
        FrameKind.REPLY: 435,
        FrameKind.API: 149,
        FrameKind.DISCONNECT: 86,
        FrameKind.AUTH: 53,
        FrameKind.EVENT_JSON: 4,
        FrameKind.EVENT_XML: 3,
        FrameKind.LOG: 1,
    }


def test_rude_rejection_is_not_captured_so_build_it() -> None:
    data = switch.rude_rejection()
    assert data == b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
    for chunks in ([data], byte_by_byte(data)):
        (frame,) = parse(chunks)
        assert frame.kind is FrameKind.REJECTION
        assert frame.body == b"Access Denied, go away.\n"
        assert not frame.is_event and not frame.is_final_notice
    # followed by EOF, and nothing else is read as a frame
    parser = Parser()
    assert len(parser.feed(data)) == 1
    parser.eof()


# --------------------------------------------------------------------------------------------------
# Concrete frames
# --------------------------------------------------------------------------------------------------


def test_connect_reply_is_one_decoded_block_without_content_length() -> None:
    frames = _frames_of("01c_async_nofull_answer_playback_hangup", "outbound#2")
    reply = frames[0]
    assert reply.kind is FrameKind.REPLY and reply.is_connect_reply
    assert reply.body == b"" and "Content-Length" not in reply.headers
    assert len(reply.headers) == 104
    assert len(reply.to_bytes()) == 3475  # spec E1
    headers = reply.headers
    assert headers.items()[0] == ("Event-Name", "CHANNEL_DATA")
    assert headers["Reply-Text"] == "+OK\n"  # sent as %2BOK%0A
    assert headers["Socket-Mode"] == "async"
    assert headers["Control"] == "single-channel"
    assert headers["Channel-Destination-Number"] == "asyncnf"
    assert headers["FreeSWITCH-IPv6"] == "fd00::2"  # fd00%3A%3A2
    assert headers["Event-Date-Local"] == "2026-11-26 03:42:47"  # 2026-11-26%2003%3A42%3A47
    assert headers["variable_current_application_data"] == "127.0.0.1:8084 async"
    assert list(headers)[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert reply.ok and reply.reply_text == "+OK\n"
    event = reply.event()
    assert event.name == "CHANNEL_DATA" and event.unique_id == "014cfed0-74be-4ac4-bfba-fc2dc5a444f9"
    assert event.variable("socket_host") == "127.0.0.1"
    # the wire bytes really were encoded
    assert b"Reply-Text: %2BOK%0A\n" in load("01c_async_nofull_answer_playback_hangup")["outbound#2"].received

    full = _frames_of("01_async_full_answer_playback_hangup_linger", "outbound#1")[0]
    assert full.is_connect_reply and full.headers["Control"] == "full"
    static = _frames_of("01b_sync_full_answer_playback_hangup_linger5", "outbound#1")[0]
    assert static.headers["Socket-Mode"] == "static"


def test_second_connect_gets_a_second_connect_reply() -> None:
    frames = _frames_of("08_errors", "outbound#4")
    connects = [i for i, frame in enumerate(frames) if frame.is_connect_reply]
    assert connects == [0, 17]


def test_a_plain_reply_is_not_decoded() -> None:
    frames = _frames_of("02_event_uuid_application_uuid", "outbound#3")
    assert frames[1].kind is FrameKind.REPLY and not frames[1].is_connect_reply
    assert frames[1].headers.items() == [("Content-Type", "command/reply"), ("Reply-Text", "+OK Events Enabled")]


def test_execute_complete_carries_the_event_uuid_sent_as_application_uuid() -> None:
    frames = _frames_of("02_event_uuid_application_uuid", "outbound#3")
    completes = [
        frame.event()
        for frame in frames
        if frame.is_event and frame.event().name == "CHANNEL_EXECUTE_COMPLETE"
    ]
    (complete,) = [e for e in completes if e.get("Application-UUID") == "11111111-aaaa-4bbb-8ccc-000000000002"]
    assert complete["Application"] == "playback"
    assert complete["Application-Response"] == "FILE PLAYED"  # FILE%20PLAYED
    assert complete["Application-Data"] == "tone_stream://%(300,0,440)"  # tone_stream%3A//%25(300,0,440)
    assert complete.variable("current_application_response") == "FILE PLAYED"
    assert complete.variable("playback_ms") == "300"
    assert complete.body == "" and complete.format == "plain"
    # the reply came first, then CHANNEL_EXECUTE, then the COMPLETE (spec E2)
    names = [f.event().name if f.is_event else f.kind for f in frames[6:9]]
    assert names == [FrameKind.REPLY, "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"]
    # the client bytes of that execute are exactly what commands.execute writes (event-lock off)
    sent = load("02_event_uuid_application_uuid")["outbound#3"].sent
    assert (
        commands.execute(
            "playback",
            "tone_stream://%(300,0,440)",
            event_uuid="11111111-aaaa-4bbb-8ccc-000000000002",
            event_lock=False,
        )
        in sent
    )


def test_background_job_result_is_the_inner_body() -> None:
    conn = load("06_api_bgapi_over_outbound")["outbound#5"]
    frames = _frames_of("06_api_bgapi_over_outbound", "outbound#5")
    reply, job = frames[10], frames[11]
    assert reply.headers.items() == [
        ("Content-Type", "command/reply"),
        ("Reply-Text", "+OK Job-UUID: 22222222-bbbb-4ccc-8ddd-000000000001"),
        ("Job-UUID", "22222222-bbbb-4ccc-8ddd-000000000001"),
    ]
    assert job.kind is FrameKind.EVENT_PLAIN
    assert job.headers.items() == [("Content-Length", "677"), ("Content-Type", "text/event-plain")]
    assert len(job.body) == 677
    event = job.event()
    assert event.name == "BACKGROUND_JOB"
    assert event.body == "0000000000"  # no trailing newline
    assert event["Job-UUID"] == "22222222-bbbb-4ccc-8ddd-000000000001"
    assert event["Job-Owner-UUID"] == "4ba76c75-8a91-42cb-9c81-11e9740a41fd"
    assert event["Job-Command"] == "uuid_getvar"
    assert event["Job-Command-Arg"] == "4ba76c75-8a91-42cb-9c81-11e9740a41fd caller_id_number"
    assert event["Content-Length"] == "10"  # the inner one, not the envelope's 677
    # the reply and the event arrived in one 868-byte read (spec E4)
    assert len(conn.reads[8]) == 868 and len(parse([conn.reads[8]], eof=False)) == 2
    assert commands.bgapi(
        "uuid_getvar", "4ba76c75-8a91-42cb-9c81-11e9740a41fd", "caller_id_number",
        job_uuid="22222222-bbbb-4ccc-8ddd-000000000001",
    ) in conn.sent


def test_background_job_results_with_newline_and_error() -> None:
    frames = _frames_of("05e_socket_target_down", "inbound")
    bodies = [f.event().body for f in frames if f.is_event and f.event().name == "BACKGROUND_JOB"]
    assert bodies == ["-ERR NORMAL_CLEARING\n", "-ERR SERVICE_UNAVAILABLE\n"]


def test_json_and_xml_events() -> None:
    frames = _frames_of("07_event_formats_plain_json_xml_heartbeat", "inbound")
    json_frames = [f for f in frames if f.kind is FrameKind.EVENT_JSON]
    xml_frames = [f for f in frames if f.kind is FrameKind.EVENT_XML]
    assert [f.event().name for f in json_frames] == ["CHANNEL_CREATE", "CHANNEL_CREATE", "HEARTBEAT"]
    assert [f.event().name for f in xml_frames] == ["CHANNEL_CREATE", "CHANNEL_CREATE", "HEARTBEAT"]

    create = json_frames[0].event()
    assert create.format == "json"
    assert not json_frames[0].body.endswith(b"\n")  # no trailing newline
    assert create["FreeSWITCH-IPv6"] == "fd00::2"  # JSON values are not encoded
    assert create["Event-Date-GMT"] == "Thu, 26 Nov 2026 03:44:23 GMT"
    assert create["Channel-State"] == "CS_INIT"
    assert create.unique_id == "31ffe238-ce1a-4311-9efe-1d21d1b7ddb3"
    assert len(create.headers) == 71

    xml_create = xml_frames[0].event()
    assert xml_create.format == "xml"
    assert xml_frames[0].body.startswith(b"<event>\n  <headers>\n    <Event-Name>CHANNEL_CREATE</Event-Name>\n")
    assert xml_frames[0].body.endswith(b"  </headers>\n</event>\n")
    assert xml_create["FreeSWITCH-IPv6"] == "fd00::2"  # element text is encoded: fd00%3A%3A2
    assert xml_create["Event-Date-GMT"] == "Thu, 26 Nov 2026 03:44:28 GMT"
    assert len(xml_create.headers) == 71

    heartbeat = xml_frames[2].event()
    assert heartbeat["Event-Info"] == "System Ready"
    assert heartbeat["Up-Time"].startswith("0 years, 0 days, 0 hours, 2 minutes, 54 seconds")
    assert heartbeat["FreeSWITCH-Version"].startswith("1.10.12-release")
    assert json_frames[2].event()["Event-Info"] == "System Ready"
    assert float(json_frames[2].event()["Idle-CPU"]) >= 0


def test_log_data_with_empty_user_data() -> None:
    frames = _frames_of("15_inbound_filters_log_sendevent_parsing", "inbound")
    (log,) = [f for f in frames if f.kind is FrameKind.LOG]
    assert log.headers.items() == [
        ("Content-Type", "log/data"),
        ("Content-Length", "82"),
        ("Log-Level", "5"),
        ("Text-Channel", "3"),
        ("Log-File", "mod_commands.c"),
        ("Log-Func", "log_function"),
        ("Log-Line", "7200"),
        ("User-Data", ""),
    ]
    assert log.body == b"2026-11-26 04:01:03.442636 70.50% [NOTICE] mod_commands.c:7200 esl-probe-log-line\n"
    assert not log.is_event


def test_sendevent_event_with_duplicate_length_headers_not_starting_with_event_name() -> None:
    frames = _frames_of("15_inbound_filters_log_sendevent_parsing", "inbound")
    custom = [f for f in frames if f.is_event and f.event().name == "CUSTOM"]
    plain, as_json = custom
    assert plain.headers.items() == [("Content-Length", "664"), ("Content-Type", "text/event-plain")]
    event = plain.event()
    assert list(event.headers)[:7] == [
        "Event-Subclass",
        "Command",
        "X-Probe",
        "content-type",
        "content-length",
        "Event-UUID",
        "Event-Name",
    ]
    assert event.subclass == "esl::probe"
    assert event["Command"] == "sendevent CUSTOM"
    assert event["X-Probe"] == "a b c"  # sent as 'a b%20c', came back 'a%20b%20c' (spec 1.5)
    assert event.headers.get_all("Content-Length") == ["26", "26"]  # lower- and upper-case
    assert event.headers.get_all("content-type") == ["text/plain"]
    assert event.body == "line 1\nline 2: with colon\n"
    assert "line 2" not in event.headers
    # the inner headers never leak into the envelope
    assert plain.content_type == "text/event-plain" and plain.headers["Content-Length"] == "664"

    json_event = as_json.event()
    assert json_event.format == "json" and json_event.name == "CUSTOM"
    assert json_event.body == "line 1\nline 2: with colon\n"
    assert json_event.headers.get_all("Content-Length") == ["26", "26"]
    assert json_event["X-Probe"] == "json"


def test_hangup_complete_carries_hangup_cause_twice() -> None:
    frames = _frames_of("01c_async_nofull_answer_playback_hangup", "outbound#2")
    (complete,) = [f.event() for f in frames if f.is_event and f.event().name == "CHANNEL_HANGUP_COMPLETE"]
    assert complete.headers.get_all("Hangup-Cause") == ["NORMAL_CLEARING", "NORMAL_CLEARING"]
    assert complete["Hangup-Cause"] == "NORMAL_CLEARING"
    busy = [
        f.event()
        for f in _frames_of("02_event_uuid_application_uuid", "outbound#3")
        if f.is_event and f.event().name == "CHANNEL_HANGUP_COMPLETE"
    ]
    assert busy[0].headers.get_all("hangup-cause") == ["USER_BUSY", "USER_BUSY"]
    # the hangup sequence of an async socket without linger (spec 2.6), then the final notice
    names = [f.event().name if f.is_event else f.kind for f in frames[-7:]]
    assert names == [
        "CHANNEL_HANGUP",
        "CHANNEL_UNPARK",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_STATE",
        "CHANNEL_STATE",
        "CHANNEL_HANGUP_COMPLETE",
        FrameKind.DISCONNECT,
    ]


def test_getvar_replies() -> None:
    # The captures only hold one-line getvar values (the two-line case of spec 1.2 is not among them;
    # it is built from the spec's bytes in test_protocol_parser.py).
    frames = _frames_of("06_api_bgapi_over_outbound", "outbound#5")
    replies = [f.headers.items() for f in frames if f.kind is FrameKind.REPLY and not f.is_connect_reply]
    assert [("Content-Type", "command/reply"), ("Reply-Text", "0000000000")] in replies
    unset = _frames_of("13_outbound_gating_first_command_and_timeout", "outbound#1")
    texts = [f.reply_text for f in unset if f.kind is FrameKind.REPLY]
    assert "-ERR command not found" in texts
    failed = [f for f in unset if f.kind is FrameKind.REPLY and f.reply_text == "-ERR command not found"]
    assert not failed[0].ok


def test_api_response_bodies_are_raw_and_need_no_newline() -> None:
    bodies = collections.Counter()
    for conn in transcripts.connections():
        for frame in frames_of(conn.capture, conn.name):
            if frame.kind is FrameKind.API:
                assert frame.headers["Content-Length"] == str(len(frame.body))
                assert list(frame.headers) == ["Content-Type", "Content-Length"]
                bodies[frame.body] += 1
    for body in (b"123", b"_undef_", b"true", b"false", b"0000000000"):
        assert bodies[body] > 0, body
    assert bodies[b"\n0 total.\n"] > 20  # starts with a newline
    frames = _frames_of("03_play_and_get_digits_dtmf", "outbound#4")
    assert frames[14].kind is FrameKind.API and frames[14].body == b"123"
    assert frames[14].reply_text == "123" and frames[14].ok
    # uuid_dump json: a whole JSON document as an api body, not an event
    dump = next(f for f in _frames_of("06_api_bgapi_over_outbound", "outbound#5") if f.body.startswith(b"{"))
    assert dump.kind is FrameKind.API and not dump.is_event


def test_final_and_linger_notices() -> None:
    frames = _frames_of("01c_async_nofull_answer_playback_hangup", "outbound#2")
    final = frames[-1]
    assert final.headers.items() == [
        ("Content-Type", "text/disconnect-notice"),
        ("Controlled-Session-UUID", "014cfed0-74be-4ac4-bfba-fc2dc5a444f9"),
        ("Content-Disposition", "disconnect"),
        ("Content-Length", "67"),
    ]
    assert final.body == FINAL_NOTICE_BODY and len(final.body) == 67
    assert final.is_final_notice and not final.is_linger_notice
    assert final.to_bytes() == switch.final_notice("014cfed0-74be-4ac4-bfba-fc2dc5a444f9")

    linger_frames = _frames_of("01_async_full_answer_playback_hangup_linger", "outbound#1")
    linger = next(f for f in linger_frames if f.kind is FrameKind.DISCONNECT)
    assert linger.headers.items() == [
        ("Content-Type", "text/disconnect-notice"),
        ("Controlled-Session-UUID", "ef60e5f5-a040-490c-823b-87df102afb3e"),
        ("Content-Disposition", "linger"),
        ("Channel-Name", "loopback/async-b"),
        ("Linger-Time", "-1"),
        ("Content-Length", "0"),
    ]
    assert linger.body == b""
    assert linger.is_linger_notice and not linger.is_final_notice
    assert linger.to_bytes() == switch.linger_notice("ef60e5f5-a040-490c-823b-87df102afb3e", "loopback/async-b")

    # static socket with linger 5: linger notice, then (later) the final notice (spec 2.6)
    static = _frames_of("01b_sync_full_answer_playback_hangup_linger5", "outbound#1")
    notices = [f for f in static if f.kind is FrameKind.DISCONNECT]
    assert [n.headers["Content-Disposition"] for n in notices] == ["linger", "disconnect"]
    assert notices[0].headers["Linger-Time"] == "5"

    # unbound inbound socket: no session headers, no disposition, still final
    bad_password = _frames_of("08_errors", "inbound-badpw")
    assert [f.kind for f in bad_password] == [FrameKind.AUTH, FrameKind.REPLY, FrameKind.DISCONNECT]
    assert bad_password[1].reply_text == "-ERR invalid" and not bad_password[1].ok
    assert bad_password[2].headers.items() == [("Content-Type", "text/disconnect-notice"), ("Content-Length", "67")]
    assert bad_password[2].is_final_notice

    # the call ended before connect: the notice is the first and only frame (spec 2.2)
    only = _frames_of("13_outbound_gating_first_command_and_timeout", "outbound#4")
    assert len(only) == 1 and only[0].is_final_notice


def test_every_captured_frame_is_reproduced_byte_for_byte_by_the_switch_writers() -> None:
    """switch.* (the fake FreeSWITCH's writers) produce exactly what 1.10.12 wrote, frame by frame."""
    checked: collections.Counter[FrameKind] = collections.Counter()
    for conn in transcripts.connections():
        for frame in frames_of(conn.capture, conn.name):
            wire = frame.to_bytes()
            if frame.is_event:
                event = frame.event()
                headers = event.headers.items()
                if frame.kind is FrameKind.EVENT_PLAIN:
                    if event.body:
                        assert headers[-1][0] == "Content-Length"
                        headers = headers[:-1]  # the serializer adds it
                    out = switch.event_plain(headers, event.body)
                elif frame.kind is FrameKind.EVENT_JSON:
                    if event.body:
                        assert headers[-1] == ("Content-Length", str(len(event.body.encode())))
                        headers = headers[:-1]
                    out = switch.event_json(headers, event.body)
                else:
                    out = switch.event_xml(headers, event.body)
            elif frame.is_connect_reply:
                out = switch.connect_reply(
                    frame.headers.items()[:-4],
                    mode=frame.headers["Socket-Mode"],
                    full=frame.headers["Control"] == "full",
                )
            elif frame.is_linger_notice:
                h = frame.headers
                out = switch.linger_notice(h["Controlled-Session-UUID"], h["Channel-Name"], int(h["Linger-Time"]))
            elif frame.kind is FrameKind.DISCONNECT:
                out = switch.final_notice(frame.headers.get("Controlled-Session-UUID"))
            elif frame.kind is FrameKind.API:
                out = switch.api_response(frame.body)
            elif frame.kind is FrameKind.AUTH:
                out = switch.auth_request()
            elif frame.kind is FrameKind.REPLY:
                out = switch.reply(frame.headers["Reply-Text"], *frame.headers.items()[2:])
            else:
                continue  # log/data: no writer needed by the fake peer
            assert out == wire, (conn.capture, conn.name, frame.kind)
            checked[frame.kind] += 1
    assert sum(checked.values()) == 1408


# --------------------------------------------------------------------------------------------------
# The other direction: what the clients wrote, read the way FreeSWITCH reads it
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("capture", capture_names())
def test_client_bytes_read_back_by_command_reader(capture: str) -> None:
    for conn in load(capture).values():
        whole = CommandReader().feed(conn.sent)
        reader = CommandReader()
        one_by_one = [command for byte in byte_by_byte(conn.sent) for command in reader.feed(byte)]
        assert one_by_one == whole
        reader = CommandReader()
        as_written = [command for write in conn.writes for command in reader.feed(write)]
        assert as_written == whole
        assert not reader._buffer and reader._pending is None
        for command in whole:
            assert command.line and "\n" not in command.line and "\r" not in command.line


def test_client_commands_of_capture_15() -> None:
    """Upper case, CRLF, leading blank lines, prefix match, and sendevent with a body (spec 1.3)."""
    sent = load("15_inbound_filters_log_sendevent_parsing")["inbound"].sent
    got = CommandReader().feed(sent)
    lines = [c.line for c in got]
    assert lines == [
        "auth ClueCon",
        "event plain CHANNEL_CREATE CHANNEL_ANSWER HEARTBEAT BACKGROUND_JOB",
        "filter Event-Name CHANNEL_CREATE",
        "filter Event-Name BACKGROUND_JOB",
        "bgapi originate loopback/parkit/esltest &park",
        "api hupall MANAGER_REQUEST",
        "filter delete Event-Name BACKGROUND_JOB",
        "filter delete all",
        "filter Event-Name -HEARTBEAT",
        "bgapi originate loopback/parkit/esltest &park",
        "api hupall MANAGER_REQUEST",
        "filter delete all",
        "filter Event-Name /^CHANNEL_(CREATE|ANSWER)$/",
        "bgapi originate loopback/parkit/esltest &park",
        "api hupall MANAGER_REQUEST",
        "filter delete all",
        "filter",
        "noevents",
        "noevents",
        "log 7",
        "api log NOTICE esl-probe-log-line",
        "nolog",
        "nolog",
        "event plain CUSTOM esl::probe",
        "sendevent CUSTOM",
        "event json CUSTOM esl::probe",  # the two stray LFs after the body are skipped
        "sendevent CUSTOM",
        "noevents",
        "API status",  # sent as 'API status\r\n\r\n'
        "api show channels count",  # sent after three blank lines
        "events plain HEARTBEAT",  # the caller's prefix match makes this 'event'
        "event plain",
        "event json NO_SUCH_EVENT",
        "nixevent HEARTBEAT",
        "noevents",
        "divert_events on",
        "linger",
        "nolinger",
        "getvar uuid",
        "resume",
        "myevents",
        "exit",
    ]
    assert [c.name for c in got if c.line.startswith(("API", "events"))] == ["api", "events"]
    sendevent = [c for c in got if c.name == "sendevent"]
    assert [c.body for c in sendevent] == [b"line 1\nline 2: with colon\n"] * 2
    assert sendevent[0].headers.items() == [
        ("Event-Subclass", "esl::probe"),
        ("X-Probe", "a b%20c"),  # not decoded
        ("content-type", "text/plain"),
        ("content-length", "26"),
    ]


def test_hangup_and_myevents_bytes_match_the_captured_client() -> None:
    sent = load("01c_async_nofull_answer_playback_hangup")["outbound#2"].sent
    assert commands.hangup("NORMAL_CLEARING") in sent  # spec E3
    assert sent.startswith(commands.CONNECT)
    assert commands.MYEVENTS in sent
