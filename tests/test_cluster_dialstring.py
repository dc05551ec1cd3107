"""The originate command: every value reaches the channel intact through FreeSWITCH's three parsing
passes, and what cannot be made safe is refused before anything is sent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_app.cluster.dialstring import (
    OriginateTarget,
    UnsafeOriginateArgument,
    originate_command,
    parse_originate,
    socket_target,
    split_separated,
)
from esl_app.errors import UnsafeArgumentError
from esl_app.protocol import commands

RESERVED = ("origination_uuid", "originate_timeout")
UUID = "5b1e7c2e-0a43-4f0e-9d7e-3f1c2a9b8d10"
TARGET = socket_target("127.0.0.1", 8085)
SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="{}\x7f", min_codepoint=0x20),
    max_size=40,
)


def test_freeswitch_splitting_rules_as_in_switch_utils():
    # blank-delimited: quotes group, are removed; \s is a space; \' a quote
    assert split_separated("a  b 'c d'  e\\sf it\\'s", " ") == ["a", "b", "c d", "e f", "it's"]
    # comma-delimited: \, is a literal comma, quotes protect, outer spaces go
    assert split_separated(" a ,b\\,c,'d,e'", ",") == ["a", "b,c", "d,e"]
    # at most two pieces: the value keeps its own '='
    assert split_separated("a=b=c", "=", 2) == ["a", "b=c"]
    assert split_separated("^^;a;b,c", ",") == ["a", "b,c"]


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), SAFE_TEXT, max_size=5))
@settings(max_examples=300, deadline=None)
def test_any_value_without_braces_comes_back_intact(variables):
    variables = {name: value for name, value in variables.items() if name not in RESERVED}
    command = originate_command(
        "sofia/gateway/gw1/15551234567", TARGET, origination_uuid=UUID, timeout=30, variables=variables
    )
    commands.bgapi(command)  # one ESL line: no CR/LF can be in it
    parsed = parse_originate(command)
    given = {name: value for name, value in variables.items() if value}  # FreeSWITCH drops "name="
    assert parsed.variables == {"origination_uuid": UUID, "originate_timeout": "30", **given}
    assert parsed.destination == "sofia/gateway/gw1/15551234567"
    assert parsed.target == "&socket(127.0.0.1:8085 async full)"
    assert parsed.rest == []


def test_hostile_caller_data_stays_one_value():
    hostile = "x,origination_uuid=evil}loopback/9999 &park() '${system(rm)}"
    with pytest.raises(UnsafeOriginateArgument, match="braces"):
        originate_command("user/1000", TARGET, origination_uuid=UUID, timeout=30, variables={"name": hostile})
    sneaky = "x,origination_uuid=evil' 'loopback/9999 &park()"
    command = originate_command("user/1000", TARGET, origination_uuid=UUID, timeout=30, variables={"name": sneaky})
    parsed = parse_originate(command)
    assert parsed.variables["name"] == sneaky
    assert parsed.variables["origination_uuid"] == UUID
    assert parsed.destination == "user/1000"


@pytest.mark.parametrize("value", ["${uuid}", "$${domain}", "a}b", "{", "line\nbreak", "tab\there", "nul\0"])
def test_values_that_cannot_be_made_safe_are_refused(value):
    with pytest.raises(UnsafeOriginateArgument):
        originate_command("user/1000", TARGET, origination_uuid=UUID, timeout=30, variables={"v": value})


@pytest.mark.parametrize(
    "destination",
    ["user/1000,user/1001", "user/1000|user/1001", "user/1000:_:user/1001", "{x=1}user/1000", "user/1000 park",
     "user/${x}", "[x=1]user/1000", "user/1000'", "", "user/10\n00"],
)  # fmt: skip
def test_destinations_with_several_legs_or_syntax_are_refused(destination):
    with pytest.raises(UnsafeArgumentError):
        originate_command(destination, TARGET, origination_uuid=UUID, timeout=30)


@pytest.mark.parametrize("name", ["origination_uuid", "originate_timeout", "bad name", "a=b", "x,y", ""])
def test_reserved_or_malformed_names_are_refused(name):
    with pytest.raises(UnsafeOriginateArgument):
        originate_command("user/1000", TARGET, origination_uuid=UUID, timeout=30, variables={name: "1"})


def test_targets():
    assert OriginateTarget(app="park").render() == "'&park()'"
    assert OriginateTarget(extension="1000", context="esl_app").render() == "1000 XML esl_app"
    with pytest.raises(UnsafeOriginateArgument):
        OriginateTarget(app="socket", app_args="1.2.3.4:1 async) &park(").render()
    with pytest.raises(UnsafeOriginateArgument):
        OriginateTarget(extension="1000 XML other").render()
    parsed = parse_originate(originate_command("user/1000", OriginateTarget(extension="1000"), origination_uuid=UUID,
                                               timeout=5))  # fmt: skip
    assert (parsed.target, parsed.rest) == ("1000", ["XML", "default"])
