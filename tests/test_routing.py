"""Route table: exact, prefix and regex matching, captured groups, conflicts, compile-time errors."""

from __future__ import annotations

import re

import pytest

from esl_app import App, RouteError, prefix, regex
from esl_app.routing import RouteTable


def flow(call):  # pragma: no cover - never called here
    return None


def table(app: App) -> RouteTable:
    return app.compile()


def test_exact_beats_prefix_beats_regex_and_longest_prefix_wins():
    app = App()
    app.route(regex(r"\d+"), name="any number")(flow)
    app.route(prefix("1"), name="prefix 1")(flow)
    app.route(prefix("100"), name="prefix 100")(flow)
    app.route("1000", name="exact 1000")(flow)
    t = table(app)
    assert t.match("1000").route.name == "exact 1000"
    assert t.match("1001").route.name == "prefix 100"
    assert t.match("1999").route.name == "prefix 1"
    assert t.match("2000").route.name == "any number"
    assert t.match("abc") is None


def test_regex_must_match_the_whole_destination_and_groups_reach_the_flow():
    app = App()

    def dial(call, number):  # pragma: no cover
        return None

    app.route(regex(r"9(?P<number>\d{4,})"))(dial)
    t = table(app)
    assert t.match("91234x") is None
    found = t.match("9123456")
    assert found.named == {"number": "123456"}
    assert found.groups == ("123456",)
    assert found.kwargs() == {"number": "123456"}


def test_secondary_conditions_caller_context_and_variables():
    app = App()
    app.route("5000", name="plain")(flow)
    app.route("5000", caller=prefix("+44"), name="uk caller")(flow)
    app.route("5000", context="public", variables={"sip_h_X-Tenant": "acme"}, name="acme")(flow)
    t = table(app)
    variables = {"sip_h_X-Tenant": "acme"}
    assert t.match("5000", "+4420", "default").route.name == "uk caller"
    assert t.match("5000", "+3312", "public", variables.get).route.name == "acme"
    assert t.match("5000", "+3312", "public", {}.get).route.name == "plain"
    assert t.match("5000", "+3312", "default").route.name == "plain"


def test_routes_without_destination_are_tried_last():
    app = App()
    app.route(caller=regex(r"\+1\d{10}"), name="north america")(flow)
    app.route(prefix("8"), name="eights")(flow)
    t = table(app)
    assert t.match("800", "+12125550100").route.name == "eights"
    assert t.match("700", "+12125550100").route.name == "north america"
    assert t.match("700", "+4420") is None


def test_conflicting_routes_fail_at_compile_with_both_names():
    app = App()
    app.route("1000", name="first")(flow)
    app.route("1000", name="second")(flow)
    with pytest.raises(RouteError, match="'first' and 'second'"):
        app.compile()


def test_invalid_regex_and_missing_group_fail_at_start():
    with pytest.raises(RouteError, match="invalid route regex"):
        regex("(unclosed")
    app = App()

    def needs(call, extension):  # pragma: no cover
        return None

    app.route(regex(r"1\d{3}"))(needs)
    with pytest.raises(RouteError, match="requires \\['extension'\\]"):
        app.compile()


def test_bad_condition_type_and_empty_prefix_are_refused():
    app = App()
    with pytest.raises(RouteError):
        app.route(destination=1000)(flow)  # type: ignore[arg-type]
    with pytest.raises(RouteError):
        prefix("")
    assert regex(re.compile("x")).kind == "regex"


def test_exact_lookup_does_not_scan_regexes():
    """A large table: an exact or prefix hit must never evaluate a regex."""
    app = App()
    calls = []


    for n in range(2000):
        app.route(str(10000 + n))(flow)
    app.route(regex(r"9\d+"), name="regex")(flow)
    t = table(app)
    matcher = t._regex[0].destination
    original = matcher.pattern

    class CountingPattern:
        groupindex = original.groupindex

        def fullmatch(self, text):
            calls.append(text)
            return original.fullmatch(text)

    object.__setattr__(matcher, "pattern", CountingPattern())
    assert t.match("10500").route.flow is flow
    assert calls == []
    assert t.match("9555").route.name == "regex"
    assert calls == ["9555"]


def test_describe_lists_routes_in_lookup_order():
    app = App()
    app.route(regex(r"\d+"), name="r")(flow)
    app.route("1", name="e")(flow)
    app.route(prefix("12"), name="p")(flow)
    lines = table(app).describe()
    assert [line.split()[0] for line in lines] == ["exact", "prefix", "regex"]
