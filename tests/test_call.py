"""Every call-control verb against the fake FreeSWITCH, in memory; a hangup during each blocking verb."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from esl_app import App, Call, CallHangup, CommandTimeout, Expand, Reject
from esl_app.testing.simulate import simulate_call


def single_flow_app(flow: Callable[[Call], None], outcome: dict | None = None) -> App:
    """An app whose only route (1000) runs ``flow``; ``outcome`` collects what the flow saw."""
    app = App("test")
    seen = outcome if outcome is not None else {}

    @app.route("1000")
    def run(call: Call) -> None:
        try:
            seen["result"] = flow(call)
        except CallHangup as exc:
            seen["hangup"] = exc
            raise

    @app.on_hangup
    def hook(call: Call, cause: str | None) -> None:
        seen.setdefault("hooks", []).append(cause)

    return app


def test_answer_playback_hangup():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        response = call.playback("ivr/ivr-welcome.wav")
        call.hangup("NORMAL_CLEARING")
        return response

    result = simulate_call(single_flow_app(flow, outcome), destination="1000")
    assert result.verbs == ["answer", "playback"]
    assert result.args("playback") == ["ivr/ivr-welcome.wav"]
    assert result.answered
    assert result.hangup_cause == "NORMAL_CLEARING"
    assert outcome["result"] == "FILE PLAYED"
    assert outcome["hooks"] == ["NORMAL_CLEARING"]


def test_flow_returning_without_hangup_is_hung_up_by_the_framework():
    result = simulate_call(single_flow_app(lambda call: call.answer()), destination="1000")
    assert result.verbs == ["answer"]
    assert result.record.hung_up_by == "app"
    assert result.hangup_cause == "NORMAL_CLEARING"


def test_pre_answer_ring_ready_and_tone_stream():
    def flow(call: Call):
        call.ring_ready()
        call.pre_answer()
        call.playback("tone_stream://%(300,0,440)")

    result = simulate_call(single_flow_app(flow), destination="1000")
    assert result.verbs == ["ring_ready", "pre_answer", "playback"]
    assert result.args("playback") == ["tone_stream://%(300,0,440)"]
    assert not result.answered


def test_hangup_with_a_cause():
    result = simulate_call(single_flow_app(lambda call: call.hangup("USER_BUSY")), destination="1000")
    assert result.hangup_cause == "USER_BUSY"
    assert result.verbs == []


@pytest.mark.parametrize(
    ("dtmf", "expected"),
    [("5", "5"), (["", "7"], "7"), ("", None), (["x"], None)],
)
def test_gather_returns_digits_or_none(dtmf, expected):
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        return call.gather("ivr/menu.wav", tries=2, regex="[0-9]")

    result = simulate_call(single_flow_app(flow, outcome), destination="1000", dtmf=dtmf)
    assert outcome["result"] == expected
    assert result.verbs == ["answer", "play_and_get_digits"]


def test_gather_defaults_never_send_none():
    """greenswitch G15: missing optional arguments were sent as the text 'None'."""
    def flow(call: Call):
        return call.gather("ivr/menu.wav")

    result = simulate_call(single_flow_app(flow), destination="1000", dtmf="1")
    (args,) = result.args("play_and_get_digits")
    assert "None" not in args
    assert args == "1 1 1 5000 # ivr/menu.wav silence_stream://250 esl_app_digits"


def test_gather_multi_digit_with_terminator_and_digit_timeout():
    outcome: dict = {}

    def flow(call: Call):
        return call.play_and_get_digits("ivr/pin.wav", min_digits=4, max_digits=6, digit_timeout=2.0)

    result = simulate_call(single_flow_app(flow, outcome), destination="1000", dtmf="1234#")
    assert outcome["result"] == "1234"
    assert result.args("play_and_get_digits")[0].endswith(r"esl_app_digits \d+|[*#0-9]+ 2000")


def test_say_speak_record_sleep():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        call.say("42")
        call.speak("Hello world", engine="flite", voice="slt")
        recorded = call.record("/tmp/msg.wav", time_limit=30, silence_threshold=200, silence_hits=3)
        call.sleep(250)
        return recorded

    result = simulate_call(single_flow_app(flow, outcome), destination="1000")
    assert result.verbs == ["answer", "say", "speak", "record", "sleep"]
    assert result.args("say") == ["en NUMBER pronounced 42"]
    assert result.args("speak") == ["flite|slt|Hello world"]
    assert result.args("record") == ["/tmp/msg.wav 30 200 3"]
    assert result.args("sleep") == ["250"]
    assert outcome["result"].path == "/tmp/msg.wav"
    assert outcome["result"].seconds == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("outcome_name", "expected", "cause"),
    [
        ("answer", "answered", "NORMAL_CLEARING"),
        ("busy", "busy", "USER_BUSY"),
        ("no_answer", "no_answer", "NO_ANSWER"),
        ("fail:UNALLOCATED_NUMBER", "failed", "UNALLOCATED_NUMBER"),
    ],
)
def test_bridge_outcomes_keep_the_a_leg(outcome_name, expected, cause):
    outcome: dict = {}

    def flow(call: Call):
        result = call.bridge("user/2000", timeout=20)
        call.playback("after-bridge.wav")  # the A-leg is still ours whatever happened
        return result

    result = simulate_call(single_flow_app(flow, outcome), destination="1000", bridge={"*": outcome_name})
    bridge = outcome["result"]
    assert bridge.outcome == expected
    assert bridge.cause == cause
    assert result.verbs == ["set", "set", "set", "bridge", "playback"]
    assert result.variables["continue_on_fail"] == "true"
    assert result.variables["hangup_after_bridge"] == "false"
    assert result.variables["call_timeout"] == "20"


@pytest.mark.parametrize(("mode", "quiet"), [("async", True), ("static", True), ("async", False)])
def test_bridge_sets_its_variables_in_the_bridges_own_write(monkeypatch, mode, quiet):
    from esl_app.transport.connection import Connection

    writes: list[bytes] = []
    real = Connection._write

    def counted(self, commands, data):
        writes.append(data)
        return real(self, commands, data)

    def flow(call: Call):
        call.answer()
        writes.clear()
        return call.bridge("user/2000", timeout=20, quiet_setup=quiet)

    monkeypatch.setattr(Connection, "_write", counted)
    outcome: dict = {}
    result = simulate_call(single_flow_app(flow, outcome), destination="1000", mode=mode)
    assert outcome["result"].outcome == "answered"
    assert result.variables["hangup_after_bridge"] == "false" and result.variables["call_timeout"] == "20"
    bridge_write = writes[0]  # one syscall: the variables first, then the bridge
    assert bridge_write.index(b"call_timeout=20") < bridge_write.index(b"execute-app-name: bridge")
    if mode == "async" and quiet:  # one api: a reply and no events, where three sets made 3 replies, 6 events
        assert result.verbs == ["answer", "bridge"]
        assert b"api uuid_setvar_multi" in bridge_write and bridge_write.count(b"sendmsg") == 1
    else:  # by default, and on a static socket (the listener runs the applications inline): the sets
        assert result.verbs == ["answer", "set", "set", "set", "bridge"]
        assert bridge_write.count(b"sendmsg") == 4


def test_bridge_with_leg_variables():
    def flow(call: Call):
        return call.bridge("user/2000", variables={"origination_caller_id_name": "Sales Desk"})

    result = simulate_call(single_flow_app(flow), destination="1000")
    assert result.args("bridge") == ["{origination_caller_id_name='Sales Desk'}user/2000"]


def test_transfer_hands_the_call_off_without_hangup():
    outcome: dict = {}

    def flow(call: Call):
        call.transfer("2000", "XML", "default")
        call.playback("never.wav")  # the call is not ours any more

    app = single_flow_app(flow, outcome)
    result = simulate_call(app, destination="1000")
    assert result.args("transfer") == ["2000 XML default"]
    assert "playback" not in result.verbs
    assert result.record.hung_up_by is None
    assert outcome["hooks"] == [None]


def test_respond_before_answer():
    result = simulate_call(single_flow_app(lambda call: call.respond(503)), destination="1000")
    assert result.responded == "503 Service Unavailable"
    assert result.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert not result.answered


def test_set_export_unset_and_get():
    outcome: dict = {}

    def flow(call: Call):
        call.set("team", "sales")
        call.export("account", "42 a/b")
        call.unset("team")
        return call.get("account"), call.get("team"), call.variable("account"), call.variable("team")

    result = simulate_call(single_flow_app(flow, outcome), destination="1000")
    assert result.verbs == ["export", "unset"]  # set: api uuid_setvar, which does not expand
    assert f"uuid_setvar {result.record.uuid} team sales" in result.record.api_commands
    assert result.args("export") == ["account=42 a/b"]
    assert outcome["result"] == ("42 a/b", None, "42 a/b", None)
    assert "team" not in result.variables


def test_get_reads_a_value_with_newlines_intact():
    outcome: dict = {}

    def flow(call: Call):
        return call.get("note")

    simulate_call(single_flow_app(flow, outcome), destination="1000", variables={"note": "line one\nline two"})
    assert outcome["result"] == "line one\nline two"


def test_set_value_with_newline_goes_in_a_body_not_a_second_command():
    outcome: dict = {}

    def flow(call: Call):
        call.set("note", "a\nb\r\nsendmsg\ncall-command: hangup")
        call.set("memo", Expand("a\nb\r\nsendmsg\ncall-command: hangup"))  # the set application: a body
        return call.get("note")

    result = simulate_call(single_flow_app(flow, outcome), destination="1000")
    # uuid_setvar carries newlines as \n escapes on one line, which switch_separate_string resolves
    assert result.record.api_commands[0].startswith(f"uuid_setvar {result.record.uuid} note a\\nb\\r\\nsendmsg")
    assert result.verbs == ["set"]
    assert result.variables["memo"] == "a\nb\r\nsendmsg\ncall-command: hangup"
    assert result.variables["note"] == "a\nb\r\nsendmsg\ncall-command: hangup"
    assert result.record.hung_up_by == "app"  # the injected hangup did not run; the framework hung up


def test_collect_dtmf_from_events():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        return call.collect_dtmf(4, timeout=2.0, terminators="#")

    simulate_call(single_flow_app(flow, outcome), destination="1000", dtmf_events={1: "12#9"})
    assert outcome["result"] == "12"


def test_collect_dtmf_times_out_with_what_it_has():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        return call.collect_dtmf(4, timeout=0.2)

    simulate_call(single_flow_app(flow, outcome), destination="1000", dtmf_events={1: "7"})
    assert outcome["result"] == "7"


def test_api_and_bgapi():
    outcome: dict = {}

    def flow(call: Call):
        exists = call.api("uuid_exists", call.uuid)
        job = call.bgapi("uuid_getvar", call.uuid, "account")
        return exists, job.wait(5)

    simulate_call(single_flow_app(flow, outcome), destination="1000", variables={"account": "77"})
    assert outcome["result"] == ("true", "77")


def test_execute_escape_hatch_returns_the_complete_event():
    outcome: dict = {}

    def flow(call: Call):
        event = call.execute("log", "INFO hello")
        return event.name, event.get("Application")

    result = simulate_call(single_flow_app(flow, outcome), destination="1000")
    assert outcome["result"] == ("CHANNEL_EXECUTE_COMPLETE", "log")
    assert result.executed == [("log", "INFO hello")]


def test_park_and_conference_do_not_hang_the_flow():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        call.conference("room-1")
        call.playback("announce.wav")  # runs nested in the conference
        return "returned"

    result = simulate_call(single_flow_app(flow, outcome), destination="1000", timeout=10)
    assert outcome["result"] == "returned"
    assert result.verbs[:2] == ["answer", "conference"]


def test_every_wait_has_a_timeout():
    outcome: dict = {}

    def flow(call: Call):
        try:
            call.execute("park", timeout=0.2)
        except CommandTimeout as exc:
            return str(exc)

    simulate_call(single_flow_app(flow, outcome), destination="1000")
    assert "did not complete within 0.2 s" in outcome["result"]


def test_unknown_application_hangs_the_call_up():
    outcome: dict = {}

    def flow(call: Call):
        call.execute("no_such_app", "x")

    result = simulate_call(single_flow_app(flow, outcome), destination="1000")
    assert result.hangup_cause == "DESTINATION_OUT_OF_ORDER"
    assert isinstance(outcome["hangup"], CallHangup)
    assert outcome["hooks"] == ["DESTINATION_OUT_OF_ORDER"]


# A hangup during each blocking verb: the verb raises CallHangup at once and hooks get the cause.
BLOCKING_VERBS: dict[str, Callable[[Call], object]] = {
    "answer": lambda call: call.answer(),
    "pre_answer": lambda call: call.pre_answer(),
    "ring_ready": lambda call: call.ring_ready(),
    "playback": lambda call: call.playback("long.wav"),
    "gather": lambda call: call.gather("menu.wav", timeout=1),
    "say": lambda call: call.say("12"),
    "speak": lambda call: call.speak("hello"),
    "record": lambda call: call.record("/tmp/r.wav"),
    "bridge": lambda call: call.bridge("user/2000"),
    "transfer": lambda call: call.transfer("2000"),
    "respond": lambda call: call.respond(180),
    "set": lambda call: call.set("a", Expand("b")),  # a plain value goes by api uuid_setvar
    "export": lambda call: call.export("a", "b"),
    "unset": lambda call: call.unset("a"),
    "sleep": lambda call: call.sleep(1000),
    "execute": lambda call: call.execute("info"),
    "conference": lambda call: call.conference("room"),
}


@pytest.mark.parametrize("verb", sorted(BLOCKING_VERBS))
def test_hangup_during_each_blocking_verb(verb):
    outcome: dict = {}
    after: list[str] = []

    def flow(call: Call):
        call.playback("first.wav")  # execute 1
        try:
            BLOCKING_VERBS[verb](call)  # the caller hangs up when its (last) execute starts
        finally:
            after.append("verb returned or raised")
        call.playback("never.wav")

    app = single_flow_app(flow, outcome)
    # bridge sends two pipelined `set`s before its own execute
    hangup_at = 4 if verb == "bridge" else 2
    result = simulate_call(app, destination="1000", hangup_at=hangup_at, hangup_cause="ORIGINATOR_CANCEL", timeout=10)
    assert isinstance(outcome.get("hangup"), CallHangup), outcome
    assert outcome["hangup"].cause == "ORIGINATOR_CANCEL"
    assert after == ["verb returned or raised"]
    assert "never.wav" not in result.args("playback")
    assert outcome["hooks"] == ["ORIGINATOR_CANCEL"]


def test_hangup_during_collect_dtmf_and_wait_for_hangup():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        call.playback("x.wav")
        return call.collect_dtmf(3, timeout=5)

    simulate_call(single_flow_app(flow, outcome), destination="1000", hangup_at=2, timeout=10)
    assert isinstance(outcome["hangup"], CallHangup)


def test_hangup_before_connect_runs_no_flow():
    ran: list[str] = []
    app = single_flow_app(lambda call: ran.append("flow"))
    result = simulate_call(app, destination="1000", hangup_before_connect=True)
    assert ran == []
    assert result.verbs == []


def test_guard_refuses_before_answer_and_routing_is_skipped():
    app = App("guarded")
    ran: list[str] = []

    @app.guard
    def blocked(call: Call):
        return Reject(code=403) if call.caller_id_number == "666" else None

    @app.route("1000")
    def flow(call: Call):
        ran.append("flow")
        call.answer()

    refused = simulate_call(app, destination="1000", caller_id_number="666")
    assert refused.verbs == ["respond"]
    assert refused.responded == "403 Forbidden"
    assert refused.hangup_cause == "CALL_REJECTED"
    assert ran == []
    allowed = simulate_call(app, destination="1000", caller_id_number="1001")
    assert allowed.verbs == ["answer"]
    assert ran == ["flow"]


def test_guard_can_hang_up_with_a_cause_only():
    app = App()
    app.guard(lambda call: Reject(cause="USER_BUSY"))
    app.route("1000")(lambda call: call.answer())
    result = simulate_call(app, destination="1000")
    assert result.verbs == []
    assert result.hangup_cause == "USER_BUSY"


def test_unrouted_call_gets_404_and_default_flow_when_set():
    app = App()
    app.route("1000")(lambda call: call.answer())
    result = simulate_call(app, destination="555")
    assert result.responded == "404 Not Found"
    assert result.hangup_cause == "UNALLOCATED_NUMBER"

    @app.default
    def fallback(call: Call):
        call.playback("tone_stream://%(100,0,440)")

    assert simulate_call(app, destination="555").verbs == ["playback"]


def test_route_groups_reach_the_flow():
    from esl_app import regex

    app = App()
    seen: list[str] = []

    @app.route(regex(r"9(?P<number>\d+)"))
    def dial(call: Call, number: str):
        seen.append(number)
        assert call.match.groups == (number,)

    simulate_call(app, destination="9123")
    assert seen == ["123"]


def test_a_failing_flow_ends_the_call_with_503_before_answer():
    def flow(call: Call):
        raise RuntimeError("bug in the flow")

    result = simulate_call(single_flow_app(flow), destination="1000")
    assert result.responded == "503 Service Unavailable"
    assert result.hangup_cause == "NORMAL_TEMPORARY_FAILURE"


def test_static_socket_mode_runs_the_same_flow():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        call.playback("a.wav")
        return call.gather("menu.wav"), call.mode

    result = simulate_call(single_flow_app(flow, outcome), destination="1000", mode="static", dtmf="3")
    assert outcome["result"] == ("3", "static")
    assert result.verbs == ["answer", "playback", "play_and_get_digits"]
    assert result.hangup_cause == "NORMAL_CLEARING"


def test_socket_without_full_still_works():
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        return call.get("account")

    result = simulate_call(
        single_flow_app(flow, outcome), destination="1000", full=False, variables={"account": "9"}
    )
    assert outcome["result"] == "9"
    assert result.verbs == ["answer"]


def test_hostile_caller_id_and_sip_header_are_data_never_commands():
    """Caller-controlled values with CR/LF: stored byte for byte via a body, or refused — never a command."""
    evil = "1001\r\n\r\nsendmsg\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n\n"
    outcome: dict = {}

    def flow(call: Call):
        call.set("seen_caller", call.caller_id_number)  # goes as a text/plain body
        outcome["caller"] = call.caller_id_number
        call.api("uuid_setvar", call.uuid, "tenant", call.sip_header("X-Tenant") or "")  # refused

    result = simulate_call(
        single_flow_app(flow, outcome),
        destination="1000",
        caller_id_number=evil,
        variables={"sip_h_X-Tenant": "acme\nexit"},
    )
    assert outcome["caller"] == evil
    assert result.variables["seen_caller"] == evil
    assert "tenant" not in result.variables
    # the api line was refused before anything was written, and the flow's error ended the call cleanly
    assert not any("tenant" in line for line in result.record.commands)
    assert "exit" not in result.record.commands[:-1]
    assert result.responded == "503 Service Unavailable"
    assert result.hangup_cause == "NORMAL_TEMPORARY_FAILURE"


def test_collect_dtmf_on_a_static_socket_reads_digits_with_an_application():
    """A static socket gets DTMF events only while an application reads digits (spec 2.4)."""
    outcome: dict = {}

    def flow(call: Call):
        call.answer()
        return call.collect_dtmf(3, timeout=2.0, terminators="#")

    result = simulate_call(single_flow_app(flow, outcome), destination="1000", mode="static", dtmf="42#")
    assert outcome["result"] == "42"
    assert result.verbs == ["answer", "read"]
    assert result.args("read") == ["1 3 silence_stream://10 esl_app_read_digits 2000 #"]
