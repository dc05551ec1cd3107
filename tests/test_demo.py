"""The demo app (``callflows/demo.py``), every path, through the kit's ``esl_call`` fixture."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import callflows.demo as demo
from esl_app.testing.plugin import CallPlacer

LONDON = ZoneInfo("Europe/London")
OPEN = datetime(2026, 11, 25, 10, 30, tzinfo=LONDON)  # a Wednesday, mid-morning

WELCOME = ("playback", "ivr/ivr-welcome_to_freeswitch.wav")
MENU = (
    "play_and_get_digits",
    "1 1 3 5000 # ivr/ivr-please_choose.wav ivr/ivr-that_was_an_invalid_entry.wav esl_app_digits [12]",
)
CLOSED = ("playback", "ivr/ivr-office_hours.wav")
BUSY = ("playback", "ivr/ivr-all_agents_busy.wav")
NO_ANSWER = ("playback", "ivr/ivr-no_one_available.wav")
FAILED = ("playback", "ivr/ivr-call_cannot_be_completed_as_dialed.wav")
SIT = ("playback", "tone_stream://%(274,0,913.8);%(274,0,1370.6);%(380,0,1776.7)")
BRIDGE_SETUP = [("set", "continue_on_fail=true"), ("set", "hangup_after_bridge=false")]


def menu_bridge(team: str, dialstring: str) -> list[tuple[str, str]]:
    """The main line up to the bridge, after the caller chose ``team``."""
    return [
        ("answer", ""), WELCOME, MENU,  # demo_team is set with api uuid_setvar, not an application
        *BRIDGE_SETUP, ("set", "call_timeout=30"), ("bridge", dialstring),
    ]  # fmt: skip


def extension_bridge(dialstring: str) -> list[tuple[str, str]]:
    return [*BRIDGE_SETUP, ("set", "call_timeout=20"), ("bridge", dialstring)]


@pytest.fixture(params=["socket", "modpython"])
def esl_call(request):
    """Every test of the demo runs over both transports: the Event Socket (the fake FreeSWITCH on
    the other end of the connection) and in-process through mod_python3 (``esl_app.modpython`` with
    the stand-in ``freeswitch`` module, the same fake FreeSWITCH behind it)."""
    placer = CallPlacer(request.param)
    try:
        yield placer
    finally:
        placer.close()


@pytest.fixture
def socket_call():
    placer = CallPlacer()
    try:
        yield placer
    finally:
        placer.close()


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch):
    """``at(moment)`` makes the demo's clock read ``moment`` (restored after the test)."""

    def set_clock(moment: datetime) -> None:
        monkeypatch.setattr(demo, "clock", lambda: moment)

    return set_clock


@pytest.fixture
def open_hours(at) -> None:
    at(OPEN)


def assert_clean(result, cause: str = "NORMAL_CLEARING", by: str = "app") -> None:
    assert result.hangup_cause == cause
    assert result.record.hung_up_by == by
    assert result.record.protocol_errors == []
    assert result.record.continued_in_dialplan is False
    assert result.call is None or result.call.hangup_cause == cause


# -- the guard: blocked callers are refused before answer ---------------------------------------------


@pytest.mark.parametrize("caller", ["666", "+15555550100", "900", "9001234567"])
@pytest.mark.parametrize("destination", ["1000", "1234", "4242"])
def test_blocked_caller_is_refused_before_answer(esl_call, open_hours, caller, destination):
    result = esl_call(demo.app, destination, caller_id_number=caller)
    assert result.executed == [("respond", "403 Forbidden")]
    assert result.responded == "403 Forbidden"
    assert not result.answered
    assert "answer" not in result.verbs
    assert_clean(result, "CALL_REJECTED")
    assert result.call.answered is False


@pytest.mark.parametrize("caller", ["6660", "1666", "+15555550101", "9010", "1900"])
def test_near_misses_of_the_block_list_are_not_blocked(esl_call, open_hours, caller):
    result = esl_call(demo.app, "1000", caller_id_number=caller, dtmf="1")
    assert result.executed == menu_bridge("sales", "user/2001")
    assert_clean(result)


# -- after hours ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 25, 21, 30, tzinfo=LONDON),  # Wednesday evening
        datetime(2026, 11, 25, 7, 59, 59, tzinfo=LONDON),  # a second before opening
        datetime(2026, 11, 25, 18, 0, tzinfo=LONDON),  # closing time
        datetime(2026, 11, 28, 10, 30, tzinfo=LONDON),  # Saturday
        datetime(2026, 11, 29, 10, 30, tzinfo=LONDON),  # Sunday
        datetime(2026, 12, 25, 10, 30, tzinfo=LONDON),  # Christmas Day, a Friday
        datetime(2027, 1, 1, 10, 30, tzinfo=LONDON),  # New Year's Day, a Friday
    ],
    ids=["evening", "before-opening", "closing-time", "saturday", "sunday", "christmas", "new-year"],
)
def test_after_hours_plays_the_closed_message(esl_call, at, moment):
    at(moment)
    result = esl_call(demo.app, "1000", dtmf="1")
    assert result.executed == [("answer", ""), CLOSED]
    assert result.answered
    assert "play_and_get_digits" not in result.verbs and "bridge" not in result.verbs
    assert_clean(result)


