"""What the pool door costs per admission (issue 16 part 3), in microseconds, median of batches.

python bench/door.py                 # one process, then two processes admitting at the same time
python bench/door.py --batches 41    # more batches, steadier medians

Rows:
* ``admit+release``: ``Admission.admit()`` then ``release()`` on a pool's memory-mapped scoreboard
  (8 slots, as a 2-worker pool has), capacity and calls-per-second both checked;
* ``door (admitted)``: ``PoolWorker._door`` for an admitted call: admission, metrics, the socket wrapper;
* ``allow-list check``: ``PeerFilter.allows`` for a peer on a 3-entry list (as seen before, the common
  case: a handful of switches), and for a new address each time (the worst case, a scan);
* ``refused call, blind`` / ``refused call, deferred``: one refused call over TCP, from the fake
  FreeSWITCH's TCP connect to the refusal's first application running (client and server in this
  process, static socket): the usual one-write refusal, and the one held until the connect reply
  while a hand-off is in flight (``--refusals N``);
* ``admit+release, 2 processes``: two processes hammering the same scoreboard at once (the contended
  case the exact door pays for; each process's own median).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time

from esl_app.pools.admission import Admission
from esl_app.pools.slots import SlotTable, now_ms

SLOTS = 8
BATCH = 20_000


def _batches(step, batches: int, batch: int = BATCH) -> list[float]:
    """Per-call microseconds of each batch."""
    results = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(batch):
            step()
        results.append((time.perf_counter() - started) / batch * 1e6)
    return results


def _admission(path: str, slot: int) -> Admission:
    table = SlotTable.open(path)
    table.claim(slot, os.getpid())
    return Admission(1_000_000, 1e12, slots=table, slot=slot)


def admit_release(path: str, slot: int, batches: int) -> list[float]:
    door = _admission(path, slot)

    def step() -> None:
        door.admit()
        door.release()

    return _batches(step, batches)


def door_admitted(path: str, batches: int) -> list[float]:
    from esl_app import App
    from esl_app.metrics import PoolMetrics
    from esl_app.pools.worker import PoolWorker
    from esl_app.settings import PoolSettings

    table = SlotTable.open(path)
    table.claim(0, os.getpid())
    pool = PoolSettings(capacity=1_000_000, cps=1e12)
    worker = PoolWorker(App(), "inbound", pool, slots=table, metrics=PoolMetrics("inbound"))
    a, b = socket.socketpair()
    peer = ("127.0.0.1", 40000)
    door, admission, active = worker._door, worker.admission, worker.metrics.active

    def step() -> None:
        door(a, peer)
        admission.release()
        active.dec()

    try:
        return _batches(step, batches)
    finally:
        a.close()
        b.close()


def peer_check(batches: int) -> tuple[list[float], list[float]]:
    from esl_app.transport.peers import PeerFilter

    peers = PeerFilter(["10.0.0.0/24", "10.0.1.17", "fd00::/8"])
    seen = _batches(lambda: peers.allows("10.0.1.17"), batches)
    counter = iter(range(10**9))
    fresh = _batches(lambda: peers.allows(f"10.{next(counter) % 250}.{next(counter) % 250}.9"), batches, 5_000)
    return seen, fresh


def refusals(calls: int) -> tuple[list[float], list[float]]:
    """Per refused call (ms): blind, then deferred because a hand-off is in flight."""
    from esl_app import App
    from esl_app.metrics import PoolMetrics
    from esl_app.pools.worker import PoolWorker
    from esl_app.settings import PoolSettings
    from esl_app.testing.peer import CallScript, connect_tcp

    worker = PoolWorker(App(), "inbound", PoolSettings(port=0, cps=1), metrics=PoolMetrics("inbound"))
    worker.admission.clock = lambda: 100.5
    worker.start()
    try:
        connect_tcp(worker.address, CallScript(destination="1")).run()  # fills the rate: every next call is refused
        results = []
        for deferred in (False, True):
            worker.slots.set(0, 8, now_ms() if deferred else 0)  # HANDOFF_MS: a hand-off in flight, or none
            times = []
            for _ in range(calls):
                record = connect_tcp(worker.address, CallScript(destination="1", mode="static")).run()
                assert record.variables.get("esl_app_refused") == "rate", record.executed
                assert record.first_execute_at is not None
                times.append((record.first_execute_at - record.started_at) * 1000)
            results.append(times)
        return results[0], results[1]
    finally:
        worker.drain(1)


def _contender(path: str, slot: int, batches: int, start, out) -> None:
    start.wait()
    out.put(admit_release(path, slot, batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=21)
    parser.add_argument("--refusals", type=int, default=300, help="refused calls measured each way (0: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        path = os.path.join(tmp, "pool.slots")
        SlotTable.create(path, SLOTS).close()
        rows = [
            ("admit+release", admit_release(path, 0, args.batches)),
            ("door (admitted)", door_admitted(path, args.batches)),
        ]
        try:  # (absent before the allow-list: the script also measures older trees, for before/after)
            seen, fresh = peer_check(args.batches)
            rows += [("allow-list check, known peer", seen), ("allow-list check, new address each time", fresh)]
        except ImportError:
            pass
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_contender, args=(path, slot, args.batches, start, out)) for slot in (1, 2)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        start.set()
        both = [out.get(timeout=300) for _ in procs]
        for p in procs:
            p.join()
        rows += [(f"admit+release, 2 processes (#{i + 1})", r) for i, r in enumerate(both)]
    print(f"{'':40} {'median us':>10} {'min us':>8} {'max us':>8}   ({args.batches} batches of {BATCH})")
    for name, values in rows:
        print(f"{name:40} {statistics.median(values):10.3f} {min(values):8.3f} {max(values):8.3f}")
    if args.refusals:
        blind, deferred = refusals(args.refusals)
        print(f"{'':40} {'median ms':>10} {'p90 ms':>8}   ({args.refusals} calls each: connect -> refusal runs)")
        for name, values in (("refused call, blind", blind), ("refused call, deferred (hand-off)", deferred)):
            p90 = statistics.quantiles(values, n=10)[-1]
            print(f"{name:40} {statistics.median(values):10.3f} {p90:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
