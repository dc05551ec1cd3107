"""The load generator's frames and conversation (fast: no benchmark runs here)."""

from __future__ import annotations

import time

import gevent
import gevent.socket
import pytest
from gevent.server import StreamServer

from esl_app.bench import generator, report, runner
from esl_app.bench.generator import REFUSED, SERVED, LoadSpec, WorkerResult, percentiles, run_load, summarize_outcome
from esl_app.bench.runner import summarize
from esl_app.bench.traffic import APP_UUID, CHANNEL_UUID, CallTemplates
from esl_app.protocol import FrameKind, Parser
from esl_app.testing.simulate import simulate_call

UUID = b"0b6c9c1e-5f0e-4d55-9a55-0123456789ab"
APP = b"5d2f1b0a-1111-4222-8333-444455556666"


@pytest.fixture(scope="module")
def templates() -> CallTemplates:
    return CallTemplates()


def test_connect_reply_is_real_sized_and_parses(templates: CallTemplates) -> None:
    data = templates.render(templates.connect_reply, UUID)
    assert 9_000 < len(data) < 14_000
    frames = Parser().feed(data)
    assert len(frames) == 1 and frames[0].is_connect_reply
    headers = frames[0].headers
    assert headers.get("Unique-ID") == UUID.decode()
    assert headers.get("variable_uuid") == UUID.decode()
    assert sum(1 for name in headers if name.startswith("variable_")) >= 160
    assert len(headers) >= 200
    assert CHANNEL_UUID not in repr(headers.items())
    assert headers.get("variable_switch_r_sdp", "").startswith("v=0\r\n")  # URL-decoded CR LF


def test_events_parse_carry_the_channel_block_and_the_uuids(templates: CallTemplates) -> None:
    start, done = templates.execute("playback", "ivr/welcome.wav", answered=True)
    data = (
        templates.render(start, UUID, APP)
        + templates.render(done, UUID, APP)
        + templates.render(templates.hangup_sequence("NORMAL_CLEARING", True), UUID)
    )
    frames = Parser().feed(data)
    names = [frame.event().name for frame in frames]
    assert names == [
        "CHANNEL_EXECUTE",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP",
        "CHANNEL_UNPARK",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_STATE",
        "CHANNEL_STATE",
        "CHANNEL_HANGUP_COMPLETE",
    ]
    for frame in frames:
        assert frame.kind is FrameKind.EVENT_PLAIN
        event = frame.event()
        assert event.unique_id == UUID.decode()
        assert event.get("Channel-State") and event.get("Caller-Caller-ID-Number") == "1001"
    execute, complete = frames[0].event(), frames[1].event()
    assert execute.get("Application-UUID") == complete.get("Application-UUID") == APP.decode()
    assert complete.get("Application-Response") == "FILE PLAYED"
    assert frames[4].event().get("Application") == "socket"
    assert frames[7].event().headers.get_all("Hangup-Cause") == ["NORMAL_CLEARING", "NORMAL_CLEARING"]
    assert len(frames[0].body) > 9_000  # every execute event carries the variables


def test_an_application_uuid_of_another_length_keeps_content_length_right(templates: CallTemplates) -> None:
    start, _ = templates.execute("answer", "", answered=False)
    frames = Parser().feed(templates.render(start, UUID, b"short-id"))
    assert frames[0].event().get("Application-UUID") == "short-id"
    assert APP_UUID.encode() not in templates.render(start, UUID, APP)


def _peer_sequence(app_flow) -> list[str]:  # type: ignore[no-untyped-def]
    """What the test kit's fake peer sends for a flow, as a list of frame descriptions."""
    from esl_app import App

    app = App("t")
    app.route("1000")(app_flow)
    result = simulate_call(app, trace=True, destination="1000")
    return [line.split("FS -> APP  ", 1)[1].split(" ")[0:2] for line in result.trace if "FS -> APP" in line]


def _serve_generator_call(handler) -> tuple[str, float | None]:  # type: ignore[no-untyped-def]
    """Run one generator call against an esl-app style handler over TCP; return (outcome, setup)."""
    server = StreamServer(("127.0.0.1", 0), handler)
    server.start()
    try:
        spec = LoadSpec(host="127.0.0.1", port=server.address[1], call_timeout=5.0)
        call = generator._Call(spec, CallTemplates(), None)
        outcome = call.run(time.perf_counter())
        return outcome, call.first_execute
    finally:
        server.stop()