# -- open hours: the menu ---------------------------------------------------------------------------


def test_digit_1_bridges_sales_and_it_answers(esl_call, open_hours):
    result = esl_call(demo.app, "1000", dtmf="1")
    assert result.executed == menu_bridge("sales", "user/2001")
    assert result.variables["demo_team"] == "sales"
    assert result.variables["call_timeout"] == "30"
    assert result.answered
    assert_clean(result)


@pytest.mark.parametrize(("digit", "team", "dialstring"), [("1", "sales", "user/2001"), ("2", "support", "user/2002")])
@pytest.mark.parametrize(
    ("outcome", "prompt"),
    [
        ("busy", BUSY),
        ("no_answer", NO_ANSWER),
        ("fail:NETWORK_OUT_OF_ORDER", FAILED),
        ("fail:USER_NOT_REGISTERED", FAILED),
    ],
)
def test_team_not_answering_gets_its_prompt(esl_call, open_hours, digit, team, dialstring, outcome, prompt):
    result = esl_call(demo.app, "1000", dtmf=digit, bridge={dialstring: outcome})
    assert result.executed == [*menu_bridge(team, dialstring), prompt]
    assert result.variables["demo_team"] == team
    assert_clean(result)


def test_digit_2_support_busy(esl_call, open_hours):
    result = esl_call(demo.app, "1000", dtmf="2", bridge={"user/2002": "busy"})
    menu = ["answer", "playback", "play_and_get_digits"]
    assert result.verbs == [*menu, "set", "set", "set", "bridge", "playback"]  # demo_team: api uuid_setvar
    assert result.args("bridge") == ["user/2002"]
    assert result.args("playback") == ["ivr/ivr-welcome_to_freeswitch.wav", "ivr/ivr-all_agents_busy.wav"]
    assert_clean(result)


@pytest.mark.parametrize(
    "dtmf",
    [
        "",  # silence on every try
        ["", "", ""],
        ["3", "9", "0"],  # digits off the menu
        ["x", "*", "#"],  # not even digits
        ["", "7", ""],
    ],
    ids=["silence", "silence-x3", "off-menu", "junk", "mixed"],
)
def test_no_valid_choice_in_three_tries_plays_failed_and_never_bridges(esl_call, open_hours, dtmf):
    result = esl_call(demo.app, "1000", dtmf=dtmf)
    assert result.executed == [("answer", ""), WELCOME, MENU, FAILED]
    assert "bridge" not in result.verbs and "set" not in result.verbs
    assert_clean(result)


def test_a_valid_choice_on_the_third_try_still_counts(esl_call, open_hours):
    result = esl_call(demo.app, "1000", dtmf=["", "9", "2"])
    assert result.executed == menu_bridge("support", "user/2002")
    assert_clean(result)


# -- direct extensions ------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["1100", "1234", "1999"])
def test_direct_extension_answered(esl_call, open_hours, extension):
    result = esl_call(demo.app, extension)
    assert result.executed == extension_bridge(f"user/{extension}")
    assert result.answered
    assert_clean(result)


@pytest.mark.parametrize(
    ("outcome", "prompt"),
    [("busy", BUSY), ("no_answer", NO_ANSWER), ("fail:UNALLOCATED_NUMBER", FAILED)],
)
def test_direct_extension_not_answered_answers_and_explains(esl_call, open_hours, outcome, prompt):
    result = esl_call(demo.app, "1234", bridge={"*": outcome})
    assert result.executed == [*extension_bridge("user/1234"), ("answer", ""), prompt]
    assert result.answered
    assert_clean(result)


def test_direct_extensions_ignore_opening_hours(esl_call, at):
    at(datetime(2026, 11, 29, 3, 0, tzinfo=LONDON))  # Sunday night
    result = esl_call(demo.app, "1500")
    assert result.executed == extension_bridge("user/1500")


def test_1000_is_still_the_main_line(esl_call, open_hours):
    result = esl_call(demo.app, "1000", dtmf="2")
    assert result.executed == menu_bridge("support", "user/2002")
    assert result.call.match.route.name == "main line"


def test_direct_extension_route_captures_the_whole_extension(esl_call, open_hours):
    result = esl_call(demo.app, "1234")
    assert result.call.match.route.name == "direct extension"
    assert result.call.match.named == {"extension": "1234"}


