"""FreeSWITCH's variable expansion as esl-app models it (``esl_app.protocol.expansion``), and the
encoders that keep data from expanding. The facts come from FreeSWITCH 1.10 source
(switch_channel_expand_variables_check, switch_separate_string, mod_dptools base_set, mod_commands)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_app import App, Call
from esl_app.protocol import UnsafeCommandError, commands
from esl_app.protocol.expansion import (
    Expand,
    escape,
    expand,
    passes_for,
    quote_token,
    render,
    separate_string,
    setvar_value,
)
from esl_app.testing.simulate import simulate_call

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = {"v": "VAL", "nested": "${system(nested)}", "s": "abcdef", "uuid": "u-1"}


def run(text: str, *, api: bool = True) -> tuple[str, list[str]]:
    ran: list[str] = []

    def run_api(name: str, args: str) -> str:
        ran.append(f"{name} {args}".strip())
        return f"<{name}>"

    return expand(text, VARIABLES.get, run_api if api else None), ran


@pytest.mark.parametrize(
    ("text", "expanded", "ran"),
    [
        ("A${system(id)}B", "A<system>B", ["system id"]),  # the injection
        ("${system id}", "<system>", ["system id"]),  # a space makes an API call too
        ("${fsctl(shutdown)}", "<fsctl>", ["fsctl shutdown"]),
        ("${nested}", "<system>", ["system nested"]),  # a variable's value is expanded in turn
        ("${upper(${v})}", "<upper>", ["upper VAL"]),
        ("\\${system(id)}", "${system(id)}", []),  # one pass undoes one escape ...
        ("a${v}b${missing}c", "aVALbc", []),
        ("$${v}", "VAL", []),
        ("${s:2:3}", "cde", []),
        ("${s:-2}", "ef", []),
        ("${v}\\${v}", "VAL\\VAL", []),  # the char after '}' is copied raw: that backslash escapes nothing
        ("\\\\ \\' \\x", "\\  \\x", []),  # \\ -> \, \' vanishes, other backslashes stay
        ("\\$5", "\\$5", []),  # no ${ and no \\ \' \n \s \t: the text is not processed at all
        ("cost $5", "cost $5", []),
        ("a$\\'{v}", "a${v}", []),  # esl-app's escape of '$'
    ],
)
def test_expansion_follows_freeswitch(text: str, expanded: str, ran: list[str]) -> None:
    assert run(text) == (expanded, ran)


def test_api_expansion_off_inserts_the_refusal_text() -> None:
    assert run("A${system(id)}B", api=False) == ("A<API Execute Permission Denied>B", [])


def test_set_is_the_only_verb_family_with_two_passes() -> None:
    assert [passes_for(app) for app in ("set", "SET", "push", "unshift", "multiset")] == [2] * 5
    assert {passes_for(app) for app in ("export", "playback", "bridge", "say", "speak", "respond", "transfer")} == {1}


def test_the_fake_reproduces_the_real_switch_findings() -> None:
    """On a real 1.10.12 (issue 15): `set probe_var=A${system(touch FILE)}B` created FILE, and so did
    `set probe_var=A\\${system(touch FILE2)}B`: the first pass turns \\$ into $, base_set expands again."""
    raw = ["probe_var=A${system(touch FILE)}B", "probe_var=A\\${system(touch FILE2)}B", "ok=A\\${x}B"]
    app = App("raw")

    @app.default
    def flow(call: Call) -> None:
        for arg in raw:  # written as is: sendmsg does not escape, only commands.execute does
            call.session.send_command(commands.sendmsg("execute", app="set", arg=arg, event_lock=True), "set")
            call.session.wait_for_event(lambda e: e.name == "CHANNEL_EXECUTE_COMPLETE", 5)

    result = simulate_call(app, destination="1000")
    assert result.record.api_expansions == ["system touch FILE", "system touch FILE2"]
    assert result.variables["ok"] == "AB"  # ${x} (unset) expanded by the second pass


TEXT = st.text(st.sampled_from(list("$\\{}'( )a:n\"s,;=")) | st.characters(codec="utf-8"), max_size=24)


@settings(max_examples=500, deadline=None)
@given(text=TEXT, passes=st.integers(1, 3))
def test_escaped_data_survives_exactly_that_many_passes(text: str, passes: int) -> None:
    value = escape(text, passes)
    ran: list[str] = []
    for _ in range(passes):
        value = expand(value, VARIABLES.get, lambda name, args: ran.append(name) or "")
    assert value == text and ran == []


@settings(max_examples=500, deadline=None)
@given(text=TEXT)
def test_quoted_tokens_split_back_to_the_text(text: str) -> None:
    """Applications that split on spaces (play_and_get_digits, say, record, transfer) get one argument back."""
    line = f"1 2 {quote_token(text)} end"
    assert separate_string(line) == ["1", "2", text, "end"]
    # and through the expansion layer first, as switch_core_session_exec does before the application
    assert separate_string(expand(escape(line), VARIABLES.get, None)) == ["1", "2", text, "end"]


@settings(max_examples=500, deadline=None)
@given(text=TEXT.filter(bool))
def test_uuid_setvar_values_parse_back_exactly(text: str) -> None:
    """mod_commands uuid_setvar: switch_separate_string(cmd, ' ', argv, 3), value stored unexpanded."""
    line = f"0000-uuid name {setvar_value(text)}".strip(" \t\r\n\x0b")  # as switch_api_execute does
    assert separate_string(line, " ", 3) == ["0000-uuid", "name", text]


@settings(max_examples=500, deadline=None)
@given(text=TEXT, raw=st.sampled_from(["user/${v}@", "${v}", "x", "{a=b}${v}/"]))
def test_data_added_to_an_opt_in_stays_data(text: str, raw: str) -> None:
    for arg in (Expand(raw) + text, text + Expand(raw)):
        try:
            wire = render(arg)
        except UnsafeCommandError:
            continue
        ran: list[str] = []
        got = expand(wire, VARIABLES.get, lambda name, args, ran=ran: ran.append(name) or "")
        want = expand(raw, VARIABLES.get, None)
        assert got == (want + text if arg.segments[0][1] else text + want) and ran == []


def test_render_refuses_what_it_cannot_write_safely() -> None:
    with pytest.raises(UnsafeCommandError, match="%"):
        render("%[api_hangup_hook=system id]file.wav")  # FreeSWITCH reads %[...] as scoped variables
    for raw in ("pre$", "pre\\"):
        with pytest.raises(UnsafeCommandError, match="cannot follow"):
            render(Expand(raw) + "{system(id)}")
    with pytest.raises(UnsafeCommandError, match="cannot follow"):
        render(Expand("${v}") + "\\\\")  # the char after '}' is copied raw: a doubled backslash would split
    assert render(Expand("${v}") + "${x}") == "${v}$\\'{x}"


def test_uuid_setvar_multi_drops_values_with_a_variable_and_unsets_bare_names() -> None:
    app = App("multi")

    @app.default
    def flow(call: Call) -> None:
        call.api("uuid_setvar_multi", call.uuid, "a=1;b=x${y};c=2")
        call.api("uuid_setvar_multi", call.uuid, "c")

    result = simulate_call(app, destination="1000")
    assert result.variables["a"] == "1" and "b" not in result.variables and "c" not in result.variables
    assert any("contains a variable" in error for error in result.record.protocol_errors)


def test_the_shipped_dialplan_references_no_caller_data() -> None:
    """A variable's value is expanded when substituted: ${destination_number} with a dialled
    ${system(id)} runs it. The shipped actions only reference variables FreeSWITCH itself sets."""
    import re

    root = ElementTree.parse(ROOT / "dialplan" / "esl_app.xml").getroot()
    referenced = {
        name
        for action in root.iter("action")
        for name in re.findall(r"\$\{([^}]*)\}", action.get("data") or "")
    }
    assert referenced <= {"uuid"}


def test_the_shipped_switch_conf_turns_api_expansion_off() -> None:
    root = ElementTree.parse(ROOT / "dialplan" / "switch.conf.xml").getroot()
    params = {p.get("name"): p.get("value") for p in root.iter("param")}
    # the file is the nodes' whole switch.conf (docker/, tests/test_deploy.py checks the rest)
    assert root.get("name") == "switch.conf" and params["api-expansion"] == "false"