def test_generator_plays_the_fake_peers_sequence_against_esl_app() -> None:
    from esl_app import App

    app = App("t")
    seen: list[str] = []

    @app.route("1000")
    def flow(call) -> None:  # type: ignore[no-untyped-def]
        call.answer()
        call.playback("ivr/x.wav")
        call.hangup()
        seen.append(call.destination)

    class Recording:
        """Wraps the server socket to keep what the generator wrote."""

        def __init__(self, sock) -> None:  # type: ignore[no-untyped-def]
            self.sock = sock
            self.parser = Parser()
            self.frames: list = []

        def recv(self, size: int) -> bytes:
            data = self.sock.recv(size)
            self.frames.extend(self.parser.feed(data))
            return data

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.sock, name)

    recorded: list[Recording] = []

    def handler(sock, address) -> None:  # type: ignore[no-untyped-def]
        wrapped = Recording(sock)
        recorded.append(wrapped)
        app.handle(wrapped, address)

    outcome, first_execute = _serve_generator_call(handler)
    assert outcome == SERVED
    assert first_execute is not None
    assert seen == ["1000"]
    got = []
    for frame in recorded[0].frames:
        if frame.is_event:
            got.append(frame.event().name)
        elif frame.is_connect_reply:
            got.append("connect")
        elif frame.kind is FrameKind.DISCONNECT:
            got.append("linger" if frame.is_linger_notice else "final")
        else:
            got.append("reply")
    # the fake peer's order for the same flow (esl_app.testing.peer), CHANNEL_* names only. The handshake's
    # nixevent (after linger) takes back CHANNEL_PARK, _UNPARK, _STATE and _EXECUTE; the park fired on
    # myevents, before nixevent was read, so it still comes
    expected = [
        "connect", "reply", "CHANNEL_PARK", "reply", "reply",
        "reply", "CHANNEL_ANSWER", "CHANNEL_EXECUTE_COMPLETE",
        "reply", "CHANNEL_EXECUTE_COMPLETE",
        "reply", "CHANNEL_HANGUP", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP_COMPLETE", "linger", "reply", "final",
    ]  # fmt: skip
    # exit and its '+OK bye' / final notice may cross the server's close: compare up to the linger notice
    assert got[: len(expected) - 2] == expected[:-2], got
    peer = [words[0] if words[0] != "event" else words[1] for words in _peer_sequence(_demo_flow)]
    peer = ["connect" if w == "connect" else "linger" if w == "linger" else "final" if w == "final" else w
            for w in peer]  # fmt: skip
    assert [w for w in got if w.startswith("CHANNEL_")] == [w for w in peer if w.startswith("CHANNEL_")]


def _demo_flow(call) -> None:  # type: ignore[no-untyped-def]
    call.answer()
    call.playback("ivr/x.wav")
    call.hangup()


def test_a_refusal_is_counted_as_refused_and_a_silent_close_as_an_error() -> None:
    from esl_app.pools.admission import REFUSALS

    def refuse(sock, address) -> None:  # type: ignore[no-untyped-def]
        sock.sendall(REFUSALS["capacity"] + b"exit\n\n")
        while sock.recv(65536):
            pass

    outcome, _ = _serve_generator_call(refuse)
    assert outcome == REFUSED

    def drop(sock, address) -> None:  # type: ignore[no-untyped-def]
        sock.sendall(b"connect\n\n")
        sock.recv(65536)
        sock.close()

    outcome, _ = _serve_generator_call(drop)
    assert outcome == "closed_before_hangup"


def test_run_load_closed_loop_in_process() -> None:
    from esl_app.bench.flow import app

    server = StreamServer(("127.0.0.1", 0), app.handle)
    server.start()
    try:
        result = run_load(LoadSpec(host="127.0.0.1", port=server.address[1], mode="closed", duration=0.3,
                                   concurrency=3, call_timeout=5.0))  # fmt: skip
    finally:
        server.stop()
    assert result.calls > 3
    assert result.outcomes[SERVED] == result.calls
    assert len(result.setup_ms) == result.calls


def test_spec_shares_split_the_load() -> None:
    spec = LoadSpec(host="h", port=1, concurrency=10, rate=90.0, hold_calls=10_001, processes=3)
    shares = [spec.share(i) for i in range(3)]
    assert sum(s.concurrency for s in shares) == 10
    assert sum(s.hold_calls for s in shares) == 10_001
    assert sum(s.rate for s in shares) == pytest.approx(90.0)


def test_percentiles_and_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    p = percentiles(values)
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (51.0, 91.0, 100.0, 100.0)
    result = WorkerResult(calls=10, setup_ms=values, cpu_seconds=0.5, wall_seconds=2.0)
    result.outcomes.update({SERVED: 8, REFUSED: 1, "timeout": 1})
    summary = summarize(result, LoadSpec(host="h", port=1, mode="open", rate=5.0, processes=1, cpus=[1]))
    assert summary["served"] == 8 and summary["refused"] == 1 and summary["errors"] == {"timeout": 1}
    assert summary["calls_per_second"] == 4.0
    assert summary["generator_util"] == 0.25
    assert summarize_outcome({SERVED: 2, "reset": 1}) == "2 served, 0 refused, errors {'reset': 1}"