# -- unknown numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("destination", ["4242", "1050", "12345", "110", "2001", ""])
def test_unknown_number_gets_sit_tone_and_unallocated(esl_call, open_hours, destination):
    result = esl_call(demo.app, destination)
    assert result.executed == [("pre_answer", ""), SIT]
    assert not result.answered
    assert result.responded is None
    assert_clean(result, "UNALLOCATED_NUMBER")
    assert result.call.match is None


# -- the caller hangs up at every step --------------------------------------------------------------

# the longest main-line path: menu, support busy, busy prompt (9 executes)
FULL_PATH = [*menu_bridge("support", "user/2002"), BUSY]


@pytest.mark.parametrize("mode", ["async", "static"])
@pytest.mark.parametrize("hangup_at", range(1, len(FULL_PATH) + 1))
def test_caller_hangs_up_at_every_step(esl_call, open_hours, caplog, hangup_at, mode):
    caplog.set_level(logging.INFO)
    result = esl_call(
        demo.app, "1000", dtmf="2", bridge={"*": "busy"}, mode=mode,
        hangup_at=hangup_at, hangup_cause="NORMAL_UNSPECIFIED", trace=True,
    )  # fmt: skip
    # the execute the caller hung up during ran; nothing after it did
    assert result.executed == FULL_PATH[:hangup_at]
    assert_clean(result, "NORMAL_UNSPECIFIED", by="caller")
    if esl_call.transport == "socket":  # in-process there is no session to close: the handler returns
        assert result.record.commands[-1] == "exit"  # the app closed the session itself
    assert not [line for line in result.trace if "sendmsg hangup" in line]  # no hangup of a dead call
    hook_lines = [r.getMessage() for r in caplog.records if r.name == "callflows.demo"]
    assert hook_lines == [f"call {result.record.uuid} from 1001 to 1000 ended: NORMAL_UNSPECIFIED"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_on_hangup_hook_logs_every_call(esl_call, open_hours, caplog):
    caplog.set_level(logging.INFO, logger="callflows.demo")
    answered = esl_call(demo.app, "1000", dtmf="1")
    blocked = esl_call(demo.app, "1000", caller_id_number="666")
    unknown = esl_call(demo.app, "4242")
    assert [r.getMessage() for r in caplog.records if r.name == "callflows.demo"] == [
        f"call {answered.record.uuid} from 1001 to 1000 ended: NORMAL_CLEARING",
        f"call {blocked.record.uuid} from 666 to 1000 ended: CALL_REJECTED",
        f"call {unknown.record.uuid} from 1001 to 4242 ended: UNALLOCATED_NUMBER",
    ]


# -- is_open ----------------------------------------------------------------------------------------

UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 25, 8, 0, tzinfo=LONDON), True),  # opening time is open
        (datetime(2026, 11, 25, 7, 59, 59, 999999, tzinfo=LONDON), False),
        (datetime(2026, 11, 25, 17, 59, 59, 999999, tzinfo=LONDON), True),
        (datetime(2026, 11, 25, 18, 0, tzinfo=LONDON), False),  # closing time is closed
        (datetime(2026, 11, 23, 8, 0, tzinfo=LONDON), True),  # Monday
        (datetime(2026, 11, 27, 17, 0, tzinfo=LONDON), True),  # Friday
        (datetime(2026, 11, 28, 12, 0, tzinfo=LONDON), False),  # Saturday
        (datetime(2026, 11, 29, 12, 0, tzinfo=LONDON), False),  # Sunday
        (datetime(2026, 12, 24, 12, 0, tzinfo=LONDON), True),  # Christmas Eve is a working day
        (datetime(2026, 12, 25, 12, 0, tzinfo=LONDON), False),
        (datetime(2026, 12, 26, 12, 0, tzinfo=LONDON), False),
        (datetime(2027, 1, 1, 12, 0, tzinfo=LONDON), False),
        # British Summer Time: London is UTC+1
        (datetime(2026, 7, 15, 7, 0, tzinfo=UTC), True),  # 08:00 BST
        (datetime(2026, 7, 15, 6, 59, tzinfo=UTC), False),
        (datetime(2026, 7, 15, 16, 59, tzinfo=UTC), True),
        (datetime(2026, 7, 15, 17, 0, tzinfo=UTC), False),  # 18:00 BST
        # the clocks go back on Sunday 2026-10-25: the same UTC time, an hour apart in London
        (datetime(2026, 10, 23, 7, 30, tzinfo=UTC), True),  # Friday 08:30 BST
        (datetime(2026, 10, 26, 7, 30, tzinfo=UTC), False),  # Monday 07:30 GMT
        (datetime(2026, 10, 26, 8, 0, tzinfo=UTC), True),
        # other zones are converted to London time first, date included
        (datetime(2026, 7, 15, 3, 0, tzinfo=ZoneInfo("America/New_York")), True),  # 08:00 BST
        (datetime(2026, 11, 27, 9, 59, tzinfo=ZoneInfo("America/Los_Angeles")), True),  # 17:59 GMT
        (datetime(2026, 11, 27, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles")), False),  # 18:00 GMT
        (datetime(2026, 11, 30, 0, 30, tzinfo=ZoneInfo("Pacific/Auckland")), False),  # Sunday in London
        (datetime(2026, 11, 30, 21, 0, tzinfo=ZoneInfo("Pacific/Auckland")), True),  # Monday 08:00 GMT
        (datetime(2026, 12, 25, 6, 0, tzinfo=ZoneInfo("Pacific/Auckland")), True),  # still the 24th in London
        (datetime(2026, 12, 25, 23, 0, tzinfo=ZoneInfo("America/Los_Angeles")), False),  # Boxing Day in London
    ],
)
def test_is_open(moment, expected):
    assert demo.is_open(moment) is expected


