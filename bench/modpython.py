"""What a call costs the mod_python3 transport before its first application, against the socket.

python bench/modpython.py               # 400 calls each way, medians and p99 in milliseconds
python bench/modpython.py --calls 2000
(then where the in-process time goes: module re-import, hub hand-off, the decision, medians in µs)

Both run the demo's main line (``callflows.demo:app``, destination 1000, during opening hours): the
guard's routing-data decision (embedded data, warm cache), routing, then the first application
(``answer``). Sequential calls, so each figure is one call's own latency.

* ``in-process``: from the moment mod_python3 would call the handler (the handler's module
  re-imported first, as mod_python3 does on every call) to the flow's first ``session.execute``:
  module re-import, the App found in the host's cache, ``InProcessSession`` built from
  ``getVariable``, the data decision (handed to the hub thread and back), routing. The stand-in
  ``freeswitch.Session`` is connected before the clock starts (a real switch has no connect).
* ``socket (TCP)``: from the fake FreeSWITCH's TCP connect to the first ``sendmsg execute`` it reads
  (``measure_tcp_calls``: the connect/myevents/linger handshake, the same decision and routing, over
  loopback TCP to ``esl-app``'s outbound server in this process).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import callflows.demo as demo
from esl_app.testing import freeswitch as fake_freeswitch

TARGET = "callflows.demo:app"


class TimedSession(fake_freeswitch.Session):
    """The stand-in session, noting when the flow issues its first application."""

    first_execute: float | None = None

    def execute(self, app: str, data: str | None = None) -> None:
        if self.first_execute is None:
            self.first_execute = time.perf_counter()
        super().execute(app, data)


def _call_thread(session: TimedSession, started: list[float]) -> None:
    """What mod_python3 does on the call's thread: re-import the handler's module, call handler."""
    started.append(time.perf_counter())
    sys.modules.pop("esl_app.modpython", None)
    entry = importlib.import_module("esl_app.modpython")
    entry.handler(session, TARGET)


def in_process(calls: int) -> list[float]:
    fake_freeswitch.install()
    times: list[float] = []
    for _ in range(calls):
        session = TimedSession(destination="1000", dtmf="1")
        started: list[float] = []
        thread = threading.Thread(target=_call_thread, args=(session, started))
        thread.start()
        thread.join(30)
        session.close()
        assert session.first_execute is not None
        times.append((session.first_execute - started[0]) * 1000)
    return times


def over_socket(calls: int) -> list[float]:
    from esl_app.testing.simulate import measure_tcp_calls
    from esl_app.transport import OutboundServer

    demo.app.startup()
    server = OutboundServer(demo.app.handle, "127.0.0.1", 0)
    server.start()
    try:
        report = measure_tcp_calls(server.address, calls, concurrency=1, destination="1000", dtmf="1")
    finally:
        server.stop(deadline=5)
    assert report.failed == 0, report.errors
    return report.setup_ms


def parts(runs: int = 300) -> dict[str, float]:
    """Where the in-process time goes, each measured alone on a call-like thread (medians, µs)."""
    from esl_app.hubthread import home_hub
    from esl_app.modpython import host

    host.load(TARGET)
    hub = home_hub()
    assert hub is not None
    moment = demo.clock()

    def median_us(fn) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1e6)
        return statistics.median(times)

    def reimport() -> None:
        sys.modules.pop("esl_app.modpython", None)
        importlib.import_module("esl_app.modpython")

    result: dict[str, float] = {}

    def measure() -> None:
        result["handler module re-import"] = median_us(reimport)
        result["hand-off to the hub thread (no-op)"] = median_us(lambda: hub.call(lambda: None))
        result["data.decide from a call thread"] = median_us(lambda: demo.data.decide("1000", "1001", at=moment))

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    result["data.decide on the hub thread"] = median_us(
        lambda: hub.call(lambda: [demo.data.decide("1000", "1001", at=moment) for _ in range(100)])
    ) / 100
    return result


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{name:<14} {len(times):>6} {statistics.median(times):>10.3f} {p99:>10.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    moment = datetime(2026, 11, 25, 10, 30, tzinfo=ZoneInfo("Europe/London"))
    demo.clock = lambda: moment
    warm = max(20, args.calls // 10)
    in_process(warm)  # loads the app once, warms caches; not counted
    inproc = in_process(args.calls)
    over_socket(warm)
    sock = over_socket(args.calls)
    print(f"{'path':<14} {'calls':>6} {'p50 ms':>10} {'p99 ms':>10}   (handler entry / connect -> first execute)")
    print(summary("in-process", inproc))
    print(summary("socket (TCP)", sock))
    print(f"median ratio socket / in-process: {statistics.median(sock) / statistics.median(inproc):.1f}x")
    print("in-process parts (median µs):")
    for name, value in parts().items():
        print(f"  {name:<40} {value:>8.1f}")


if __name__ == "__main__":
    main()
