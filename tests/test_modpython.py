"""The mod_python3 transport (``esl_app.modpython``): the same flows run inside FreeSWITCH.

Calls go through the stand-in ``freeswitch`` module (``esl_app.testing.freeswitch``), whose sessions
are the fake FreeSWITCH, and are compared with the same scripted calls over the Event Socket."""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import gevent.monkey
import pytest
from data_fixtures import *  # noqa: F403  (the Postgres and Redis fixtures: make_data)
from gevent._hub_local import get_hub_if_exists

import callflows.demo as demo
from esl_app import App, Call
from esl_app.data import RoutingData
from esl_app.errors import CommandTimeout
from esl_app.hubthread import ensure_home_hub
from esl_app.modpython import host
from esl_app.modpython.session import VerbUnavailable
from esl_app.protocol import Expand
from esl_app.testing import freeswitch as fake_freeswitch
from esl_app.testing.freeswitch import Session, simulate_in_process
from esl_app.testing.simulate import simulate_call

OPEN = datetime(2026, 11, 25, 10, 30, tzinfo=ZoneInfo("Europe/London"))
HOSTILE = "${system(id)}"


@pytest.fixture
def open_hours(monkeypatch):
    monkeypatch.setattr(demo, "clock", lambda: OPEN)


SCRIPTS = [
    {"destination": "1000", "dtmf": "1"},
    {"destination": "1000", "dtmf": "2", "bridge": {"*": "busy"}},
    {"destination": "1000", "dtmf": ["", "9", "2"], "bridge": {"*": "no_answer"}},
    {"destination": "1000", "dtmf": "x"},
    {"destination": "1000", "caller_id_number": "666"},
    {"destination": "1234", "bridge": {"*": "fail:NO_ROUTE_DESTINATION"}},
    {"destination": "4242"},
    {"destination": "1000", "dtmf": "1", "hangup_at": 3},
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_same_verbs_and_outcome_as_over_the_socket(open_hours, script):
    over_socket = simulate_call(demo.app, **script)
    in_process = simulate_in_process(demo.app, **script)
    assert in_process.executed == over_socket.executed
    assert in_process.hangup_cause == over_socket.hangup_cause
    assert in_process.record.hung_up_by == over_socket.record.hung_up_by
    assert in_process.answered == over_socket.answered
    assert in_process.variables.get("demo_team") == over_socket.variables.get("demo_team")
    assert in_process.record.protocol_errors == []
    assert in_process.call is not None and in_process.call.mode == "inprocess"


# -- caller data stays data ------------------------------------------------------------------------

hostile_app = App("hostile")


@hostile_app.route("5000")
def hostile_flow(call: Call) -> None:
    caller_text = call.caller_id_name  # caller-controlled
    call.answer()
    call.set("caller_said", caller_text)
    call.export("exported", caller_text)
    call.playback(caller_text)
    call.set("expanded", Expand("${destination_number}"))
    call.state["read_back"] = call.get("caller_said")
    call.state["bridge"] = call.bridge("user/" + caller_text, variables={"origination_caller_id_name": "x y"})


def test_caller_text_is_never_expanded_in_process():
    script = {"destination": "5000", "caller_id_name": HOSTILE, "bridge": {"*": "busy"}}
    over_socket = simulate_call(hostile_app, **script)
    result = simulate_in_process(hostile_app, **script)
    assert result.record.api_expansions == []  # a real switch would have run `id`
    assert result.variables["caller_said"] == HOSTILE  # setVariable: stored as given
    assert result.variables["exported"] == HOSTILE
    assert result.variables["expanded"] == "5000"  # Expand(...) is the one way to let it expand
    assert result.call.state["read_back"] == HOSTILE
    assert ("playback", HOSTILE) in result.executed  # arrived at the application unchanged
    assert result.executed == over_socket.executed
    assert result.call.state["bridge"].outcome == "busy"


# -- several calls at once, each on its own OS thread ------------------------------------------------

CALLS = 6
meeting = threading.Barrier(CALLS, timeout=30)
threads_seen: set[int] = set()
hubs_seen: list[object] = []
together_app = App("together")
together_data = RoutingData()
together_app.on_startup(lambda: together_data.start())


@together_app.route("1000")
def together_flow(call: Call) -> None:
    decision = together_data.decide(call.destination, call.caller_id_number, call_id=call.uuid, at=OPEN)
    call.state["decision"] = decision.outcome
    call.answer()
    threads_seen.add(threading.get_ident())
    meeting.wait()  # every call is inside its flow at the same time, or this times out
    call.playback("ivr/ivr-welcome_to_freeswitch.wav")
    hubs_seen.append(get_hub_if_exists())  # no gevent hub was made on a FreeSWITCH call thread
    together_data.release(decision)


def test_calls_run_at_once_on_their_own_threads():
    results: list[object] = [None] * CALLS

    def place(index: int) -> None:
        results[index] = simulate_in_process(together_app, destination="1000", caller_id_number=f"20{index}")

    placers = [threading.Thread(target=place, args=(i,)) for i in range(CALLS)]
    for thread in placers:
        thread.start()
    for thread in placers:
        thread.join(60)
    assert all(r is not None for r in results)
    for result in results:
        assert result.executed == [("answer", ""), ("playback", "ivr/ivr-welcome_to_freeswitch.wav")]
        assert result.hangup_cause == "NORMAL_CLEARING"
        assert result.call.state["decision"] == "route"
    assert len(threads_seen) == CALLS
    assert hubs_seen == [None] * CALLS
    assert not gevent.monkey.is_module_patched("socket")
    assert not gevent.monkey.is_module_patched("threading")


def test_routing_data_is_served_from_the_hub_thread():
    hub = ensure_home_hub()
    data = RoutingData()
    hub.call(data.start)
    answers: list[str] = []

    def ask() -> None:
        answers.append(data.decide("1000", "1001", at=OPEN).outcome)
        answers.append(str(get_hub_if_exists()))

    askers = [threading.Thread(target=ask) for _ in range(8)]
    for thread in askers:
        thread.start()
    for thread in askers:
        thread.join(30)
    assert answers.count("route") == 8
    assert answers.count("None") == 8
    hub.call(data.stop)


# -- the entry module: re-imported on every call, the app loaded once --------------------------------


FLOWS_MODULE = """
from esl_app import App

app = App("reimport")
started = []
app.on_startup(lambda: started.append(1))

@app.route("1000")
def main(call):
    call.answer()
    call.playback("ivr/ivr-welcome_to_freeswitch.wav")
"""


def test_handler_module_reimported_per_call_loads_the_app_once(tmp_path, monkeypatch):
    name = f"mp_flows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FLOWS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # mod_python3 puts the script directory on sys.path
    fake_freeswitch.install()
    loads_before = host.loads
    records = []
    for _ in range(3):
        sys.modules.pop("esl_app.modpython", None)  # as mod_python3 does: a fresh import per call
        entry = importlib.import_module("esl_app.modpython")
        session = Session(destination="1000")
        entry.handler(session, f"{name}:app")
        records.append(session.close())
    assert host.loads - loads_before == 1
    assert sys.modules[name].started == [1]  # startup hooks ran once
    assert host._apps[f"{name}:app"].calls == 3
    for record in records:
        assert record.verbs == ["answer", "playback"] and record.hangup_cause == "NORMAL_CLEARING"


def test_runtime_warms_and_fsapi_reports(open_hours):
    fake_freeswitch.install()  # alone (or first on an xdist worker) nothing else has put it in place
    import esl_app.modpython as entry

    entry.runtime("callflows.demo:app")
    assert host._apps["callflows.demo:app"].app.started

    class Stream:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

    stream = Stream()
    entry.fsapi(None, stream, None, "status")
    assert "callflows.demo:app: started" in stream.text
    stream = Stream()
    entry.fsapi(None, stream, None, "load nowhere.module:app")
    assert stream.text.startswith("-ERR TargetError: cannot import 'nowhere.module'")


def test_a_bad_target_is_named():
    fake_freeswitch.install()
    import esl_app.modpython as entry

    session = Session(destination="1000")
    with pytest.raises(host.TargetError, match="expected MODULE:APP"):
        entry.handler(session, "callflows.demo")
    session.close()


# -- verbs that behave differently in-process -----------------------------------------------------

odd_app = App("odd")


@odd_app.route("7000")
def timeouts(call: Call) -> None:
    call.answer()
    try:
        call.sleep(60000, timeout=0.3)
    except CommandTimeout as exc:
        call.state["timeout"] = str(exc)
    try:
        call.session.execute("playback", "ivr/x.wav", loops=3)
    except VerbUnavailable as exc:
        call.state["loops"] = str(exc)
    try:
        call.session.send_command(b"getvar x\n\n", "getvar")
    except VerbUnavailable as exc:
        call.state["raw"] = str(exc)
    call.playback("ivr/after.wav")


@odd_app.route("7001")
def transfers(call: Call) -> None:
    call.transfer("8000", "XML", "default")
    call.playback("ivr/too-late.wav")  # raises CallTransferred: the call left the flow
    call.state["after"] = True


def test_timeout_breaks_the_application_and_unavailable_verbs_are_named():
    result = simulate_in_process(odd_app, destination="7000", app_seconds={"sleep": 30})
    assert "did not complete within 0.3 s" in result.call.state["timeout"]
    assert "loops=3 is not available in-process" in result.call.state["loops"]
    assert "getvar is not available in-process" in result.call.state["raw"]
    assert [a for a, _ in result.executed] == ["answer", "sleep", "playback"]
    assert result.record.api_commands == [f"uuid_break {result.record.uuid} all"]


def test_transfer_leaves_the_flow_without_hanging_up():
    hooks: list[object] = []
    odd_app.on_hangup(lambda call, cause: hooks.append(cause))
    result = simulate_in_process(odd_app, destination="7001")
    assert simulate_call(odd_app, destination="7001").executed == result.executed
    assert result.executed == [("transfer", "8000 XML default")]
    assert result.record.transferred_to == "8000 XML default"
    assert "after" not in result.call.state
    assert hooks[-1] is None  # cause None: transferred, not hung up
    assert result.record.hung_up_by is None


def test_a_gevent_thread_keeps_its_own_routing_data():
    """With the hub thread running (FreeSWITCH side), data a gevent thread starts and uses (the
    socket server's) is still called directly there, never handed to the hub thread."""
    ensure_home_hub()
    data = RoutingData()
    gevent.get_hub()  # the main thread is a gevent thread
    decision = data.decide("3000", "1001", call_id="main-thread-call", at=OPEN)  # starts it here
    assert data._owner == threading.get_ident()
    assert decision.lease is not None and "main-thread-call" in data.limiter.held
    data.release(decision)
    assert "main-thread-call" not in data.limiter.held
    data.stop()


capped_app = App("capped", max_calls=1)
capped_inside = threading.Event()
capped_release = threading.Event()


@capped_app.route("1000")
def capped_flow(call: Call) -> None:
    call.answer()
    capped_inside.set()
    assert capped_release.wait(30)


def test_max_calls_refuses_with_503_across_call_threads():
    first: list[object] = []
    holder = threading.Thread(target=lambda: first.append(simulate_in_process(capped_app, destination="1000")))
    holder.start()
    assert capped_inside.wait(30)
    refused = simulate_in_process(capped_app, destination="1000")
    capped_release.set()
    holder.join(30)
    assert refused.executed == [("respond", "503 Service Unavailable")]
    assert refused.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert first[0].executed == [("answer", "")]
    assert host._apps[f"esl_app.testing:{id(capped_app)}"].refused == 1


def test_postgres_and_redis_data_from_many_call_threads(make_data):
    """The real tiers (Postgres via the asyncpg bridge, Redis, limits) started on the hub thread and
    used by eight plain threads at once, each taking and giving back a tenant slot."""
    hub = ensure_home_hub()
    data = make_data(start=False)
    hub.call(data.start)
    outcomes: list[str] = []
    thread_hubs: list[object] = []

    def calls(worker: int) -> None:
        for n in range(10):
            decision = data.decide("1000", "1001", call_id=f"t{worker}-{n}", at=OPEN)
            outcomes.append(f"{decision.outcome}/{decision.source}/{decision.lease_where}")
            data.release(decision)
        thread_hubs.append(get_hub_if_exists())

    workers = [threading.Thread(target=calls, args=(i,)) for i in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    assert len(outcomes) == 80
    assert {o.split("/")[0] for o in outcomes} == {"route"}
    assert {o.split("/")[1] for o in outcomes} <= {"local", "redis", "postgres"}
    assert {o.split("/")[2] for o in outcomes} == {"redis"}  # each call took its slot in Redis
    assert thread_hubs == [None] * 8
    tenant = data.number("1000").tenant_id
    assert hub.call(lambda: data.redis.active(tenant)) == 0  # every slot given back
    assert not data.limiter.held


def test_log_records_reach_the_freeswitch_console(monkeypatch):
    from esl_app.modpython.logs import install_console_logging

    lines: list[tuple[str, str]] = []

    class FreeSWITCH:
        @staticmethod
        def consoleLog(level: str, text: str) -> None:
            lines.append((level, text))

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # nothing configured, as inside FreeSWITCH
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    handler = install_console_logging(FreeSWITCH)
    assert handler is not None
    try:
        logging.getLogger("esl_app.modpython").error("flow failed: %s", "boom")
        logging.getLogger("callflows.demo").info("call ended")
    finally:
        root.removeHandler(handler)
    assert lines == [("ERR", "[esl_app.modpython] flow failed: boom\n"), ("INFO", "[callflows.demo] call ended\n")]
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])  # a site's own setup wins
    assert install_console_logging(FreeSWITCH) is None
