"""Static and async sockets with one Call API; routes that need an async socket are handed off."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from esl_app import App, Call, RouteError
from esl_app.testing.simulate import simulate_call

DIALPLAN = Path(__file__).resolve().parents[1] / "dialplan" / "esl_app.xml"


def make_app() -> App:
    app = App("modes")

    @app.route("1000", mode="async")
    def menu(call: Call) -> None:
        call.answer()
        call.state["digits"] = call.collect_dtmf(2, timeout=1.0)
        call.hangup()

    @app.route("2000")
    def hand_off(call: Call) -> None:
        call.bridge("user/2000")

    return app


def test_static_call_to_an_async_route_is_handed_off_with_its_destination_saved():
    result = simulate_call(make_app(), destination="1000", context="public", mode="static")
    marker = result.record.variables["esl_app_handoff"]  # signed: the async leg is recognised by it
    # saved with api uuid_setvar (no expansion), then the transfer
    assert result.record.api_commands == [
        f"uuid_setvar {result.record.uuid} esl_app_destination 1000",
        f"uuid_setvar {result.record.uuid} esl_app_context public",
        f"uuid_setvar {result.record.uuid} esl_app_handoff {marker}",
    ]
    assert result.executed == [("transfer", "esl_app_async XML esl_app")]
    assert result.variables["esl_app_destination"] == "1000" and result.variables["esl_app_context"] == "public"
    assert result.record.transferred_to is not None
    assert result.record.hung_up_by is None  # handed off, not hung up
    assert not result.answered


def test_the_async_leg_routes_with_the_saved_destination():
    """The second connection arrives for extension esl_app_async in context esl_app, async."""
    outcome = simulate_call(
        make_app(),
        destination="esl_app_async",
        context="esl_app",
        mode="async",
        variables={"esl_app_destination": "1000", "esl_app_context": "public"},
        dtmf_events={1: "42"},
    )
    assert outcome.verbs == ["answer"]
    assert outcome.call.destination == "1000"
    assert outcome.call.context == "public"
    assert outcome.call.state["digits"] == "42"


def test_an_async_call_runs_an_async_route_directly():
    result = simulate_call(make_app(), destination="1000", mode="async", dtmf_events={1: "7#"})
    assert result.verbs == ["answer"]
    assert result.call.state["digits"] == "7"


def test_routes_without_a_mode_run_in_either_mode():
    for mode in ("static", "async"):
        result = simulate_call(make_app(), destination="2000", mode=mode)
        assert result.verbs[-1] == "bridge", mode


def test_invalid_route_mode_is_refused():
    with pytest.raises(RouteError, match="mode"):
        App().route("1", mode="sync")(lambda call: None)  # type: ignore[arg-type]


def test_dialplan_enters_static_and_hands_off_to_async():
    root = ElementTree.parse(DIALPLAN).getroot()
    extensions = {ext.get("name"): ext for ext in root.iter("extension")}
    first_socket = [
        a.get("data") for a in extensions["esl-app"].iter("action") if a.get("application") == "socket"
    ]
    handoff_socket = [
        a.get("data") for a in extensions["esl_app_async"].iter("action") if a.get("application") == "socket"
    ]
    assert all("async" not in data.split() and "full" in data.split() for data in first_socket)
    assert all({"async", "full"} <= set(data.split()) for data in handoff_socket)
    assert App().handoff_extension.split()[0] == "esl_app_async"
    # after the sockets: a clean 503 when no server answers
    last = [a.get("application") for a in extensions["esl-app"].iter("action")][-2:]
    assert last == ["respond", "hangup"]


def test_static_hangup_with_no_event_at_all_still_ends_the_flow_at_once():
    """A static socket may get no hangup event at all (spec 2.6): the final notice is the end."""
    from esl_app import CallHangup

    seen: dict = {}
    app = App()

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        try:
            call.playback("long.wav")
        except CallHangup as exc:
            seen["hangup"] = exc
            raise

    result = simulate_call(app, destination="1000", mode="static", hangup_at=2, hangup_event_limit=0, timeout=5)
    assert isinstance(seen["hangup"], CallHangup)
    assert result.verbs == ["answer", "playback"]


def test_a_pool_declares_its_socket_mode_and_a_mismatch_is_logged(caplog):
    import logging

    from esl_app.settings import PoolSettings
    from esl_app.testing.peer import CallScript, FakeFreeSWITCH
    from esl_app.testing.pipe import memory_socket_pair

    assert PoolSettings(socket_mode="static").socket_mode == "static"
    app = make_app()
    peer_end, app_end = memory_socket_pair()
    import gevent

    peer = gevent.spawn(FakeFreeSWITCH(CallScript(destination="2000", mode="async"), peer_end).run)
    with caplog.at_level(logging.WARNING):
        call = app.handle(app_end, ("memory", 0), pool="inbound", expected_mode="static")
    assert peer.get(timeout=5).verbs[-1] == "bridge"  # it still runs: one Call API
    assert call.mode == "async"
    assert "expects static sockets" in caplog.text


def chain_app(reached: list[str]) -> App:
    app = App("chain")

    @app.route("1000", mode="async")
    def menu(call: Call) -> None:
        reached.append(f"1000 as {call.destination} ({call.mode})")
        call.transfer("2000", context="default")  # the dialplan sends 2000 back to esl-app

    @app.route("2000")
    def operator(call: Call) -> None:
        reached.append(f"2000 as {call.destination} ({call.mode})")
        call.hangup()

    return app


def esl_app_dialplan(destination: str, context: str) -> str | None:
    """dialplan/esl_app.xml: esl_app_async connects async, any other number static."""
    return "async" if destination == "esl_app_async" else "static"


@pytest.mark.parametrize("over", ["memory", "tcp"])
def test_a_handed_off_call_transferred_back_to_esl_app_runs_the_new_route(over, esl_call):
    """Issue 15 part 3: the hand-off variables are cleared once used, so the number the flow transferred
    to is routed by itself, not handed off again to the old destination (a loop)."""
    from functools import partial

    from esl_app.testing.simulate import simulate_transfers

    reached: list[str] = []
    app = chain_app(reached)
    connect = None if over == "memory" else partial(esl_call.tcp, app)
    legs = simulate_transfers(app, dialplan=esl_app_dialplan, destination="1000", connect=connect, max_legs=6)
    assert reached == ["1000 as 1000 (async)", "2000 as 2000 (static)"]
    assert [leg.record.transferred_to for leg in legs] == ["esl_app_async XML esl_app", "2000 XML default", None]
    assert legs[-1].record.hung_up_by == "app"
    # the async leg dropped them (api uuid_setvar_multi, names only: unset, nothing expanded)
    uuid = legs[1].record.uuid
    assert f"uuid_setvar_multi {uuid} esl_app_destination;esl_app_context" in legs[1].record.api_commands
    assert "esl_app_destination" not in legs[-1].variables and "esl_app_context" not in legs[-1].variables
    assert legs[0].record.uuid == legs[1].record.uuid == legs[2].record.uuid  # one channel throughout


def test_hand_off_variables_are_cleared_without_full_too():
    from esl_app.testing.simulate import simulate_transfers

    reached: list[str] = []
    legs = simulate_transfers(
        chain_app(reached), dialplan=esl_app_dialplan, destination="1000", full=False, max_legs=6
    )
    assert reached == ["1000 as 1000 (async)", "2000 as 2000 (static)"]
    assert ("unset", "esl_app_destination") in legs[1].executed


def test_static_hand_off_writes_its_variables_with_the_transfer_and_the_handshake_in_one_write(esl_call):
    """The static decision path (docs/benchmarks.md): connect, myevents and linger go out in one write;
    after the connect reply the next write is the hand-off's uuid_setvar commands together with the
    transfer, with no reply awaited in between (FreeSWITCH runs them in order, spec 4.3)."""
    from esl_app.bench.static_path import _steps_until_first_execute, _traced, decide_and_hand_off_app

    app = decide_and_hand_off_app()
    with _traced(app) as traces:
        result = esl_call(app, "1000", mode="static")
    assert result.executed[0][0] == "transfer"
    assert sum(command.startswith("api uuid_setvar") for command in result.record.commands) == 3
    (trace,) = traces
    steps = [(who, what) for who, what, _, _ in _steps_until_first_execute(trace)]
    assert steps == [
        ("esl-app -> switch", "connect + myevents + linger 10 + nixevent CHANNEL_PARK CHANNEL_UNPARK CHANNEL_STATE "
                              "CHANNEL_EXECUTE"),
        ("switch -> esl-app", "connect reply (static), '+OK Events Enabled', '+OK will linger 10 seconds', "
                              "'+OK events nixed'"),
        ("esl-app", "routed: the route needs async, hand-off"),
        ("esl-app -> switch", "api uuid_setvar + api uuid_setvar + api uuid_setvar + sendmsg execute transfer"),
    ]
