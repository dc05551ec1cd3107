"""The garbage collector on a server process: start-up objects frozen, passes measured."""

from __future__ import annotations

import gc

from esl_app.transport.collector import PauseMeter, settle


def test_settle_freezes_start_up_objects():
    threshold = gc.get_threshold()
    try:
        frozen = settle()
        assert frozen == gc.get_freeze_count() > 1000  # this process's modules at least
        assert gc.get_threshold() == threshold
        # a full pass no longer walks them
        assert len(gc.get_objects(generation=2)) < frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_pause_meter_records_each_pass_by_generation():
    meter = PauseMeter().start()
    gc.disable()  # only the passes asked for here
    try:
        gc.collect(0)
        gc.collect()
    finally:
        gc.enable()
        meter.stop()
    assert [generation for generation, _, _ in meter.passes] == [0, 2]
    summary = meter.summary()
    assert summary["gen0"]["passes"] == 1 and summary["gen2"]["passes"] == 1
    assert summary["gen2"]["cpu_ms_max"] >= 0
    gc.collect(1)
    assert len(meter.passes) == 2  # stopped: no longer recording
