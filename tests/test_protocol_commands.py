"""What a client writes (``commands``) and how FreeSWITCH reads it (``switch.CommandReader``, spec 1.3)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transcripts import byte_by_byte

from esl_app.protocol import Headers, UnsafeCommandError, commands, expansion, switch
from esl_app.protocol.switch import Command, CommandReader

SENTINEL = b"exit\n\n"
UUID = "4ba76c75-8a91-42cb-9c81-11e9740a41fd"
EVENT_UUID = "11111111-aaaa-4bbb-8ccc-000000000002"


def read_one(data: bytes) -> Command:
    """The single command FreeSWITCH reads from ``data``; a sentinel after it must come out intact."""
    got = CommandReader().feed(data + SENTINEL)
    assert len(got) == 2, got
    assert got[1] == Command("exit", Headers()), got
    one_by_one = CommandReader()
    assert [c for b in byte_by_byte(data + SENTINEL) for c in one_by_one.feed(b)] == got
    return got[0]


# --------------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------------


def test_execute_with_event_uuid_event_lock_loops_and_uuid() -> None:
    data = commands.execute("playback", "tone_stream://%(300,0,440)", uuid=UUID, event_uuid=EVENT_UUID, loops=2)
    assert data == (
        f"sendmsg {UUID}\n"
        "call-command: execute\n"
        "execute-app-name: playback\n"
        "execute-app-arg: tone_stream://%(300,0,440)\n"
        "loops: 2\n"
        "event-lock: true\n"
        f"Event-UUID: {EVENT_UUID}\n"
        "\n"
    ).encode()
    command = read_one(data)
    assert command.name == "sendmsg" and command.arg == UUID
    assert command.headers["execute-app-arg"] == "tone_stream://%(300,0,440)"  # not decoded
    assert switch.is_true(command.headers["event-lock"])
    assert command.headers["Event-UUID"] == EVENT_UUID and command.body == b""


def test_sendmsg_variants() -> None:
    assert commands.execute("answer", event_lock=False) == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: answer\n\n"
    )
    assert commands.sendmsg("execute", app="park", async_=True, event_lock=True) == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: park\nevent-lock: true\nasync: true\n\n"
    )
    assert commands.sendmsg("execute", app="x", arg="") == b"sendmsg\ncall-command: execute\nexecute-app-name: x\n\n"
    assert commands.sendmsg("unicast", extra=[("local-ip", "127.0.0.1"), ("transport", "udp")]) == (
        b"sendmsg\ncall-command: unicast\nlocal-ip: 127.0.0.1\ntransport: udp\n\n"
    )
    assert commands.hangup() == b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
    assert commands.hangup("USER_BUSY", uuid=UUID) == (
        f"sendmsg {UUID}\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n".encode()
    )


@pytest.mark.parametrize(
    "arg",
    [
        "line one\nline two",
        "carriage\rreturn",
        " leading space",
        "\tleading tab",
        "x" * 4097,
        "Jöhn\n😀 100% a+b \"q\"\ttab",
        "\n",
    ],
)
def test_argument_that_cannot_be_a_header_goes_in_a_text_plain_body(arg: str) -> None:
    data = commands.execute("playback", arg, event_uuid=EVENT_UUID)
    raw = arg.encode()
    assert data.endswith(f"Content-Length: {len(raw)}\n\n".encode() + raw)
    assert b"execute-app-arg" not in data
    head = data[: -len(raw)]
    assert b"\ncontent-type: text/plain\n" in head
    assert b"\r" not in head and head.count(b"\n\n") == 1 and head.endswith(b"\n\n")
    command = read_one(data)
    assert command.body == raw
    assert command.headers["content-type"] == "text/plain"
    assert command.headers["Content-Length"] == str(len(raw))  # bytes, not characters
    assert command.headers["Event-UUID"] == EVENT_UUID
    assert "execute-app-arg" not in command.headers


def test_argument_up_to_4096_characters_stays_a_header() -> None:
    arg = "x" * 4096
    command = read_one(commands.execute("playback", arg))
    assert command.headers["execute-app-arg"] == arg and command.body == b""


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "\n", "trailing\n", "\r\n\r\nexit"])
def test_cr_lf_nul_are_refused_everywhere(bad: str) -> None:
    attempts = [
        lambda: commands.encode_command(bad),
        lambda: commands.encode_command("sendmsg", [(bad, "v")]),
        lambda: commands.encode_command("sendmsg", [("X-Name", bad)]),
        lambda: commands.api(bad),
        lambda: commands.api("status", bad),
        lambda: commands.api("uuid_getvar", UUID, bad),
        lambda: commands.bgapi("originate", bad),
        lambda: commands.bgapi("status", job_uuid=bad),
        lambda: commands.hangup(bad),
        lambda: commands.sendmsg("execute", uuid=bad, app="answer"),
        lambda: commands.sendmsg(bad),
        lambda: commands.execute(bad),
        lambda: commands.execute("playback", "x", event_uuid=bad),
        lambda: commands.sendmsg("execute", app="x", extra=[("X-Extra", bad)]),
        lambda: commands.event("CHANNEL_ANSWER", bad),
        lambda: commands.event("ALL", fmt=bad),
        lambda: commands.filter_("Unique-ID", bad),
        lambda: commands.filter_(bad, "x"),
        lambda: commands.myevents(bad),
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeCommandError):
            attempt()


def test_nul_in_an_argument_is_refused() -> None:
    with pytest.raises(UnsafeCommandError):
        commands.execute("playback", "a\0b")
    with pytest.raises(UnsafeCommandError):
        commands.execute("playback", "multi\nline\0")
    with pytest.raises(UnsafeCommandError):
        commands.encode_command("sendmsg", body=b"a\0b")


def test_other_framing_hazards_are_refused() -> None:
    with pytest.raises(UnsafeCommandError):
        commands.encode_command("")  # FreeSWITCH would skip it and take the next command's bytes
    for name in ("Content-Length", "content-length", "CONTENT-LENGTH"):
        with pytest.raises(UnsafeCommandError):
            commands.encode_command("sendmsg", [(name, "5")])
        with pytest.raises(UnsafeCommandError):
            commands.sendmsg("execute", app="x", extra=[(name, "0")])
    for name in ("", "a:b", ":"):
        with pytest.raises(UnsafeCommandError):
            commands.encode_command("sendmsg", [(name, "v")])
    for app in ("", "play back", "play\tback"):
        with pytest.raises(UnsafeCommandError):
            commands.execute(app)


def test_plain_commands() -> None:
    assert commands.api("status") == b"api status\n\n"
    getvar = commands.api("uuid_getvar", UUID, "caller_id_number")
    assert getvar == f"api uuid_getvar {UUID} caller_id_number\n\n".encode()
    assert commands.api("status", "") == b"api status\n\n"
    assert commands.bgapi("status") == b"bgapi status\n\n"
    assert commands.bgapi("originate", "loopback/x", "&park", job_uuid="j") == (
        b"bgapi originate loopback/x &park\nJob-UUID: j\n\n"
    )
    assert commands.myevents() == commands.MYEVENTS == b"myevents\n\n"
    assert commands.myevents("json") == b"myevents json\n\n"
    assert commands.linger() == b"linger\n\n" and commands.linger(30) == b"linger 30\n\n"
    subscribe = commands.event("CHANNEL_ANSWER", "CUSTOM", "esl::probe")
    assert subscribe == b"event plain CHANNEL_ANSWER CUSTOM esl::probe\n\n"
    assert commands.event("ALL", fmt="json") == b"event json ALL\n\n"
    assert commands.filter_("Unique-ID", UUID) == f"filter Unique-ID {UUID}\n\n".encode()
    assert commands.CONNECT == b"connect\n\n" and commands.EXIT == b"exit\n\n"
    assert commands.NOLINGER == b"nolinger\n\n" and commands.RESUME == b"resume\n\n"
    assert commands.WAKE == b"\n"
    assert CommandReader().feed(commands.WAKE * 5) == []  # discarded without a command


def test_commands_have_no_cr_and_one_terminator() -> None:
    built = [
        commands.api("status"),
        commands.bgapi("status", job_uuid="x"),
        commands.execute("playback", "a\nb"),
        commands.hangup(),
        commands.event("ALL"),
        commands.linger(5),
        commands.filter_("Event-Name", "CHANNEL_ANSWER"),
    ]
    for data in built:
        assert b"\r" not in data and b"\0" not in data
        command = read_one(data)
        assert command.line == data.split(b"\n", 1)[0].decode()


# --------------------------------------------------------------------------------------------------
# Round trip: every builder, read back the way FreeSWITCH reads it
# --------------------------------------------------------------------------------------------------


def test_round_trip_of_every_builder() -> None:
    cases: list[tuple[bytes, str, list[tuple[str, str]], bytes]] = [
        (commands.CONNECT, "connect", [], b""),
        (commands.api("uuid_getvar", UUID, "x"), f"api uuid_getvar {UUID} x", [], b""),
        (commands.bgapi("status", job_uuid="j-1"), "bgapi status", [("Job-UUID", "j-1")], b""),
        (commands.myevents("xml"), "myevents xml", [], b""),
        (commands.linger(3), "linger 3", [], b""),
        (commands.event("DTMF", fmt="xml"), "event xml DTMF", [], b""),
        (commands.filter_("Event-Name", "-HEARTBEAT"), "filter Event-Name -HEARTBEAT", [], b""),
        (
            commands.hangup("USER_BUSY", uuid=UUID),
            f"sendmsg {UUID}",
            [("call-command", "hangup"), ("hangup-cause", "USER_BUSY")],
            b"",
        ),
        (
            commands.execute("set", "a=b c:d", event_uuid="e", loops=-1),
            "sendmsg",
            [
                ("call-command", "execute"),
                ("execute-app-name", "set"),
                ("execute-app-arg", "a=b c:d"),
                ("loops", "-1"),
                ("event-lock", "true"),
                ("Event-UUID", "e"),
            ],
            b"",
        ),
        (
            commands.execute("speak", "two\nlines ü", event_lock=False),
            "sendmsg",
            [
                ("call-command", "execute"),
                ("execute-app-name", "speak"),
                ("content-type", "text/plain"),
                ("Content-Length", "12"),
            ],
            "two\nlines ü".encode(),
        ),
    ]
    for data, line, headers, body in cases:
        command = read_one(data)
        assert command.line == line
        assert command.headers.items() == headers
        assert command.body == body


HOSTILE = st.text(
    st.sampled_from(["\r", "\n", "\0", ":", " ", "\t", "%", "+", "é", "😀", "\u2028", "\x85", "a", "Z"])
    | st.characters(exclude_categories=("Cs",)),  # surrogates: see test_surrogates
    max_size=24,
)
NAME = st.text(st.sampled_from(["a", "-", "_", "X", "é", " ", ":", "\n", "\r"]), min_size=0, max_size=8)


def expected_value(value: str) -> str:
    return value.lstrip(" ")  # FreeSWITCH skips the spaces after the colon


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    app=HOSTILE,
    arg=HOSTILE | st.none() | st.text(min_size=4090, max_size=4100),
    uuid=HOSTILE | st.none(),
    event_uuid=HOSTILE | st.none(),
    extra=st.lists(st.tuples(NAME, HOSTILE), max_size=3),
    loops=st.none() | st.integers(-5, 5),
)
def test_sendmsg_with_hostile_strings_is_one_command_or_refused(
    app: str, arg: str | None, uuid: str | None, event_uuid: str | None, extra: list, loops: int | None
) -> None:
    try:
        data = commands.sendmsg(
            "execute", uuid=uuid, app=app, arg=arg, event_uuid=event_uuid, loops=loops, extra=extra
        )
    except UnsafeCommandError:
        return
    command = read_one(data)
    assert command.line == (f"sendmsg {uuid}" if uuid else "sendmsg")
    headers = command.headers
    assert headers["call-command"] == "execute"
    assert headers["execute-app-name"] == app
    if arg:
        if "execute-app-arg" in headers:
            assert headers["execute-app-arg"] == arg and command.body == b""
        else:
            assert command.body == arg.encode() and headers["content-type"] == "text/plain"
    else:
        assert "execute-app-arg" not in headers and command.body == b""
    if event_uuid:
        assert headers.get_last("Event-UUID") == expected_value(event_uuid)
    for name, value in extra:
        assert expected_value(value) in headers.get_all(name)


ARGS = st.text(
    st.sampled_from(["\r", "\n", "\0", ":", " ", "\t", "%", "+", "é", "😀", "\u2028", "\x85", "a"])
    | st.sampled_from(["$", "{", "}", "\\", "'", "("])
    | st.characters(exclude_categories=("Cs",)),
    max_size=30,
) | st.text(st.sampled_from("ab\n "), min_size=4090, max_size=4100)


@settings(max_examples=300, deadline=None)
@given(arg=ARGS)
def test_execute_argument_with_hostile_strings_arrives_byte_for_byte(arg: str) -> None:
    try:
        data = commands.execute("playback", arg, event_uuid=EVENT_UUID)
    except UnsafeCommandError:
        assert "\0" in arg or (arg.startswith("%") and "[" in arg[1:3])  # NUL, or a %[scoped=vars] prefix
        return
    command = read_one(data)
    assert command.headers["execute-app-name"] == "playback"
    assert command.headers.get_last("Event-UUID") == EVENT_UUID
    # what the application receives: the wire text after FreeSWITCH's expansion pass, with nothing run
    ran: list[str] = []
    received = lambda text: expansion.expand(text, lambda name: None, lambda f, a: ran.append(f) or "")  # noqa: E731
    if not arg:
        assert "execute-app-arg" not in command.headers and command.body == b""
    elif "execute-app-arg" in command.headers:
        wire = command.headers["execute-app-arg"]
        assert received(wire) == arg and command.body == b""
        assert len(wire) <= 4096 and not wire[0].isspace()
    else:
        wire = command.body.decode()
        assert received(wire) == arg
        assert command.headers["Content-Length"] == str(len(command.body))
    assert ran == []


def refusable(text: str) -> bool:
    return any(c in text for c in "\r\n\0")


def test_surrogates() -> None:
    # bytes that were not UTF-8 on the way in (surrogateescape) go out unchanged ...
    command = read_one(commands.execute("playback", "a\udcffb", event_uuid="\udcc3"))
    assert command.headers["execute-app-arg"].encode("utf-8", "surrogateescape") == b"a\xffb"
    assert command.body == b""
    assert commands.api("x\udcff") == b"api x\xff\n\n"
    assert read_one(commands.execute("speak", "a\n\udcff")).body == b"a\n\xff"
    # ... a lone surrogate that no byte maps to cannot be sent at all
    for build in (
        lambda: commands.api("\ud800"),
        lambda: commands.execute("playback", "\udfff"),
        lambda: commands.execute("playback", "x\n\ud800"),
        lambda: commands.encode_command("sendmsg", [("X", "\udbff")]),
    ):
        with pytest.raises(UnsafeCommandError):
            build()


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(HOSTILE, min_size=1, max_size=4), job=HOSTILE | st.none())
def test_api_and_bgapi_with_hostile_strings_are_one_command_or_refused(parts: list[str], job: str | None) -> None:
    for word, build in (
        ("api", lambda: commands.api(*parts)),
        ("bgapi", lambda: commands.bgapi(*parts, job_uuid=job)),
    ):
        try:
            data = build()
        except UnsafeCommandError:
            assert refusable("".join(parts) + (job or "" if word == "bgapi" else ""))
            continue
        command = read_one(data)
        assert command.line == " ".join((word, *parts)).rstrip(" ")
        if word == "bgapi" and job:
            assert command.headers.items() == [("Job-UUID", expected_value(job))]
        else:
            assert len(command.headers) == 0


@settings(max_examples=200, deadline=None)
@given(line=HOSTILE, headers=st.lists(st.tuples(NAME, HOSTILE), max_size=4), body=st.none() | st.binary(max_size=40))
def test_encode_command_with_hostile_strings_is_one_command_or_refused(
    line: str, headers: list[tuple[str, str]], body: bytes | None
) -> None:
    try:
        data = commands.encode_command(line, headers, body)
    except UnsafeCommandError:
        return
    command = read_one(data)
    assert command.line == line
    expected = [(n, expected_value(v)) for n, v in headers]
    if body is not None:
        expected.append(("Content-Length", str(len(body))))
    assert command.headers.items() == expected
    assert command.body == (body or b"")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["api", "exec", "hangup", "event", "body"]), min_size=1, max_size=8), HOSTILE)
def test_pipelined_commands_come_out_one_for_one(kinds: list[str], text: str) -> None:
    assume("\0" not in text)
    builders = {
        "api": lambda: commands.api("echo", text.replace("\r", "").replace("\n", "")),
        "exec": lambda: commands.execute("playback", text or "x", event_uuid="u"),
        "hangup": lambda: commands.hangup(),
        "event": lambda: commands.event("ALL"),
        "body": lambda: commands.encode_command("sendevent CUSTOM", [("X", "1")], text.encode() + b"\n\n"),
    }
    data = b"".join(builders[k]() for k in kinds)
    got = CommandReader().feed(data)
    assert len(got) == len(kinds)
    assert [c.name for c in got] == [
        {"api": "api", "exec": "sendmsg", "hangup": "sendmsg", "event": "event", "body": "sendevent"}[k]
        for k in kinds
    ]


# --------------------------------------------------------------------------------------------------
# CommandReader: read_packet semantics (spec 1.3)
# --------------------------------------------------------------------------------------------------


def test_leading_cr_lf_are_skipped() -> None:
    got = CommandReader().feed(b"\n\n\napi show channels count\n\n\r\n\r\nexit\n\n")
    assert [c.line for c in got] == ["api show channels count", "exit"]


def test_crlf_crlf_ends_the_block() -> None:
    (command,) = CommandReader().feed(b"API status\r\n\r\n")
    assert command.line == "API status" and command.name == "api" and command.arg == "status"
    (command,) = CommandReader().feed(b"sendmsg\r\ncall-command: hangup\r\nhangup-cause: USER_BUSY\r\n\r\n")
    assert command.headers.items() == [("call-command", "hangup"), ("hangup-cause", "USER_BUSY")]
    (command,) = CommandReader().feed(b"api status\n\r\r\n")  # CR between the LFs does not reset
    assert command.line == "api status"


def test_command_word_case_and_prefix_are_left_to_the_caller() -> None:
    got = CommandReader().feed(b"API status\n\nevents plain HEARTBEAT\n\nexitfoo\n\n")
    assert [c.line for c in got] == ["API status", "events plain HEARTBEAT", "exitfoo"]
    assert [c.name for c in got] == ["api", "events", "exitfoo"]


def test_header_line_rules() -> None:
    data = (
        b"sendmsg\n"
        b"execute-app-arg: pct_test=a%20b 100%25\n"
        b"spaces:    value with trailing  \n"
        b"no colon here\n"
        b"dup: 1\n"
        b"dup: 2\n"
        b"colon: a: b\n"
        b"empty:\n\n"
    )
    (command,) = CommandReader().feed(data)
    assert command.headers.items() == [
        ("execute-app-arg", "pct_test=a%20b 100%25"),  # not decoded
        ("spaces", "value with trailing  "),
        ("dup", "1"),
        ("dup", "2"),
        ("colon", "a: b"),
        ("empty", ""),
    ]


def test_body_rules() -> None:
    got = CommandReader().feed(
        b"sendevent CUSTOM\ncontent-length: 7\n\nab\0cdef"  # NUL truncates the body
        b"x\nContent-Length: 0\n\n"  # 0: no body
        b"y\nContent-Length: -3\n\n"  # negative: no body (1.10.12)
        b"z\nContent-Length: 2abc\n\nhi"  # atoi
        b"w\nContent-Length: junk\n\n"
        b"exit\n\n"
    )
    assert [(c.line, c.body) for c in got] == [
        ("sendevent CUSTOM", b"ab"),
        ("x", b""),
        ("y", b""),
        ("z", b"hi"),
        ("w", b""),
        ("exit", b""),
    ]


def test_body_arrives_in_pieces() -> None:
    reader = CommandReader()
    assert reader.feed(b"sendmsg\ncontent-type: text/plain\nContent-Length: 5\n\nab") == []
    assert reader.feed(b"c") == []
    (command,) = reader.feed(b"de\n\n")
    assert command.body == b"abcde"
    assert reader.feed(b"exit\n\n")[0].line == "exit"  # the stray LFs were skipped


def test_nul_in_the_block_ends_it_like_a_c_string() -> None:
    (command, after) = CommandReader().feed(b"api x\0y\nfoo: bar\n\nexit\n\n")
    assert command.line == "api x" and len(command.headers) == 0
    assert after.line == "exit"


def test_block_is_cut_at_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(switch, "MAX_COMMAND_BLOCK", 16)
    got = CommandReader().feed(b"api " + b"x" * 20 + b"\n\n")
    assert got[0].line == "api " + "x" * 12  # 16 bytes, then parsed as if it had ended
    reader = CommandReader()
    pieces = [c for b in byte_by_byte(b"api " + b"y" * 20 + b"\n\n") for c in reader.feed(b)]
    assert pieces[0].line == "api " + "y" * 12


def test_mixed_line_ends_behave_like_freeswitch() -> None:
    # read_packet finds the next line with strchr(cur, '\r') first: LF-only lines before a CRLF are lost
    (command,) = CommandReader().feed(b"sendmsg\nlost: 1\r\n\r\n")
    assert command.line == "sendmsg" and len(command.headers) == 0
    (command,) = CommandReader().feed(b"sendmsg\r\nfoo: a\nbar: b\r\n\r\n")
    assert command.headers.items() == [("foo", "a\nbar: b")]


def test_two_content_length_headers_read_two_bodies_and_keep_the_last() -> None:
    (command, after) = CommandReader().feed(b"x\nContent-Length: 2\ncontent-length: 3\n\nababcexit\n\n")
    assert command.body == b"abc" and after.line == "exit"


def test_reader_is_split_invariant_on_a_mixed_stream() -> None:
    data = (
        b"\r\n"
        + commands.CONNECT
        + commands.execute("playback", "multi\nline body", event_uuid="u")
        + b"\n\n"
        + commands.api("status")
        + b"API status\r\n\r\n"
        + commands.encode_command("sendevent CUSTOM", [("a", "b")], b"\n\n\r\nbody\n\n")
        + commands.EXIT
    )
    whole = CommandReader().feed(data)
    assert [c.line for c in whole] == ["connect", "sendmsg", "api status", "API status", "sendevent CUSTOM", "exit"]
    for cut in range(len(data) + 1):
        reader = CommandReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == whole
    reader = CommandReader()
    assert [c for b in byte_by_byte(data) for c in reader.feed(b)] == whole


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("t", True),
        ("enabled", True),
        ("active", True),
        ("allow", True),
        ("1", True),
        ("-1", True),
        ("2.5", True),
        ("  true", True),
        ("true ", False),
        ("0", False),
        ("0.9", False),
        ("false", False),
        ("", False),
        (None, False),
        ("1 ", False),
        ("1_0", False),
        ("nope", False),
    ],
)
def test_is_true_is_switch_true(value: str | None, expected: bool) -> None:
    assert switch.is_true(value) is expected