def test_report_renders_tables_targets_and_a_chart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def tail(share: float, rate: float, p99: float) -> dict:
        values = [p99 / 4] * 98 + [p99, p99 * 2]
        return {"share": share, "offered_rate": share * rate, "calls_per_second": share * rate, "errors": {},
                "setup_ms": {"p50": p99 / 4, "p90": p99 / 2, "p99": p99, "max": 2 * p99}, "setup_samples": 100,
                "setup_histogram": runner.latency_histogram(values),
                "gc": {"gen0": {"passes": 3, "cpu_ms_max": 0.2}}}  # fmt: skip

    def server(rate: float, p99: float, kb: float, tails: list | None = None) -> dict:
        point = {"offered_rate": 0.7 * rate, "calls_per_second": 0.7 * rate, "errors": {}, "at_70_percent": True,
                 "setup_ms": {"p50": p99 / 2, "p90": p99, "p99": p99, "max": p99}}  # fmt: skip
        return {
            "label": "x",
            "capacity": {"calls_per_second": rate, "server_cpu_ms_per_call": 1.0, "concurrency": 60},
            "sweep": [point],
            "tail": tails or [],
            "hold": {"kb_per_call": kb, "held": 10_000, "rss_before_kb": 100_000, "rss_held_kb": 350_000,
                     "rss_after_kb": 110_000},
        }

    results = {
        "machine": {"cpu": "c", "cpus": 2, "kernel": "k", "python": "3.11", "versions": {}, "date": "d"},
        "pinning": {"server": [0], "generator": [1], "generator_processes": 3},
        "servers": {
            "esl-app": server(1900, 1.5, 25.0, [tail(0.5, 1900, 1.5), tail(0.7, 1900, 4.0)]),
            "gevent-minimal": server(450, 2.0, 115.0, [tail(0.5, 450, 3.0)]),
        },
    }
    text = report.render_markdown(results, "chart.png")
    assert "| x | 1900 | 4.22 |" in text  # the summary row: label, calls/s, ratio to minimal gevent
    assert "| esl-app | 70% | 1330 | 1330 | 100 | 1.00 | 2.00 | 4.00 | 8.0 | - | 3/0/0, 0.20 |" in text
    verdicts = {name: ok for name, _, ok in report.targets(results)}
    assert verdicts["setup p99 ≤ 2 ms at 50% of own max rate"] and verdicts["setup p99 ≤ 5 ms at 70% of own max rate"]
    assert all(verdicts.values())
    results["servers"]["esl-app"]["tail"][0] = tail(0.5, 1900, 2.5)
    assert {name: ok for name, _, ok in report.targets(results)}["setup p99 ≤ 2 ms at 50% of own max rate"] is False
    page = report.write_docs(results, tmp_path)
    assert page.exists() and (tmp_path / "benchmarks-setup-p99.png").stat().st_size > 1000
    # the static path's section (esl-app bench --static-timeline --write-docs) survives a regeneration
    timeline = {"calls": 3, "calls_in_timeline": 3, "switch_decision_ms": {"p50": 1.0, "p99": 2.0}, "switch_errors": {},
                "steps": [{"who": "esl-app -> switch", "what": "connect + myevents + linger 10", "bytes": 30,
                           "at_us": 20.0}]}  # fmt: skip
    section = report.static_path_section(timeline)
    page.write_text(report.replace_section(page.read_text(), report.STATIC_PATH_TITLE, section))
    assert report.section(page.read_text(), report.STATIC_PATH_TITLE) == section
    assert page.read_text().index(report.STATIC_PATH_TITLE) < page.read_text().index("## Memory")
    report.write_docs(results, tmp_path)
    assert report.section(page.read_text(), report.STATIC_PATH_TITLE) == section
    assert "| 1 | esl-app -> switch | connect + myevents + linger 10 | 30 | 20 | 20 |" in section


def test_latency_histogram_counts_every_value_in_log_bins() -> None:
    histogram = runner.latency_histogram([0.01, 0.5, 0.5, 1.0, 20_000.0])
    counts = histogram["counts"]
    assert sum(counts) == 5 and counts[0] == 1 and counts[-1] == 1  # out of range: the end bins
    edges = histogram["edges_ms"]
    assert counts[next(i for i in range(len(counts)) if edges[i] <= 0.5 < edges[i + 1])] == 2


def test_the_socket_connect_error_is_a_kind() -> None:
    sock = gevent.socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    call = generator._Call(LoadSpec(host="127.0.0.1", port=port, call_timeout=2.0), CallTemplates(), None)
    assert call.run(time.perf_counter()) == "connect_refused"
