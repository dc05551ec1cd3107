"""The demo app on the real data path: its early exits come from Postgres through Redis and the
process cache; a row changed in Postgres changes routing on a running server; cutting Redis and
Postgres mid-run drops no call."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import gevent
import pytest
from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN, REDIS_URL, Admin, TcpProxy, wait_until

import callflows.demo as demo
from esl_app.testing.simulate import simulate_tcp_call
from esl_app.transport import OutboundServer

LONDON = ZoneInfo("Europe/London")
OPEN = datetime(2026, 11, 25, 10, 30, tzinfo=LONDON)
NIGHT = datetime(2026, 11, 25, 21, 30, tzinfo=LONDON)
SIT = ("playback", "tone_stream://%(274,0,913.8);%(274,0,1370.6);%(380,0,1776.7)")
CLOSED = ("playback", "ivr/ivr-office_hours.wav")


@pytest.fixture
def on_postgres(make_data, monkeypatch):
    """The demo app with its data from this test's Postgres schema and Redis prefix."""
    data = make_data()
    monkeypatch.setattr(demo, "data", data)
    monkeypatch.setattr(demo, "clock", lambda: OPEN)
    return data


@pytest.fixture
def server():
    srv = OutboundServer(demo.app.handle, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop(deadline=5)


def test_the_demos_early_exits_come_from_postgres_through_the_caches(on_postgres, make_data, esl_call, monkeypatch):
    data = on_postgres
    blocked = esl_call(demo.app, "1000", caller_id_number="666")
    assert blocked.executed == [("respond", "403 Forbidden")] and blocked.hangup_cause == "CALL_REJECTED"
    unknown = esl_call(demo.app, "4242")
    assert unknown.executed == [("pre_answer", ""), SIT] and unknown.hangup_cause == "UNALLOCATED_NUMBER"
    monkeypatch.setattr(demo, "clock", lambda: NIGHT)
    closed = esl_call(demo.app, "1000", dtmf="1")
    assert closed.executed == [("answer", ""), CLOSED]
    monkeypatch.setattr(demo, "clock", lambda: OPEN)
    other_process = make_data()
    held = other_process.decide("3000", "1", call_id="elsewhere", at=OPEN)  # the pilot's only slot
    over = esl_call(demo.app, "3000")
    assert over.executed == [("respond", "503 tenant pilot over the concurrent-call limit (1/1)")]
    assert over.hangup_cause == "NORMAL_TEMPORARY_FAILURE" and not over.answered
    other_process.release(held)
    routed = esl_call(demo.app, "3000")
    assert routed.executed[-1] == ("bridge", "user/3001")  # the number's target, from Postgres
    assert data.redis.active("pilot") == 0  # the call's slot was given back at hangup
    ext = esl_call(demo.app, "1234")
    assert ext.executed[-1] == ("bridge", "user/1234")
    assert data.stats()["pg_hot_queries"] == 1  # only 4242, the one number never seen before
    assert data.pg.listening and data.stats()["stale"] == 0


def test_a_row_changed_in_postgres_reroutes_a_running_server(on_postgres, server, admin: Admin):
    before = simulate_tcp_call(server.address, destination="1234")
    assert before.executed[-1] == ("bridge", "user/1234")
    started = time.monotonic()
    admin.execute("UPDATE numbers SET target = 'sofia/gateway/carrier/+442079460000' WHERE did = '1234'")
    wait_until(lambda: on_postgres.number("1234").target.startswith("sofia/"), timeout=1, step=0.0005)
    propagated_ms = (time.monotonic() - started) * 1000
    after = simulate_tcp_call(server.address, destination="1234")
    assert after.executed[-1] == ("bridge", "sofia/gateway/carrier/+442079460000")
    admin.execute("INSERT INTO blocklist (tenant_id, kind, pattern) VALUES ('demo', 'exact', '1001')")
    wait_until(lambda: on_postgres.is_blocked("1001", "demo"), timeout=1)
    refused = simulate_tcp_call(server.address, destination="1234")
    assert refused.executed == [("respond", "403 Forbidden")]
    assert propagated_ms < 100, propagated_ms


def test_cutting_redis_and_postgres_mid_run_drops_no_call(make_data, monkeypatch, server):
    pg_proxy = TcpProxy("127.0.0.1", int(PG_DSN.rsplit(":", 1)[1].split("/")[0]))
    redis_proxy = TcpProxy("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    try:
        data = make_data(
            postgres_dsn=PG_DSN.replace(PG_DSN.rsplit("@", 1)[1].split("/")[0], f"127.0.0.1:{pg_proxy.port}"),
            redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0", retry_interval=0.2,
        )  # fmt: skip
        monkeypatch.setattr(demo, "data", data)
        monkeypatch.setattr(demo, "clock", lambda: OPEN)
        results: list = []
        stop = gevent.event.Event()

        def caller(n: int) -> None:
            i = 0
            while not stop.is_set():
                destination, caller_id = [("1234", "1001"), ("1000", "666"), (str(1100 + n * 100 + i % 90), "1001"),
                                          ("4242", "1001")][i % 4]  # fmt: skip
                results.append((destination, caller_id, simulate_tcp_call(server.address, destination=destination,
                                                                            caller_id_number=caller_id)))  # fmt: skip
                i += 1

        callers = [gevent.spawn(caller, n) for n in range(4)]
        gevent.sleep(0.3)
        redis_proxy.cut()  # Redis dies mid-run
        gevent.sleep(0.3)
        pg_proxy.cut()  # then Postgres
        gevent.sleep(0.4)
        redis_proxy.restore()
        pg_proxy.restore()
        wait_until(lambda: data.listening and data.epoch >= 2, timeout=5)
        gevent.sleep(0.2)
        stop.set()
        gevent.joinall(callers, timeout=30, raise_error=True)
    finally:
        pg_proxy.close()
        redis_proxy.close()
    assert len(results) >= 40
    for destination, caller_id, result in results:
        assert result.record.protocol_errors == []
        if caller_id == "666":
            assert result.executed == [("respond", "403 Forbidden")]
        elif destination == "4242":
            # unknown: from the negative cache, or 503 while nothing could be asked
            assert result.executed in ([("pre_answer", ""), SIT], [("respond", "503 routing data unavailable: "
                                       "no number '4242' from any tier within the budget")])  # fmt: skip
        else:
            assert result.executed[-1][0] == "bridge", result.executed  # cached or stale data kept routing
            assert result.hangup_cause == "NORMAL_CLEARING"
    stats = data.stats()
    assert stats["redis_errors"] + data.redis.errors > 0  # Redis really was cut
    assert data.epoch >= 2  # and the Postgres listener really reconnected
