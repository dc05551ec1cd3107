"""Decision and completion latency under FreeSWITCH's timing model (issue 6, spec section 9).

The fake FreeSWITCH of the test kit plays each call with ``TimingModel`` on: an async socket runs
queued commands on a 20 ms park tick and an idle listener holds events for its 20 ms poll unless the
client writes. Measured per call, on the switch's side and its clock:

- decision: TCP connected -> the first routed application starts (CHANNEL_EXECUTE raised);
- completion: a CHANNEL_EXECUTE_COMPLETE raised -> the application's next command arrives (delivery
  to the flow plus the flow's reaction), for every verb that has a next command.

The model's floor for the decision is 0 on a static socket (the command runs when it is read) and
the wait for the next park tick on an async one. Run as a module, it prints one JSON object:
``python -m esl_app.bench.decision --port P --mode static --calls 200``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from typing import Any

import gevent
import gevent.socket
from gevent.pool import Pool

from ..testing.peer import CallScript, FakeFreeSWITCH, TimingModel


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": statistics.median(ordered), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


def measure(
    address: tuple[str, int],
    *,
    mode: str = "async",
    calls: int = 200,
    concurrency: int = 4,
    timeout: float = 20.0,
    destination: str = "1000",
) -> dict[str, Any]:
    timing = TimingModel()
    script = CallScript(destination=destination, mode=mode)  # type: ignore[arg-type]
    decisions: list[float] = []
    gaps: list[float] = []
    wake_bytes: list[int] = []
    errors: dict[str, int] = {}

    def one() -> None:
        try:
            sock = gevent.socket.create_connection(address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = FakeFreeSWITCH(script, sock, timing=timing, safety_timeout=timeout)
            with gevent.Timeout(timeout + 5):
                record = peer.run()
            if record.first_execute_at is None:
                errors["no execute"] = errors.get("no execute", 0) + 1
                return
            decisions.append((record.first_execute_at - record.started_at) * 1000)
            gaps.extend(g * 1000 for g in record.completion_gaps)
            wake_bytes.append(peer.wake_bytes)
        except BaseException as exc:  # counted: the run goes on
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    pool = Pool(concurrency)
    started = time.perf_counter()
    for _ in range(calls):
        pool.spawn(one)
    pool.join()
    return {
        "mode": mode,
        "calls": calls,
        "seconds": round(time.perf_counter() - started, 3),
        "decision_ms": {k: round(v, 3) for k, v in _percentiles(decisions).items()},
        "completion_ms": {k: round(v, 3) for k, v in _percentiles(gaps).items()},
        "completions": len(gaps),
        "wake_bytes_per_call": round(statistics.mean(wake_bytes), 1) if wake_bytes else 0.0,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["async", "static"], default="async")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    result = measure((args.host, args.port), mode=args.mode, calls=args.calls, concurrency=args.concurrency)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
