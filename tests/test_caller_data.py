"""Caller data is never expanded by FreeSWITCH (issue 15 part 1), in every verb, in memory and over TCP.

The fake FreeSWITCH expands ``${...}`` in every execute argument as switch_core_session_exec does (and
``set`` a second time, as mod_dptools' base_set does) and records every API command an expansion ran
(``record.api_expansions``): on a real switch, ``${system(id)}`` runs ``system id``. Each case passes
hostile caller text (caller ID name/number, destination, SIP header, digits) into one verb and checks
that nothing ran and that the application received the text exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from esl_app import App, Call, Expand, UnsafeArgumentError, regex
from esl_app.testing.channel import split_arguments

# ${api(...)} and ${api ...} calls, a global-style $${}, escapes of one and two passes, quotes, spaces,
# a nested variable, a trailing backslash
EVIL = "A${system(id)}B$${x}\\${fsctl(shutdown)}C\\'D ${uuid_kill ${uuid}} 'q' E$\\"
EVIL_NUMBER = "9${system(id)}"  # what a dialled number or caller ID number could carry
SCRIPT: dict[str, Any] = {
    "caller_id_name": EVIL,
    "caller_id_number": EVIL,
    "variables": {"sip_h_X-Reason": EVIL, "gw": "carrier"},
}


@pytest.fixture(params=["memory", "tcp"])
def place(request, esl_call) -> Callable[..., Any]:
    return esl_call if request.param == "memory" else esl_call.tcp


def caller_app(flow: Callable[[Call], Any]) -> tuple[App, dict]:
    app = App("caller-data")
    seen: dict = {}

    @app.default
    def run(call: Call) -> None:
        try:
            seen["result"] = flow(call)
        except UnsafeArgumentError as exc:
            seen["error"] = exc
            raise

    return app, seen


def last_token(arg: str, limit: int) -> str:
    return split_arguments(arg, limit)[-1]


# name -> (flow, check(result, seen)); data read from the call, as a flow would
CASES: dict[str, tuple[Callable[[Call], Any], Callable[[Any, dict], None]]] = {
    "set caller name": (
        lambda call: call.set("who", call.caller_id_name),
        lambda r, seen: _eq(r.variables["who"], EVIL),
    ),
    "export caller name": (
        lambda call: call.export("who", call.caller_id_name),
        lambda r, seen: (_eq(r.variables["who"], EVIL), _eq(r.args("export"), [f"who={EVIL}"])),
    ),
    "playback path with caller number": (
        lambda call: call.playback(f"/recordings/{call.caller_id_number}.wav"),
        lambda r, seen: _eq(r.args("playback"), [f"/recordings/{EVIL}.wav"]),
    ),
    "say caller number": (
        lambda call: call.say(call.caller_id_number, kind="NAME_SPELLED", method="iterated"),
        lambda r, seen: _eq(last_token(r.args("say")[0], 5), EVIL),
    ),
    "speak caller name": (
        lambda call: call.speak(f"Hello {call.caller_id_name}"),
        lambda r, seen: _eq(r.args("speak"), [f"flite|kal|Hello {EVIL}"]),
    ),
    "respond with a SIP header as reason": (
        lambda call: call.respond(480, call.sip_header("X-Reason")),
        lambda r, seen: _eq(r.args("respond"), [f"480 {EVIL}"]),
    ),
    "record path with caller name": (
        lambda call: call.record(f"/tmp/{call.caller_id_name}.wav", time_limit=5),
        lambda r, seen: _eq(split_arguments(r.args("record")[0], 4)[0], f"/tmp/{EVIL}.wav"),
    ),
    "gather prompt with caller name": (
        lambda call: call.gather(f"/prompts/{call.caller_id_name}.wav", timeout=0.2),
        lambda r, seen: _eq(split_arguments(r.args("play_and_get_digits")[0])[5], f"/prompts/{EVIL}.wav"),
    ),
    "bridge dial string with caller number": (
        lambda call: call.bridge(f"sofia/gateway/gw/{call.caller_id_number}"),
        lambda r, seen: _eq(r.args("bridge"), [f"sofia/gateway/gw/{EVIL}"]),
    ),
    "bridge opt-in with caller data appended": (
        lambda call: call.bridge(Expand("sofia/gateway/${gw}/") + call.caller_id_number),
        lambda r, seen: _eq(r.args("bridge"), [f"sofia/gateway/carrier/{EVIL}"]),
    ),
    "conference named by caller": (
        lambda call: call.conference(call.caller_id_name),
        lambda r, seen: _eq(r.args("conference"), [EVIL]),
    ),
    "execute escape hatch": (
        lambda call: call.execute("log", f"INFO {call.caller_id_name}"),
        lambda r, seen: _eq(r.args("log"), [f"INFO {EVIL}"]),
    ),
    "bridge leg variable from a SIP header is refused": (
        # unterminated: today's '{sip_h_X-T=${system(id)}user/2000' closes it with the dial string's '}'
        lambda call: call.bridge("user/2000", variables={"sip_h_X-T": call.sip_header("X-Unterminated")}),
        lambda r, seen: (_refused(r, seen), _eq(r.args("bridge"), [])),
    ),
}


def _eq(actual: Any, expected: Any) -> None:
    assert actual == expected


def _refused(result: Any, seen: dict) -> None:
    assert isinstance(seen.get("error"), UnsafeArgumentError), seen
    assert result.responded == "503 Service Unavailable"


@pytest.mark.parametrize("case", sorted(CASES))
def test_caller_data_in_every_verb_is_never_expanded(case: str, place) -> None:
    flow, check = CASES[case]
    app, seen = caller_app(flow)
    variables = {**SCRIPT["variables"], "sip_h_X-Unterminated": "${system(id)"}
    result = place(app, "1000", **{**SCRIPT, "variables": variables})
    assert result.record.api_expansions == []
    check(result, seen)


@pytest.mark.parametrize("full", [True, False])
def test_set_without_full_escapes_for_both_passes_of_set(full: bool, place) -> None:
    """Without ``full`` ``api`` is refused: the ``set`` application, escaped for base_set's second pass."""
    app, _ = caller_app(lambda call: call.set("who", call.caller_id_name))
    result = place(app, "1000", full=full, **SCRIPT)
    assert result.record.api_expansions == []
    assert result.variables["who"] == EVIL
    assert result.verbs == ([] if full else ["set"])


