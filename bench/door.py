"""What the pool door costs per admission (issue 16 part 3), in microseconds, median of batches.

python bench/door.py                 # one process, then two processes admitting at the same time
python bench/door.py --batches 41    # more batches, steadier medians

Rows:
* ``admit+release``: ``Admission.admit()`` then ``release()`` on a pool's memory-mapped scoreboard
  (8 slots, as a 2-worker pool has), capacity and calls-per-second both checked;
* ``door (admitted)``: ``PoolWorker._door`` for an admitted call: admission, metrics, the socket wrapper;
* ``allow-list check``: ``PeerFilter.allows`` for a peer on a 3-entry list (as seen before, the common
  case: a handful of switches), and for a new address each time (the worst case, a scan);
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
from esl_app.pools.slots import SlotTable

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


def _contender(path: str, slot: int, batches: int, start, out) -> None:
    start.wait()
    out.put(admit_release(path, slot, batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=21)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        path = os.path.join(tmp, "pool.slots")
        SlotTable.create(path, SLOTS).close()
        rows = [
            ("admit+release", admit_release(path, 0, args.batches)),
            ("door (admitted)", door_admitted(path, args.batches)),
        ]
        seen, fresh = peer_check(args.batches)
        rows += [("allow-list check, known peer", seen), ("allow-list check, new address each time", fresh)]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
