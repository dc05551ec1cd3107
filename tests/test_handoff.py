"""A static->async hand-off is one call (issue 15 part 8): its second leg, recognised by a signed marker
in its connect reply, skips the guards, the data decision and the pool door's counts that its first
leg passed. Over TCP, with the fake FreeSWITCH playing both legs of one channel."""

from __future__ import annotations

import logging
import uuid as uuid_module

import gevent
import pytest
from data_fixtures import *  # noqa: F403  (the Postgres and Redis fixtures: make_data)

import esl_app.data.limits as limits_module
from esl_app import App, Call, Reject
from esl_app.data import RoutingData
from esl_app.handoff import MARKER, HandoffSigner
from esl_app.metrics import PoolMetrics
from esl_app.pools import PoolWorker
from esl_app.session import SessionSettings
from esl_app.settings import PoolSettings
from esl_app.testing.peer import CallRecord, CallScript, connect_tcp
from esl_app.transport import OutboundServer

HANDOFF_VARIABLES = ("esl_app_destination", "esl_app_context", MARKER)


def make_app(guard_calls: list[str] | None = None) -> App:
    app = App("handoff-test", SessionSettings(hangup_wait=0.2))

    @app.guard
    def count(call: Call) -> Reject | None:
        if guard_calls is not None:
            guard_calls.append(call.uuid)
        return None

    @app.route("1000", mode="async")
    def menu(call: Call) -> None:
        call.answer()
        call.playback("menu.wav")

    @app.route("2000", mode="async")
    def held(call: Call) -> None:
        call.answer()
        call.playback("hold.wav")

    return app


def flow_verbs(record: CallRecord) -> list[str]:
    """The flow's own applications (not the variables the framework sets and clears)."""
    return [verb for verb in record.verbs if verb not in ("set", "unset", "export")]


def first_leg(address, destination: str = "1000", uuid: str | None = None, **fields) -> CallRecord:
    script = CallScript(destination=destination, mode="static", uuid=uuid or str(uuid_module.uuid4()), **fields)
    return connect_tcp(address, script).run()


def second_leg(address, first: CallRecord, **fields) -> CallRecord:
    """FreeSWITCH runs the hand-off extension for the same channel: same UUID, the variables the
    first leg set, an async socket."""
    variables = {name: first.variables[name] for name in HANDOFF_VARIABLES if name in first.variables}
    script = CallScript(destination="esl_app_async", context="esl_app", mode="async", uuid=first.uuid,
                        variables={**variables, **fields.pop("variables", {})}, **fields)  # fmt: skip
    return connect_tcp(address, script).run()


def handed_off_call(address, destination: str = "1000") -> tuple[CallRecord, CallRecord]:
    first = first_leg(address, destination)
    assert first.transferred_to == "esl_app_async XML esl_app", first.executed
    return first, second_leg(address, first)


def wait_for(predicate, timeout: float = 10.0) -> None:
    with gevent.Timeout(timeout, AssertionError("condition not met in time")):
        while not predicate():
            gevent.sleep(0.01)


@pytest.fixture
def server():
    started: list[OutboundServer] = []

    def start(app: App) -> OutboundServer:
        srv = OutboundServer(app.handle, "127.0.0.1", 0)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(2)


@pytest.fixture
def worker():
    started: list[PoolWorker] = []

    def start(app: App, **pool) -> PoolWorker:
        metrics = PoolMetrics("inbound")
        app.observer = metrics
        w = PoolWorker(app, "inbound", PoolSettings(port=0, **pool), metrics=metrics)
        w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.drain(2)


# -- the marker ------------------------------------------------------------------------------------


