"""The LF waker's cadence: fast at first, backing off to ``max_interval``, silent after ``burst``."""

from __future__ import annotations

import itertools

import gevent

from esl_app.transport.waker import Waker, WakerSettings


class _Connection:
    def __init__(self) -> None:
        self.writes: list[float] = []

    def wake(self) -> bool:
        self.writes.append(gevent.get_hub().loop.now())
        return True


def _run(settings: WakerSettings, seconds: float) -> list[float]:
    connection = _Connection()
    waker = Waker(connection, settings)
    loop = gevent.get_hub().loop
    loop.update_now()
    with waker:
        started = loop.now()
        gevent.sleep(seconds)
    assert waker.bytes_written == len(connection.writes)
    return [t - started for t in connection.writes]


def test_the_interval_doubles_up_to_its_cap_and_the_burst_ends_the_writes() -> None:
    writes = _run(WakerSettings(interval=0.001, max_interval=0.004, burst=0.060), 0.12)
    # 1, 3, 7, 11, ... 59 ms: 16 at most (a late timer only makes fewer), none after the burst
    assert 2 <= len(writes) <= 16  # a starved process may see only a few before the burst ends
    assert writes[-1] < 0.060 + 0.004 + 0.02  # slack for a loaded machine's late timer
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert gaps[0] >= 0.0019  # 2 ms after the first (a new timer: never sooner)
    if len(gaps) > 1:
        assert gaps[1] >= 0.0039  # then 4 ms
        # at the cap one repeating timer runs: a late tick is followed by a shorter gap, the mean holds
        assert sum(gaps[1:]) / len(gaps[1:]) >= 0.0035


def test_a_fixed_interval_when_the_cap_is_the_interval() -> None:
    fixed = _run(WakerSettings(interval=0.002, max_interval=0.002, burst=0.030), 0.05)
    assert 2 <= len(fixed) <= 15  # every 2 ms for 30 ms (a late timer only makes fewer)
    assert (fixed[-1] - fixed[0]) / (len(fixed) - 1) >= 0.0018


def test_slow_writes_after_the_burst_when_asked_for() -> None:
    writes = _run(WakerSettings(interval=0.001, max_interval=0.002, burst=0.010, slow_interval=0.015), 0.06)
    late = [t for t in writes if t > 0.012]
    assert late and len(late) <= 4  # ~every 15 ms after the burst (it raised before: no timer.repeat)


def test_a_long_running_application_backs_off_and_an_instant_one_keeps_the_fast_cadence() -> None:
    settings = WakerSettings()  # defaults: 1 ms fixed, 4 ms cap for long-running applications
    connection = _Connection()
    waker = Waker(connection, settings)
    with waker.around(long=True):
        assert waker._cap == settings.long_max_interval == 0.004
        with waker.around(long=False):  # a second wait joins the running timer: its cadence stays
            assert waker._cap == 0.004
        gevent.sleep(0.08)
    assert len(connection.writes) <= 16
    with waker.around(long=False):
        assert waker._cap == settings.max_interval == 0.001


def test_a_playback_wait_writes_at_most_16_lfs_in_the_burst() -> None:
    """Through the session: ``execute("playback")`` on an async socket backs the waker off."""
    from test_session import start_session

    from esl_app.protocol import switch

    session, peer = start_session()
    running = gevent.spawn(session.execute, "playback", "ivr/long.wav", timeout=2)
    command = peer.command()
    peer.write(switch.reply("+OK"))
    gevent.sleep(0.1)  # the burst (60 ms) is over: no completion yet
    assert 1 <= session.waker.bytes_written <= 16
    app_uuid = command.headers["event-uuid"]
    peer.write(
        switch.event_plain(
            [("Event-Name", "CHANNEL_EXECUTE_COMPLETE"), ("Unique-ID", session.uuid), ("Application", "playback"),
             ("Application-UUID", app_uuid), ("Application-Response", "FILE PLAYED")]
        )
    )  # fmt: skip
    assert running.get(timeout=2).get("Application-Response") == "FILE PLAYED"


def test_a_stale_loop_clock_does_not_cut_the_burst_short() -> None:
    """A flow that computed for a while without yielding leaves the loop's clock behind: the burst
    must still be measured from when the wait began (it once ended at the first tick: no writes)."""
    import time

    connection = _Connection()
    waker = Waker(connection, WakerSettings(interval=0.001, max_interval=0.001, burst=0.030))
    gevent.get_hub().loop.update_now()
    time.sleep(0.1)  # blocks the loop: its cached clock is now 100 ms behind
    with waker:
        gevent.sleep(0.05)
    assert len(connection.writes) >= 2
