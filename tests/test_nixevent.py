"""The handshake's ``nixevent``: myevents' events a call does not act on are never sent, and what
needs one of them back asks for it before the command that makes it."""

from __future__ import annotations

import logging

import gevent
import pytest
from gevent.event import AsyncResult
from pydantic import ValidationError
from test_session import ScriptedSwitch, start_session

from esl_app import App, Call
from esl_app.protocol import switch
from esl_app.session import DEFAULT_NIX_EVENTS, Session, SessionSettings
from esl_app.settings import Settings
from esl_app.testing.peer import CallScript
from esl_app.testing.pipe import memory_socket_pair
from esl_app.testing.simulate import simulate_call

NIX_LINE = "nixevent " + " ".join(DEFAULT_NIX_EVENTS)


def _names_seen(settings: SessionSettings) -> tuple[list[str], list[str]]:
    """A call of answer, playback, hangup against the fake FreeSWITCH: (events the flow's session
    got, the commands the switch read)."""
    seen: list[str] = []
    app = App("nix", settings)

    @app.route("1000")
    def flow(call: Call) -> None:
        # an event waiter that never matches sees every event the session gets
        call.session._event_waiters.append((lambda event: seen.append(event.name), AsyncResult()))
        call.answer()
        call.playback("ivr/x.wav")
        call.hangup()

    result = simulate_call(app, destination="1000")
    assert result.record.verbs == ["answer", "playback"]
    return seen, result.record.commands


def test_the_switch_sends_no_park_state_or_execute_events_and_the_call_runs_the_same() -> None:
    nixed, commands = _names_seen(SessionSettings())
    everything, all_commands = _names_seen(SessionSettings(nix_events=()))
    assert NIX_LINE in commands
    assert not any(c.startswith("nixevent") for c in all_commands)
    assert {"CHANNEL_EXECUTE", "CHANNEL_STATE", "CHANNEL_UNPARK"} <= set(everything)
    assert not {"CHANNEL_EXECUTE", "CHANNEL_STATE", "CHANNEL_UNPARK"} & set(nixed)
    # what the session acts on still comes, in the same order
    acted = {"CHANNEL_ANSWER", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"}
    assert [n for n in nixed if n in acted] == [n for n in everything if n in acted]
    assert len(nixed) < len(everything)


def test_start_asks_for_channel_execute_back_before_the_application_runs() -> None:
    """call.start() returns at CHANNEL_EXECUTE: nixed in the handshake, it must be asked for again,
    in order before the execute, or the wait would never end."""
    app = App("start")
    got: list[str] = []

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        event = call.start("playback", "ivr/long.wav", timeout=5)
        got.append(event.name)
        call.start("playback", "ivr/again.wav", timeout=5)  # subscribed once: no second `event`
        call.hangup()

    result = simulate_call(app, destination="1000", app_seconds={"playback": 0.3})
    assert got == ["CHANNEL_EXECUTE"]
    commands = result.record.commands
    subscribe = commands.index("event plain CHANNEL_EXECUTE")
    first_playback = next(i for i, c in enumerate(commands) if c == "sendmsg" and i > subscribe)
    assert subscribe < first_playback
    assert commands.count("event plain CHANNEL_EXECUTE") == 1


def test_wait_for_event_asks_for_a_nixed_event_by_name() -> None:
    session, peer = start_session()
    waiting = gevent.spawn(
        session.wait_for_event, lambda e: e.name == "CHANNEL_STATE", 2.0, events=("CHANNEL_STATE", "DTMF")
    )
    command = peer.command()
    assert command.line == "event plain CHANNEL_STATE"  # DTMF was never nixed
    peer.write(switch.reply("+OK event listener enabled plain"))
    peer.write(switch.event_plain([("Event-Name", "CHANNEL_STATE"), ("Unique-ID", session.uuid)]))
    assert waiting.get(timeout=2).name == "CHANNEL_STATE"


def test_a_refused_nixevent_means_every_event_comes_and_nothing_is_asked_back(caplog) -> None:
    peer_end, app_end = memory_socket_pair()
    session = Session(app_end, SessionSettings())
    peer = ScriptedSwitch(peer_end)
    with caplog.at_level(logging.WARNING):
        connecting = gevent.spawn(session.connect)
        peer.handshake(nixed="-ERR no keywords supplied")
        connecting.get(timeout=2)
        gevent.sleep(0.01)
    assert "nixevent refused" in caplog.text
    session.subscribe("CHANNEL_EXECUTE")  # nothing was nixed: nothing to ask for
    session.connection.send(b"api status\n\n")
    assert peer.command().line == "api status"


def test_the_setting_names_only_events_a_call_can_do_without(monkeypatch) -> None:
    assert Settings().session().nix_events == DEFAULT_NIX_EVENTS
    monkeypatch.setenv("ESL_APP_NIX_EVENTS", "channel_park, CHANNEL_STATE")
    assert Settings().session().nix_events == ("CHANNEL_PARK", "CHANNEL_STATE")
    monkeypatch.setenv("ESL_APP_NIX_EVENTS", "")
    assert Settings().session().nix_events == ()
    for wrong in ("CHANNEL_HANGUP", "DTMF", "BACKGROUND_JOB", "NO_SUCH_EVENT"):
        monkeypatch.setenv("ESL_APP_NIX_EVENTS", wrong)
        with pytest.raises(ValidationError, match=f"{wrong} cannot be nixed"):
            Settings()


def test_a_socket_without_full_gets_every_event_and_start_still_works() -> None:
    """Without ``full`` the switch refuses nixevent and event (spec 2.3): nothing is asked back."""
    app = App("nofull")
    got: list[str] = []

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        got.append(call.start("playback", "ivr/long.wav", timeout=5).name)
        call.hangup()

    result = simulate_call(app, CallScript(destination="1000", full=False, app_seconds={"playback": 0.2}))
    assert got == ["CHANNEL_EXECUTE"]
    assert "event plain CHANNEL_EXECUTE" not in result.record.commands
