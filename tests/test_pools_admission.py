"""Pool admission at the door, in one process over real TCP: refusals as the fake FreeSWITCH records
them, capacity and rate, pool-only routes, metrics, settings and structured logs."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid as uuid_module

import gevent
import gevent.event
import gevent.socket
import pytest
from prometheus_client import generate_latest

from esl_app import App, Call, RouteError
from esl_app.metrics import PoolMetrics
from esl_app.pools import Admission, PoolWorker, SlotTable
from esl_app.pools.admission import REFUSALS
from esl_app.pools.logs import CallContextFilter, JsonFormatter
from esl_app.recovery import VARIABLE, Checkpoint, Entry
from esl_app.session import SessionSettings
from esl_app.settings import PoolSettings, Settings
from esl_app.testing.peer import CallRecord, CallScript, connect_tcp

REFUSED = [("set", "esl_app_refused=capacity"), ("respond", "503 Service Unavailable")]


def make_app() -> App:
    app = App("pools-test", SessionSettings(hangup_wait=0.2))

    @app.route("1000", pool="inbound")
    def inbound_line(call: Call) -> None:
        logging.getLogger("test.flow").info("inbound flow running")
        call.answer()
        call.playback("inbound.wav")

    @app.route("2000", pool="outbound")
    def dialer(call: Call) -> None:
        call.answer()
        call.playback("outbound.wav")

    @app.route("3000")
    def shared(call: Call) -> None:
        call.answer()

    return app


@pytest.fixture
def worker():
    started: list[PoolWorker] = []

    def start(name: str = "inbound", app: App | None = None, **pool) -> PoolWorker:
        metrics = PoolMetrics(name)
        app = app or make_app()
        app.observer = metrics
        w = PoolWorker(app, name, PoolSettings(port=0, **pool), metrics=metrics)
        w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.drain(2)


def place(address, **fields):
    return connect_tcp(address, CallScript(**fields)).run()


def wait_for(predicate, timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout, AssertionError("condition not met in time")):
        while not predicate():
            gevent.sleep(0.01)


def sample(metrics: PoolMetrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, {"pool": metrics.pool, **labels})
    return value or 0.0


@pytest.mark.parametrize("mode", ["async", "static"])
def test_over_capacity_is_refused_at_the_door_with_503_and_a_reason(worker, mode):
    w = worker(capacity=1)
    held = gevent.spawn(place, w.address, destination="1000", app_seconds={"playback": 0.5})
    gevent.sleep(0.1)
    refused = place(w.address, destination="1000", mode=mode)
    # one write: connect, set, respond, hangup (a static socket is gone after the inline respond)
    assert refused.commands[:3] == ["connect", "sendmsg", "sendmsg"]
    assert refused.executed == REFUSED
    assert refused.variables["esl_app_refused"] == "capacity"
    assert refused.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert not refused.continued_in_dialplan  # the call ended: the dialplan does not carry on silently
    record = held.get(timeout=5)
    assert record.verbs == ["answer", "playback"] and record.hangup_cause == "NORMAL_CLEARING"
    assert w.admission.refused["capacity"] == 1
    assert sample(w.metrics, "esl_app_calls_refused_total", reason="capacity") == 1
    assert sample(w.metrics, "esl_app_calls_accepted_total") == 1


def test_the_refusal_is_written_within_a_millisecond_in_one_write(worker):
    w = worker(capacity=1)
    held = gevent.spawn(place, w.address, destination="1000", app_seconds={"playback": 0.5})
    gevent.sleep(0.1)
    sock = gevent.socket.create_connection(w.address)
    started = time.perf_counter()
    data = b""
    expected = REFUSALS["capacity"]
    while len(data) < len(expected):
        data += sock.recv(4096)
    client_ms = (time.perf_counter() - started) * 1000
    sock.close()
    assert data == expected  # connect, set, respond, hangup: pipelined, nothing waited for
    assert client_ms < 20  # loopback, including the client's own scheduling
    server_seconds = sample(w.metrics, "esl_app_refusal_seconds_sum")
    assert sample(w.metrics, "esl_app_refusal_seconds_count") == 1
    assert server_seconds < 0.001
    held.get(timeout=5)


def test_calls_over_the_rate_are_refused_and_counted(worker):
    w = worker(cps=3)
    # one frozen instant: five calls placed one after another can straddle a second boundary on a
    # loaded machine, and the sliding window then rightly admits a fourth
    w.admission.clock = lambda: 1000.25
    records = [place(w.address, destination="1000") for _ in range(5)]
    assert [r.verbs for r in records[:3]] == [["answer", "playback"]] * 3
    for r in records[3:]:
        assert r.variables["esl_app_refused"] == "rate"
        assert r.executed == [("set", "esl_app_refused=rate"), ("respond", "503 Service Unavailable")]
    assert sample(w.metrics, "esl_app_calls_refused_total", reason="rate") == 2


def test_a_burst_over_capacity_leaves_no_connection_unanswered(worker):
    """300 connections at once on a pool of 20: every one is served or refused explicitly."""
    w = worker(capacity=20)
    calls = [gevent.spawn(place, w.address, destination="1000", app_seconds={"playback": 0.3}) for _ in range(300)]
    gevent.joinall(calls, timeout=30, raise_error=True)
    records = [g.value for g in calls]
    served = [r for r in records if r.verbs == ["answer", "playback"]]
    refused = [r for r in records if r.executed == REFUSED]
    assert len(served) + len(refused) == 300
    assert 20 <= len(served) < 300 and refused
    assert all(r.hangup_cause == "NORMAL_CLEARING" for r in served)
    with gevent.Timeout(5):
        while w.admission.active:  # the server side finishes just after the peer saw the close
            gevent.sleep(0.01)
    assert sample(w.metrics, "esl_app_calls_active") == 0


def test_a_pools_port_runs_only_its_routes(worker):
    inbound, outbound = worker("inbound"), worker("outbound")
    assert place(inbound.address, destination="1000").verbs == ["answer", "playback"]
    assert place(inbound.address, destination="2000").executed == [("respond", "404 Not Found")]
    assert place(outbound.address, destination="2000").executed[1] == ("playback", "outbound.wav")
    assert place(outbound.address, destination="1000").executed == [("respond", "404 Not Found")]
    # a route without a pool runs in every pool
    assert place(inbound.address, destination="3000").verbs == ["answer"]
    assert place(outbound.address, destination="3000").verbs == ["answer"]


def test_a_pool_route_wins_over_a_shared_one_and_pools_may_reuse_conditions():
    app = App("x")
    app.route("1000", name="shared")(lambda call: None)
    app.route("1000", pool="inbound", name="in")(lambda call: None)
    app.route("1000", pool="outbound", name="out")(lambda call: None)
    assert app.declared_pools() == {"inbound", "outbound"}
    assert app.table_for("inbound").match("1000").route.name == "in"
    assert app.table_for("outbound").match("1000").route.name == "out"
    assert app.table_for("other").match("1000").route.name == "shared"
    with pytest.raises(RouteError):
        app.route("1000", pool="")(lambda call: None)


def test_verb_latency_and_setup_latency_are_measured(worker):
    w = worker()
    place(w.address, destination="1000")
    assert sample(w.metrics, "esl_app_call_setup_seconds_count") == 1
    assert 0 < sample(w.metrics, "esl_app_call_setup_seconds_sum") < 0.5
    assert sample(w.metrics, "esl_app_verb_seconds_count", verb="playback", outcome="ok") == 1
    text = generate_latest(w.metrics.registry).decode()
    assert 'esl_app_verb_seconds_bucket{le="0.001",outcome="ok",pool="inbound",verb="answer"}' in text


def test_capacity_is_pool_wide_across_workers_sharing_a_scoreboard():
    table = SlotTable.local(4)
    for slot in (0, 1):
        table.claim(slot, pid=100 + slot)
    a, b = Admission(3, slots=table, slot=0), Admission(3, slots=table, slot=1)
    assert [a.admit(), b.admit(), b.admit(), a.admit(), b.admit()] == [None, None, None, "capacity", "capacity"]
    b.release()
    assert a.admit() is None
    table.clear(1)  # the supervisor clears the slot of a dead worker: its calls no longer count
    assert table.active_total() == 2
    table.mark_died(1)  # ... and marks it: its calls may come back resumed
    table.claim(1, pid=8)  # the replacement starts in the same slot: the mark stays
    assert table.latest_death_ms() > 0 and table.get(1, 0) == 8


def test_rate_is_a_sliding_window_over_the_pool():
    now = [100.0]
    table = SlotTable.local(2)
    table.claim(1, pid=7)
    a = Admission(1000, 10, slots=table, slot=0, clock=lambda: now[0])
    b = Admission(1000, 10, slots=table, slot=1, clock=lambda: now[0])
    results = [(a if i % 2 else b).admit() for i in range(12)]
    assert results.count(None) == 10 and results[-1] == "rate"
    now[0] = 101.5  # half of the previous second is still in the window: 5 more
    assert [a.admit() for _ in range(6)].count(None) == 5
    now[0] = 103.0
    assert a.admit() is None


def test_settings_pools_from_environment_and_toml(tmp_path, monkeypatch):
    config = tmp_path / "pools.toml"
    config.write_text("[pools.outbound]\nport = 9085\ncapacity = 50\nworkers = 2\ncpus = [1]\n")
    monkeypatch.setenv("ESL_APP_CONFIG_FILE", str(config))
    monkeypatch.setenv("ESL_APP_POOLS__OUTBOUND__CPS", "25")
    monkeypatch.setenv("ESL_APP_POOLS__INBOUND__WORKERS", "0")
    monkeypatch.setenv("ESL_APP_POOLS__CAMPAIGN__PORT", "9090")
    settings = Settings()
    outbound = settings.pools["outbound"]
    assert (outbound.port, outbound.capacity, outbound.cps, outbound.workers, outbound.cpus) == (9085, 50, 25, 2, [1])
    assert settings.pools["inbound"].port == 8084  # the rest of a pool keeps its defaults
    assert set(settings.served_pools()) == {"outbound", "campaign"}


def test_structured_logs_carry_the_call_uuid_and_pool(worker):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CallContextFilter(worker="w1"))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.flow")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        w = worker()
        record = place(w.address, destination="1000", uuid="5b1c7e4a-0000-4000-8000-000000000001")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue().splitlines()[0])
    assert entry["msg"] == "inbound flow running"
    assert entry["call_uuid"] == record.uuid == "5b1c7e4a-0000-4000-8000-000000000001"
    assert entry["pool"] == "inbound" and entry["worker"] == "w1"


def test_data_decisions_are_counted_by_tier_for_the_hit_ratio():
    from esl_app import metrics
    from esl_app.data import RoutingData

    pool_metrics = metrics.PoolMetrics("inbound")
    metrics.install(pool_metrics)
    try:
        data = RoutingData()  # nothing configured: the embedded data file
        data.start()
        data.decide("1000", "1001")
        data.decide("1000", "1002")
        data.stop()
    finally:
        metrics.install(None)
    value = pool_metrics.registry.get_sample_value(
        "esl_app_data_cache_requests_total", {"pool": "inbound", "tier": "local", "result": "hit"}
    )
    assert value == 2


def test_a_resumed_call_arriving_at_a_full_door_is_admitted_once_a_worker_died(worker):
    """Recovery (issue 12): a call whose worker died comes back with a signed checkpoint. The pool may
    be full of other calls by then: after a death it is admitted (counted here, never refused), while
    a new call still gets the 503, once its connect reply showed no checkpoint."""
    app = App("resume-door", SessionSettings(hangup_wait=0.2))
    release = gevent.event.Event()

    @app.route("4000", name="door", resumable=True)
    def door(call: Call) -> None:
        call.answer()
        call.playback("first.wav")
        call.playback("second.wav")

    @app.route("4001")
    def holder(call: Call) -> None:
        call.answer()
        release.wait(10)  # the pool stays full until the test is done, however slow the machine

    w = worker(app=app, capacity=1)
    codec = app.checkpoint_codec()

    def resumed() -> CallRecord:
        uuid = str(uuid_module.uuid4())
        # answer recorded, first.wav issued (it ran on while no worker listened): only second.wav is left
        value = codec.encode(uuid, Checkpoint(route="door", issued=2, entries=[Entry(app="answer")]))
        return place(w.address, destination="4000", uuid=uuid, variables={VARIABLE: value})

    held = gevent.spawn(place, w.address, destination="4001")
    wait_for(lambda: w.slots.active_total() == 1)
    before = resumed()  # no worker died: a blind refusal at accept, as for any call
    assert before.variables.get("esl_app_refused") == "capacity" and before.commands[0] == "connect"
    w.slots.mark_died(0)  # what the supervisor does when it reaps a worker that held calls
    back = resumed()
    assert back.verbs == ["playback"] and back.executed == [("playback", "second.wav")]
    assert "esl_app_refused" not in back.variables and w.admission.resumed == 1
    new = place(w.address, destination="4000")
    assert new.variables.get("esl_app_refused") == "capacity" and not new.answered
    release.set()
    assert held.get(timeout=5).verbs == ["answer"]
    wait_for(lambda: w.slots.active_total() == 0)  # the resumed call was counted in, then out