def test_clock_is_timezone_aware_london_time():
    moment = demo.now()
    assert moment.tzinfo is not None
    assert moment.utcoffset() == moment.astimezone(LONDON).utcoffset()


# -- over real TCP, static mode, and the demo scenarios ---------------------------------------------


def test_demo_call_over_tcp(socket_call, open_hours):
    result = socket_call.tcp(demo.app, "1000", dtmf="2", bridge={"*": "busy"})
    assert result.executed == [*menu_bridge("support", "user/2002"), BUSY]
    assert_clean(result)
    assert any("connect reply" in line for line in result.trace)
    assert result.trace[-1].endswith("final disconnect notice")


def test_blocked_caller_over_tcp(socket_call, open_hours):
    result = socket_call.tcp(demo.app, "1000", caller_id_number="666")
    assert result.executed == [("respond", "403 Forbidden")]
    assert_clean(result, "CALL_REJECTED")


@pytest.mark.parametrize(
    ("dtmf", "bridge", "expected"),
    [
        ("1", {}, menu_bridge("sales", "user/2001")),
        ("2", {"*": "no_answer"}, [*menu_bridge("support", "user/2002"), NO_ANSWER]),
        ("", {}, [("answer", ""), WELCOME, MENU, FAILED]),
    ],
    ids=["sales", "support-no-answer", "no-choice"],
)
def test_main_line_on_a_static_socket(socket_call, open_hours, dtmf, bridge, expected):
    result = socket_call(demo.app, "1000", mode="static", dtmf=dtmf, bridge=bridge)
    assert result.call.mode == "static"
    assert result.executed == expected
    assert_clean(result)


def test_main_line_on_a_static_socket_over_tcp(socket_call, open_hours):
    result = socket_call.tcp(demo.app, "1000", mode="static", dtmf="1")
    assert result.executed == menu_bridge("sales", "user/2001")
    assert_clean(result)


def test_a_static_call_is_released_promptly_after_hangup(socket_call, open_hours):
    """A static socket never gets CHANNEL_HANGUP_COMPLETE (transcript 01b): the session must not wait
    ``hangup_wait`` (2 s) for it, holding the socket and a ``max_calls`` slot, on every static call."""
    started = time.perf_counter()
    result = socket_call(demo.app, "1000", mode="static", dtmf="1")
    assert result.executed == menu_bridge("sales", "user/2001")
    assert time.perf_counter() - started < 1.0


def test_every_demo_scenario_runs_cleanly(esl_call, monkeypatch):
    monkeypatch.setattr(demo, "clock", demo.clock)  # the scenarios' set-ups replace it: restore it after
    expected = [
        (menu_bridge("sales", "user/2001"), "NORMAL_CLEARING"),
        ([*menu_bridge("support", "user/2002"), BUSY], "NORMAL_CLEARING"),
        ([("answer", ""), CLOSED], "NORMAL_CLEARING"),
        ([("respond", "403 Forbidden")], "CALL_REJECTED"),
        ([("answer", ""), WELCOME], "NORMAL_CLEARING"),
        ([("pre_answer", ""), SIT], "UNALLOCATED_NUMBER"),
        ([("respond", "503 tenant pilot over the concurrent-call limit (1/1)")], "NORMAL_TEMPORARY_FAILURE"),
    ]
    assert len(demo.SCENARIOS) == len(expected)
    for (title, fields, setup), (executed, cause) in zip(demo.SCENARIOS, expected, strict=True):
        if setup is not None:
            setup()
        result = esl_call(demo.app, **fields)
        assert (title, result.executed, result.hangup_cause) == (title, executed, cause)
        assert result.record.protocol_errors == []
