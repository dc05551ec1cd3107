"""The pool door is exact across worker processes (issue 16 part 3).

Real processes admit against one memory-mapped scoreboard at the same time. A checker independent of
the door counts the calls held at once: a process counts a call in only after ``admit()`` said yes
and counts it out before ``release()``, so the checker's count can never exceed what the door let
in, and any moment with more than ``capacity`` holders is a call the door should have refused.
"""

from __future__ import annotations

import multiprocessing
import os
import time

from esl_app.pools.admission import Admission
from esl_app.pools.slots import SlotTable

CTX = multiprocessing.get_context("fork")  # the children only use the scoreboard: no need to import afresh


def _hammer(path: str, slot: int, capacity: int, seconds: float, start, holders, worst, out) -> None:
    table = SlotTable.open(path)
    table.claim(slot, os.getpid())
    door = Admission(capacity, slots=table, slot=slot)
    admitted = refused = 0
    start.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if door.admit() is not None:
            refused += 1
            continue
        admitted += 1
        with holders.get_lock():
            holders.value += 1
            if holders.value > worst.value:
                worst.value = holders.value
        for _ in range(20):  # hold the call a moment, so an overlapping admission is seen
            pass
        with holders.get_lock():
            holders.value -= 1
        door.release()
    out.put((admitted, refused))


def _fill(path: str, slot: int, capacity: int, rounds: int, go, filled, emptied, out) -> None:
    """Each round: admit as many as the door allows; once every process is done, release them all."""
    table = SlotTable.open(path)
    table.claim(slot, os.getpid())
    door = Admission(capacity, slots=table, slot=slot)
    counts = []
    for round_no in range(rounds):
        while go.value <= round_no:  # spin: every process sets off within microseconds of the others
            pass
        got = 0
        while door.admit() is None:
            got += 1
        counts.append(got)
        filled.wait()
        for _ in range(got):
            door.release()
        emptied.wait()
    out.put(counts)


def _run(processes: list) -> None:
    for p in processes:
        p.start()


def test_racing_worker_processes_never_admit_more_than_capacity(tmp_path):
    path = str(tmp_path / "pool.slots")
    SlotTable.create(path, 8).close()
    capacity, seconds = 2, 1.5
    start = CTX.Event()
    holders, worst = CTX.Value("i", 0), CTX.Value("i", 0)
    out = CTX.Queue()
    procs = [
        CTX.Process(target=_hammer, args=(path, slot, capacity, seconds, start, holders, worst, out))
        for slot in range(3)
    ]
    _run(procs)
    time.sleep(0.3)  # let the interpreters start; the race begins when all of them wait
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    admitted = sum(a for a, _ in results)
    refused = sum(r for _, r in results)
    print(f"racing: {admitted} admitted, {refused} refused, at most {worst.value} held at once (capacity {capacity})")
    assert admitted > 100 and refused > 100, "the processes must really have raced at the door"
    assert worst.value <= capacity
    table = SlotTable.open(path)
    assert table.active_total() == 0  # every admission was released: the counts stayed consistent
    table.close()


def test_filling_the_pool_from_racing_processes_admits_exactly_capacity(tmp_path):
    path = str(tmp_path / "pool.slots")
    SlotTable.create(path, 8).close()
    capacity, rounds, workers = 5, 200, 3
    go = CTX.Value("i", 0, lock=False)
    filled, emptied = CTX.Barrier(workers + 1), CTX.Barrier(workers + 1)
    out = CTX.Queue()
    procs = [
        CTX.Process(target=_fill, args=(path, slot, capacity, rounds, go, filled, emptied, out))
        for slot in range(workers)
    ]
    _run(procs)
    time.sleep(0.3)
    for round_no in range(rounds):
        go.value = round_no + 1  # every process starts filling at the same instant
        filled.wait(timeout=60)
        emptied.wait(timeout=60)
    per_process = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    totals = [sum(counts) for counts in zip(*per_process, strict=True)]
    print(f"filling: per-round totals {sorted(set(totals))} (capacity {capacity}, {rounds} rounds)")
    assert totals == [capacity] * rounds
