"""Returning freed heap after a burst of calls (glibc malloc_trim), and what a held call keeps."""

from __future__ import annotations

import gc
import time
import tracemalloc

import gevent

from esl_app import App, Call
from esl_app.protocol import Parser
from esl_app.protocol import headers as headers_module
from esl_app.session import SessionSettings
from esl_app.transport import memory
from esl_app.transport.memory import IdleTrimmer


def test_release_memory_trims_on_glibc():
    assert memory.release_memory() is True  # these machines run glibc


def test_trims_once_after_active_calls_fall_below_a_fraction_of_the_peak(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    trimmer = IdleTrimmer(fraction=0.1, minimum=100, delay=0.01)
    for active in range(0, 501):
        trimmer.update(active)
    for active in range(500, 60, -1):
        trimmer.update(active)
    gevent.sleep(0.05)
    assert calls == []  # still above 10% of the peak
    for active in range(60, -1, -1):
        trimmer.update(active)
    gevent.sleep(0.05)
    assert calls == [1]
    assert trimmer.peak == 50  # the count when the drop was seen: the next burst is measured from there


def test_small_peaks_never_trim(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    trimmer = IdleTrimmer(minimum=100, delay=0.01)
    for active in [*range(50), *range(50, -1, -1)]:
        trimmer.update(active)
    gevent.sleep(0.05)
    assert calls == []


# -- what a held call keeps ------------------------------------------------------------------------


def test_packed_connect_reply_reads_the_same_and_is_a_fraction_of_its_size():
    from esl_app.bench.traffic import CallTemplates

    templates = CallTemplates()  # a real SIP call's ~11 kB connect reply (258 URL-encoded headers)
    data = templates.render(templates.connect_reply, b"5a1e0000-0000-4000-8000-00000000000a")
    headers, twin = Parser().feed(data)[0].headers, Parser().feed(data)[0].headers
    assert headers.get("Unique-ID") == "5a1e0000-0000-4000-8000-00000000000a"  # read before: stays cached
    raw_size = len(headers._raw or b"")
    assert headers.pack() and headers.packed and not headers.pack()
    assert len(headers._packed[0]) < raw_size / 4
    assert headers.get("Unique-ID") == "5a1e0000-0000-4000-8000-00000000000a"
    assert headers.packed  # a cached value does not inflate the block
    assert headers.get("Caller-Caller-ID-Name") == twin.get("Caller-Caller-ID-Name") is not None
    assert not headers.packed  # a new name did: kept inflated until the next pack
    assert headers.pack()
    assert headers.get("variable_no_such_variable") is None
    assert headers.pack()
    assert headers.items() == twin.items()  # a full parse of a packed block: every pair, in order
    assert not headers.pack()  # parsed headers have no raw block left to pack


def test_a_call_held_in_a_playback_packs_its_connect_reply_and_still_reads_it(esl_call):
    app = App("held", SessionSettings(pack_after=0.05))
    seen: dict[str, object] = {}

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        seen["before"] = call.data.packed
        call.playback("ivr/welcome.wav")  # plays 0.3 s: longer than pack_after
        seen["held"] = call.data.packed
        seen["caller"] = call.caller_id_number
        seen["variable"] = call.variable("colour")

    result = esl_call(app, "1000", app_seconds={"playback": 0.3}, variables={"colour": "blue"},
                      caller_id_number="5551234")  # fmt: skip
    assert result.verbs == ["answer", "playback"]
    assert seen == {"before": False, "held": True, "caller": "5551234", "variable": "blue"}


def test_a_short_wait_packs_nothing(esl_call):
    app = App("short", SessionSettings(pack_after=5.0))
    seen: list[bool] = []

    @app.route("1000")
    def flow(call: Call) -> None:
        call.playback("ivr/welcome.wav")
        seen.append(call.data.packed)

    esl_call(app, "1000", app_seconds={"playback": 0.05})
    assert seen == [False]


def test_python_heap_per_held_call_stays_small(monkeypatch):
    """Regression bound on what one call held in a playback keeps on the Python heap (tracemalloc:
    bytes, not RSS, so a loaded machine does not change it), the benchmark's flow over real TCP.
    Measured ~13.5 kB; it was ~23.5 kB before the connect reply was packed."""
    from gevent.event import Event as Flag

    from esl_app.bench import generator
    from esl_app.bench.traffic import CallTemplates
    from esl_app.transport import OutboundServer

    calls = 30
    app = App("held", SessionSettings(pack_after=0.05))
    # the packing dictionary is the first connect reply a process packs: as in a fresh server, let it
    # be one of this flow's calls, not whatever an earlier test of the suite packed
    monkeypatch.setattr(headers_module, "_zdict", None)

    @app.route("1000")
    def flow(call: Call) -> None:
        call.answer()
        call.playback("ivr/welcome.wav")
        call.hangup()

    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    templates = CallTemplates()
    spec = generator.LoadSpec(host="127.0.0.1", port=server.address[1], mode="hold", call_timeout=30)
    try:
        assert generator._Call(spec, templates, None).run(time.perf_counter()) == generator.SERVED  # warm
        release = Flag()
        held_before = generator._HELD[0]
        gc.collect()
        tracemalloc.start(4)
        try:
            before = tracemalloc.take_snapshot()
            greenlets = [gevent.spawn(generator._Call(spec, templates, release).run, time.perf_counter())
                         for _ in range(calls)]  # fmt: skip
            with gevent.Timeout(20):
                while generator._HELD[0] - held_before < calls:
                    gevent.sleep(0.01)
                gevent.sleep(0.3)  # every call waits longer than pack_after
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        release.set()
        assert [g.get(timeout=20) for g in greenlets] == [generator.SERVED] * calls
    finally:
        server.stop(deadline=1)
    # the switch's side runs in this process too: leave out what the generator allocated
    keep = [
        tracemalloc.Filter(False, generator.__file__, all_frames=True),
        tracemalloc.Filter(False, tracemalloc.__file__),
    ]
    grown = sum(stat.size_diff for stat in after.filter_traces(keep).compare_to(before.filter_traces(keep), "filename"))
    assert grown / calls < 17_000, f"{grown / calls:.0f} bytes per held call"