def test_transfer_to_a_destination_with_expansion_characters_is_refused(place) -> None:
    """A transfer destination is matched and substituted into the next dialplan's actions ($1), which
    FreeSWITCH expands again: esl-app refuses '$' and backslashes there, with a named error."""
    app, seen = caller_app(lambda call: call.transfer(call.destination))
    result = place(app, EVIL_NUMBER)
    assert result.record.api_expansions == []
    assert isinstance(seen["error"], UnsafeArgumentError)
    assert result.args("transfer") == [] and result.record.transferred_to is None
    assert result.responded == "503 Service Unavailable"


@pytest.mark.parametrize("full", [True, False])
def test_the_static_to_async_hand_off_saves_the_destination_as_data(full: bool, place) -> None:
    app = App("hand-off")

    @app.route(regex(r".+"), mode="async")
    def menu(call: Call) -> None:
        call.answer()

    result = place(app, EVIL, mode="static", full=full, context="pub$${x}")
    assert result.record.api_expansions == []
    assert result.variables["esl_app_destination"] == EVIL
    assert result.variables["esl_app_context"] == "pub$${x}"
    assert result.args("transfer") == ["esl_app_async XML esl_app"]


def test_digits_the_caller_typed_are_data(place) -> None:
    """Digits come from the caller too (the fake does not check the characters a caller 'presses')."""

    def flow(call: Call) -> None:
        call.answer()
        digits = call.collect_dtmf(20, timeout=1.0, digit_timeout=0.5)
        call.playback(f"digits/{digits}.wav")

    app, _ = caller_app(flow)
    typed = "1${system(id)}2"
    result = place(app, "1000", dtmf_events={1: typed})
    assert result.record.api_expansions == []
    assert result.args("playback") == [f"digits/{typed}.wav"]


def test_expand_is_the_explicit_opt_in(place) -> None:
    """A flow's own ${...} expands when, and only when, it says so."""

    def flow(call: Call) -> None:
        call.set("target", "2001")
        call.bridge(Expand("user/${target}@${domain_name}"))
        call.playback("${target}.wav")  # plain text: arrives as written

    app, _ = caller_app(flow)
    result = place(app, "1000", variables={"domain_name": "pbx.example"})
    assert result.args("bridge") == ["user/2001@pbx.example"]
    assert result.args("playback") == ["${target}.wav"]
    assert result.record.api_expansions == []