def test_the_marker_binds_the_channel_the_destination_and_a_short_time():
    signer = HandoffSigner(b"k" * 32, max_age=60)
    marker = signer.issue("uuid-1", "1000", "public", now=1000.0)
    assert signer.verify(marker, "uuid-1", "1000", "public", now=1001.0)
    assert not signer.verify(marker, "uuid-2", "1000", "public", now=1001.0)  # another channel
    assert not signer.verify(marker, "uuid-1", "1001", "public", now=1001.0)  # another destination
    assert not signer.verify(marker, "uuid-1", "1000", "default", now=1001.0)
    assert not signer.verify(marker, "uuid-1", "1000", "public", now=1061.0)  # too old
    assert not HandoffSigner(b"x" * 32).verify(marker, "uuid-1", "1000", "public", now=1001.0)  # another deployment
    for forged in ("", "1", "abc.def", marker + "0", "1000000." + "0" * 32, "9" * 40 + "." + "0" * 32):
        assert not signer.verify(forged, "uuid-1", "1000", "public", now=1001.0)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        HandoffSigner(b"short")


# -- one process ------------------------------------------------------------------------------------


def test_the_second_leg_skips_the_guards_and_clears_the_marker(server):
    guarded: list[str] = []
    srv = server(make_app(guarded))
    first, second = handed_off_call(srv.address)
    assert ("unset", MARKER) in second.executed  # good once: a later transfer back is a new call
    assert flow_verbs(second) == ["answer", "playback"] and second.executed[-1] == ("playback", "menu.wav")
    assert guarded == [first.uuid]  # once, on the first leg
    assert MARKER not in second.variables


def test_a_forged_stale_or_foreign_marker_is_a_new_call(server, caplog):
    guarded: list[str] = []
    app = make_app(guarded)
    srv = server(app)
    uuid = str(uuid_module.uuid4())
    other = HandoffSigner(b"o" * 32)  # another deployment's secret
    forged = {
        "made up": "1796300000000." + "0" * 32,
        "another deployment": other.issue(uuid, "1000", "default"),
        "another channel": app.handoff.issue(str(uuid_module.uuid4()), "1000", "default"),
        "stale": app.handoff.issue(uuid, "1000", "default", now=1_000_000.0),
    }
    caplog.set_level(logging.WARNING, "esl_app.app")
    saved = {"esl_app_destination": "1000", "esl_app_context": "default"}
    for marker in forged.values():
        variables = {**saved, MARKER: marker}
        script = CallScript(destination="esl_app_async", context="esl_app", uuid=uuid, variables=variables)
        record = connect_tcp(srv.address, script).run()
        assert ("unset", MARKER) in record.executed
        assert flow_verbs(record) == ["answer", "playback"]  # the call still runs, as a new one
    assert guarded == [uuid] * len(forged)  # and its guards ran every time
    assert caplog.text.count("hand-off marker not valid here") == len(forged)


def test_a_second_leg_is_not_refused_by_max_calls(server):
    app = make_app()
    app.max_calls = 1
    srv = server(app)
    first = first_leg(srv.address)
    holder = connect_tcp(srv.address, CallScript(destination="2000", app_seconds={"playback": 2.0}))
    held = gevent.spawn(holder.run)
    try:
        gevent.sleep(0.3)  # the holder takes the only place
        over = connect_tcp(srv.address, CallScript(destination="1000")).run()
        assert over.executed == [("respond", "503 Service Unavailable")]
        second = second_leg(srv.address, first)  # the handed-off call was admitted on its first leg
        assert flow_verbs(second) == ["answer", "playback"]
    finally:
        held.join(timeout=10)


# -- the pool door ----------------------------------------------------------------------------------


def test_pool_cps_counts_a_handed_off_call_once(worker):
    w = worker(make_app(), cps=3)
    w.admission.clock = lambda: 5000.25  # one calls-per-second window for the whole test
    for _ in range(3):
        _first, second = handed_off_call(w.address)
        assert flow_verbs(second) == ["answer", "playback"], second.executed
    # the third call's second leg met a full window at accept: held until its connect reply, then let in
    assert w.admission.admitted == 5 and w.admission.resumed == 3 and w.admission.refused["rate"] == 0
    fourth = first_leg(w.address)  # 3 calls in this second: the 4th is over the pool's rate
    assert fourth.variables.get("esl_app_refused") == "rate"
    assert fourth.executed[-1] == ("respond", "503 Service Unavailable")
    sample = w.metrics.registry.get_sample_value
    assert sample("esl_app_calls_refused_total", {"pool": "inbound", "reason": "rate"}) == 1


