"""The static decision path on esl-app's side: every write and read between the accepted connection
and the first ``execute`` of a decide-and-hand-off call, with bytes and microseconds (spec 2.4, 4.3).

esl-app runs in this process with a route declared ``mode="async"``, so a call on a static socket is
decided and handed off (``App.hand_off_to_async``); the switch is the test kit's fake FreeSWITCH with
its ``TimingModel`` (a static socket runs each command when it reads it, inline, and reads the next
one only after), in a process of its own (``esl_app.bench.decision``). The connection's writes and
reads are timed where esl-app makes them (``Connection._write`` and ``_deliver``); ``print_timeline``
prints the median of each step over the calls: ``esl-app bench --static-timeline``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..app import App
from ..call import Call
from ..protocol import Parser
from ..transport import Connection, OutboundServer


@dataclass
class _Step:
    at: float  # seconds since the call's greenlet started
    kind: str  # "write", "read" or "mark"
    data: bytes = b""
    label: str = ""


@dataclass
class _CallTrace:
    started: float
    steps: list[_Step] = field(default_factory=list)


def decide_and_hand_off_app() -> App:
    """An app whose route needs an async socket: a static call is decided, then handed off."""
    app = App("static-path")

    @app.route("1000", mode="async")
    def menu(call: Call) -> None:  # runs on the async leg only
        call.answer()

    return app


@contextmanager
def _traced(app: App) -> Iterator[list[_CallTrace]]:
    """Record every call's writes, reads and routing decision while inside (one trace per connection)."""
    traces: list[_CallTrace] = []
    live: dict[int, _CallTrace] = {}  # by id() of the connection: ids are reused once one is freed
    write, deliver, hand_off = Connection._write, Connection._deliver, app.hand_off_to_async
    clock = time.perf_counter

    def traced_write(self: Connection, commands: list[bytes], data: bytes) -> Any:
        trace = live.get(id(self))
        if trace is not None:
            trace.steps.append(_Step(clock() - trace.started, "write", data))
        return write(self, commands, data)

    def traced_deliver(self: Connection, data: bytes) -> None:
        trace = live.get(id(self))
        if trace is not None:
            trace.steps.append(_Step(clock() - trace.started, "read", data))
        deliver(self, data)

    def traced_hand_off(call: Call) -> None:
        trace = live.get(id(call.session.connection))
        if trace is not None:
            trace.steps.append(_Step(clock() - trace.started, "mark", label="routed: the route needs async, hand-off"))
        hand_off(call)

    original_init = Connection.__init__

    def traced_init(self: Connection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        trace = live[id(self)] = _CallTrace(clock())
        traces.append(trace)

    Connection._write = traced_write  # type: ignore[method-assign]
    Connection._deliver = traced_deliver  # type: ignore[method-assign]
    Connection.__init__ = traced_init  # type: ignore[method-assign]
    app.hand_off_to_async = traced_hand_off  # type: ignore[method-assign]
    try:
        yield traces
    finally:
        Connection._write, Connection._deliver, Connection.__init__ = write, deliver, original_init  # type: ignore[method-assign]
        app.hand_off_to_async = hand_off  # type: ignore[method-assign]


def _describe_write(data: bytes) -> str:
    """The commands in one write, by their first lines (``sendmsg`` by its call-command and app)."""
    names = []
    for chunk in data.split(b"\n\n"):
        lines = chunk.strip(b"\n").split(b"\n")
        if not lines or not lines[0]:
            continue
        first = lines[0].decode("utf-8", "replace")
        if first.startswith("sendmsg"):
            fields = dict(line.decode("utf-8", "replace").partition(": ")[::2] for line in lines[1:])
            command = fields.get("call-command", "?")
            first = f"sendmsg {command} {fields.get('execute-app-name', '')}".strip()
        elif first.startswith("api "):
            first = " ".join(first.split()[:2])
        names.append(first)
    return " + ".join(names)


def _describe_reads(parser: Parser, data: bytes) -> str:
    names = []
    for frame in parser.feed(data):
        if frame.is_connect_reply:
            names.append(f"connect reply ({frame.headers.get('Socket-Mode')})")
        elif frame.is_event:
            names.append(frame.event().name)
        elif frame.reply_text:
            names.append(repr(frame.reply_text.strip()[:28]))
        else:
            names.append(frame.content_type)
    return ", ".join(names) or "(part of a frame)"


def _steps_until_first_execute(trace: _CallTrace) -> list[tuple[str, str, int, float]]:
    """(who, what, bytes, at) per step, up to the write that carries the first execute."""
    parser = Parser()
    out: list[tuple[str, str, int, float]] = []
    steps: list[_Step] = []
    for step in trace.steps:
        if step.kind == "read" and steps and steps[-1].kind == "read":
            # how the bytes were cut into reads varies from call to call: one step, done at the last read
            steps[-1] = _Step(step.at, "read", steps[-1].data + step.data)
        else:
            steps.append(step)
    for step in steps:
        if step.kind == "mark":
            out.append(("esl-app", step.label, 0, step.at))
            continue
        if step.kind == "read":
            out.append(("switch -> esl-app", _describe_reads(parser, step.data), len(step.data), step.at))
            continue
        what = _describe_write(step.data)
        out.append(("esl-app -> switch", what, len(step.data), step.at))
        if "sendmsg execute" in what:
            break
    return out


def measure(calls: int = 100, cpus: list[int] | None = None) -> dict[str, Any]:
    """Serve ``calls`` static calls (one at a time) from this process; the switch in a subprocess."""
    import gevent

    app = decide_and_hand_off_app()
    app.startup()
    server = OutboundServer(app.handle, "127.0.0.1", 0)
    server.start()
    command = [sys.executable, "-m", "esl_app.bench.decision", "--port", str(server.address[1]), "--mode",
               "static", "--calls", str(calls), "--concurrency", "1"]  # fmt: skip
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", ",".join(map(str, cpus)), *command]
    with _traced(app) as traces:
        switch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while switch.poll() is None:
            gevent.sleep(0.05)
        out, err = switch.communicate()
    server.stop(deadline=2)
    if switch.returncode != 0:
        raise RuntimeError(f"the fake FreeSWITCH failed: {err[-2000:]}")
    switch_side = json.loads(out.strip().splitlines()[-1])
    sequences = [_steps_until_first_execute(trace) for trace in traces]
    shape = max(({tuple(w for w, *_ in s) + tuple(x for _, x, *_ in s) for s in sequences}), key=lambda k: sum(
        1 for s in sequences if tuple(w for w, *_ in s) + tuple(x for _, x, *_ in s) == k))  # fmt: skip
    same = [s for s in sequences if tuple(w for w, *_ in s) + tuple(x for _, x, *_ in s) == shape]
    steps = []
    for index, (who, what, size, _) in enumerate(same[0]):
        steps.append({"who": who, "what": what, "bytes": size,
                      "at_us": round(statistics.median(s[index][3] for s in same) * 1e6, 1)})  # fmt: skip
    return {
        "calls": calls,
        "calls_in_timeline": len(same),
        "steps": steps,
        "switch_decision_ms": switch_side["decision_ms"],
        "switch_errors": switch_side["errors"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| # | direction | what | bytes | at (us, median) | since previous (us) |",
        "|---:|---|---|---:|---:|---:|",
    ]
    previous = 0.0
    for number, step in enumerate(result["steps"], 1):
        lines.append(
            f"| {number} | {step['who']} | {step['what']} | {step['bytes'] or ''} | {step['at_us']:.0f} | "
            f"{step['at_us'] - previous:.0f} |"
        )
        previous = step["at_us"]
    decision = result["switch_decision_ms"]
    lines.append("")
    lines.append(
        f"{result['calls_in_timeline']} of {result['calls']} calls followed this sequence (medians over them; "
        f"time 0 is the call's greenlet starting). Seen by the switch, TCP connected -> the first routed "
        f"application (`transfer`) starts: p50 {decision['p50']:.2f} ms, p99 {decision['p99']:.2f} ms; "
        f"errors {result['switch_errors'] or 'none'}."
    )
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.calls)
    print(json.dumps(result) if args.json else markdown(result))


if __name__ == "__main__":
    main()