def test_a_second_leg_arriving_at_a_full_door_is_admitted_and_a_new_call_is_not(worker):
    w = worker(make_app(), capacity=1, cps=2)
    w.admission.clock = lambda: 7000.5
    a = first_leg(w.address)  # rate 1 of 2
    b = first_leg(w.address)  # rate 2 of 2: the window is full
    assert a.transferred_to and b.transferred_to
    new = first_leg(w.address)  # a new call, refused after its connect reply showed no marker
    assert new.variables.get("esl_app_refused") == "rate" and new.executed[-1][0] == "respond"
    assert new.hangup_cause == "NORMAL_TEMPORARY_FAILURE" and not new.answered
    a2 = second_leg(w.address, a)  # over the rate, but admitted on its first leg: it goes on
    assert flow_verbs(a2) == ["answer", "playback"] and "esl_app_refused" not in a2.variables
    assert w.admission.refused["rate"] == 1 and w.admission.resumed == 1
    wait_for(lambda: w.slots.active_total() == 0)  # every leg was counted out once its greenlet ended


def test_without_a_hand_off_in_flight_a_refusal_is_still_one_blind_write(worker):
    w = worker(make_app(), capacity=1, cps=1)
    w.admission.clock = lambda: 9000.5
    connect_tcp(w.address, CallScript(destination="2000", mode="async")).run()  # no hand-off: rate 1 of 1
    refused = connect_tcp(w.address, CallScript(destination="2000", mode="async")).run()
    assert refused.variables.get("esl_app_refused") == "rate"
    assert refused.commands[:4] == ["connect", "sendmsg", "sendmsg", "sendmsg"]  # pipelined, no reply awaited


# -- tenant limits (the demo's guard and its routing data) ------------------------------------------


def test_tenant_rate_and_concurrency_count_a_handed_off_call_once(server, monkeypatch):
    """The pilot tenant allows 5 calls/s and 1 at a time (fixtures/demo_data.json)."""
    now = [100.0]
    monkeypatch.setattr(limits_module, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    data = RoutingData()
    data.start()
    app = App("tenant-test", SessionSettings(hangup_wait=0.2))
    in_flow: list[int] = []

    @app.guard
    def limits(call: Call) -> Reject | None:
        decision = data.decide(call.destination, call.caller_id_number, call_id=call.uuid)
        call.state["decision"] = decision
        if decision.lease is not None:
            call.on_hangup(lambda c, _cause: data.hand_over(decision) if c.handed_off else data.release(decision))
        return None if decision.outcome == "route" else Reject(code=503, reason=decision.reason[:60])

    @app.on_resume
    def resume(call: Call) -> None:
        decision = data.decide(call.destination, call.caller_id_number)
        data.adopt(decision, call.uuid)
        call.on_hangup(lambda _c, _cause: data.release(decision))

    @app.route("3000", mode="async")
    def pilot(call: Call) -> None:
        in_flow.append(data.limiter.holding["pilot"])  # slots held while the flow runs
        call.answer()

    try:
        srv = server(app)
        for _ in range(5):  # 5 calls in one second: each decided (and counted) once
            _first, second = handed_off_call(srv.address, "3000")
            assert flow_verbs(second) == ["answer"], second.executed
        assert in_flow == [1] * 5  # the slot moved to the async leg: held throughout, never twice
        wait_for(lambda: data.limiter.holding["pilot"] == 0)  # and given back at the end
        sixth = first_leg(srv.address, "3000")
        assert sixth.executed == [("respond", "503 tenant pilot over the call-rate limit (5 calls/s)")]
    finally:
        data.stop()


# -- esl-app serve: the pool's workers share the secret --------------------------------------------

POOL_APP = """
import os
from pathlib import Path

from esl_app import App, Call, Reject

app = App("handoff-pool")
HERE = Path(__file__).parent


@app.guard
def once(call: Call):
    # a guard that ran before for this channel refuses: only a recognised second leg gets through
    log = HERE / "guarded.txt"
    seen = [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []
    with log.open("a") as out:
        out.write(f"{call.uuid} {os.getpid()}\\n")
    return Reject(code=409) if call.uuid in seen else None


@app.route("1000", mode="async")
def menu(call: Call) -> None:
    with (HERE / "legs.txt").open("a") as out:
        out.write(f"{call.uuid} {os.getpid()} {call.resumed}\\n")
    call.answer()
"""


def _ready_pids(http: int) -> list[int]:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/ready", timeout=5) as reply:
            status = json.loads(reply.read())
    except OSError:
        return []
    return [w["pid"] for w in status["pools"]["inbound"]["workers"] if w["state"] == "ready"]


def test_another_worker_of_the_pool_recognises_the_second_leg(tmp_path):
    """The first leg is served by one worker and the second by the other (the one not serving is
    stopped with SIGSTOP, so the shared accept queue has a single taker): the pool's secret is shared."""
    import os
    import signal
    import subprocess
    import sys

    from test_peers import _env, _lines_until, _stop

    (tmp_path / "handoff_pool.py").write_text(POOL_APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "esl_app.cli", "serve", "handoff_pool:app", "--pools"],
        stdout=subprocess.PIPE, bufsize=0, cwd=tmp_path,
        env=_env(ESL_APP_POOLS__INBOUND__PORT="0", ESL_APP_POOLS__INBOUND__WORKERS="2",
                 ESL_APP_POOLS__OUTBOUND__WORKERS="0", ESL_APP_HTTP_PORT="0", ESL_APP_HANGUP_WAIT="0.2",
                 PYTHONPATH=str(tmp_path)),
    )  # fmt: skip
    try:
        lines = _lines_until(proc, "esl-app: ready")
        pool = next(line for line in lines if line.startswith("esl-app: pool inbound on "))
        address = ("127.0.0.1", int(pool.split()[4].rpartition(":")[2]))
        http = int(next(line for line in lines if line.startswith("esl-app: http on ")).split()[3].rpartition(":")[2])
        wait_for(lambda: len(_ready_pids(http)) == 2, timeout=30)
        a, b = _ready_pids(http)
        for first_pid, second_pid in ((a, b), (b, a), (a, b)):
            os.kill(second_pid, signal.SIGSTOP)
            try:
                first = first_leg(address)
            finally:
                os.kill(second_pid, signal.SIGCONT)
            os.kill(first_pid, signal.SIGSTOP)
            try:
                second = second_leg(address, first)
            finally:
                os.kill(first_pid, signal.SIGCONT)
            assert flow_verbs(second) == ["answer"], second.executed
        guarded = [line.split() for line in (tmp_path / "guarded.txt").read_text().splitlines()]
        legs = [line.split() for line in (tmp_path / "legs.txt").read_text().splitlines()]
        assert [pid for _uuid, pid in guarded] == [str(a), str(b), str(a)]  # one guard run per call
        assert [pid for _uuid, pid, _resumed in legs] == [str(b), str(a), str(b)]  # each on the other worker
        assert all(resumed == "True" for _uuid, _pid, resumed in legs)
    finally:
        _stop(proc)


def test_with_redis_the_tenant_slot_moves_to_the_second_leg_without_a_gap(make_data):
    """The pilot tenant allows one call at a time. The first leg's process hands the slot over (it stays
    in Redis, no longer renewed there); the second leg's process adopts it and gives it back."""
    first_process, second_process = make_data(), make_data()
    call_id = str(uuid_module.uuid4())
    decision = first_process.decide("3000", "1001", call_id=call_id)
    assert decision.outcome == "route" and decision.lease_where == "redis"
    first_process.hand_over(decision)
    assert call_id not in first_process.limiter.held and first_process.redis.active("pilot") == 1
    other = second_process.decide("3000", "1002", call_id="another-call")
    assert other.outcome == "over_limit"  # no gap: the handed-off call still holds the only slot
    resumed = second_process.decide("3000", "1001")  # the second leg looks it up, counting nothing
    second_process.adopt(resumed, call_id)
    assert resumed.lease == call_id and second_process.limiter.held[call_id].tenant_id == "pilot"
    second_process.release(resumed)
    assert second_process.redis.active("pilot") == 0 and call_id not in second_process.limiter.held
