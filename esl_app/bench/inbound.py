"""``esl-app bench-inbound``: the inbound client beside greenswitch's ``InboundESL``, in one run.

Two figures, each for both clients, alternating rounds and reporting medians:

* **events per second one core parses** from a stream of real-sized CHANNEL_* events: the frames an
  async ``socket`` call produces on a SIP channel carrying ~150 variables (``bench.traffic``), 12 per
  call (PARK, EXECUTE/COMPLETE of answer and playback, ANSWER, the hangup sequence), ~8.9 kB on
  average. The handler reads three headers (Event-Name, Unique-ID, Channel-State) as a monitor
  would; two more esl-app rows read every header (no lazy shortcut), from ``text/event-plain`` and
  from ``text/event-json`` (greenswitch cannot read JSON events). Reported per wall second and
  per CPU second of the client process (the second figure is what one core does, whatever the
  machine's load).
* **api round trips per second**: ``api status`` one at a time, and from 16 greenlets at once, per
  wall second and per CPU second of the client process.

The server is a separate process (``spawn``) that plays FreeSWITCH's side: ``auth/request``,
``+OK accepted``, ``api`` replies (the real ``status`` text) and, on ``api bench_stream N``, N events
written back to back. It is the same for both clients, so the ratios compare the clients.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent
from gevent.event import Event as Signal

STATUS_BODY = (
    "UP 0 years, 0 days, 0 hours, 2 minutes, 38 seconds, 312 milliseconds, 624 microseconds\n"
    "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready\n"
    "28 session(s) since startup\n"
    "2 session(s) - peak 4, last 5min 4 \n"
    "0 session(s) per Sec out of max 30, peak 2, last 5min 2 \n"
    "1000 session(s) max\n"
    "min idle cpu 0.00/94.43\n"
    "Current Stack Size/Max 240K/8192K\n"
)  # capture 06, byte for byte


# -- the stream ------------------------------------------------------------------------------------


def build_stream(calls: int = 50) -> tuple[bytes, int]:
    """``calls`` calls' worth of CHANNEL_* event frames, back to back; returns (bytes, event count)."""
    from ..protocol import Parser
    from .traffic import CallTemplates

    templates = CallTemplates()
    frames: list[bytes] = []
    for _ in range(calls):
        call = str(uuidlib.uuid4()).encode()
        render = templates.render
        frames.append(render(templates.park(), call))
        for app, arg, answered in (("answer", "", False), ("playback", "ivr/ivr-welcome.wav", True)):
            app_uuid = str(uuidlib.uuid4()).encode()
            start, done = templates.execute(app, arg, answered)
            frames.append(render(start, call, app_uuid))
            if app == "answer":
                frames.append(render(templates.answer_event(), call))
            frames.append(render(done, call, app_uuid))
        frames.append(render(templates.hangup_sequence("NORMAL_CLEARING", True), call))
    data = b"".join(frames)
    return data, len(Parser().feed(data))


def to_json_stream(data: bytes) -> bytes:
    """The same events as ``text/event-json`` frames (what ``event json ...`` makes FreeSWITCH write)."""
    from ..protocol import Parser, switch

    out = []
    for frame in Parser().feed(data):
        event = frame.event()
        out.append(switch.event_json(event.headers.items(), event.body or None))
    return b"".join(out)


# -- the server (a separate process) -----------------------------------------------------------------


def _serve(port_queue: Any, calls: int) -> None:
    from gevent.server import StreamServer

    from ..protocol import switch
    from ..protocol.switch import CommandReader

    plain, per_block = build_stream(calls)
    blocks = {"plain": plain, "json": to_json_stream(plain)}
    accepted = switch.reply("+OK accepted")
    status = switch.api_response(STATUS_BODY)

    def handle(sock: Any, address: Any) -> None:
        reader = CommandReader()
        sock.sendall(switch.auth_request())
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            out: list[bytes] = []
            stream = 0
            block = plain
            for command in reader.feed(data):
                word = command.name
                if word == "auth":
                    out.append(accepted)
                elif word == "api" and command.arg.startswith("bench_stream"):
                    out.append(switch.api_response("+OK\n"))
                    words = command.arg.split()
                    stream += int(words[1])
                    block = blocks[words[2] if len(words) > 2 else "plain"]
                elif word == "api":
                    out.append(status)
                elif word == "event":
                    out.append(switch.reply("+OK event listener enabled plain"))
                elif word == "exit":
                    out.append(switch.reply("+OK bye") + switch.final_notice())
                    sock.sendall(b"".join(out))
                    sock.close()
                    return
                else:
                    out.append(switch.reply("+OK"))
            try:
                sock.sendall(b"".join(out))
                while stream > 0:  # whole blocks, then the rest frame by frame
                    if stream >= per_block:
                        sock.sendall(block)
                        stream -= per_block
                    else:
                        frames = _split_frames(block)[:stream]
                        sock.sendall(b"".join(frames))
                        stream = 0
            except OSError:
                return

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    port_queue.put(server.server_port)
    gevent.wait()


def _split_frames(data: bytes) -> list[bytes]:
    frames: list[bytes] = []
    at = 0
    while at < len(data):
        end = data.index(b"\n\n", at) + 2
        length = int(data[at:end].split(b"Content-Length: ", 1)[1].split(b"\n", 1)[0])
        frames.append(data[at : end + length])
        at = end + length
    return frames


# -- the clients ---------------------------------------------------------------------------------------


@dataclass
class Measure:
    wall: float
    cpu: float
    count: int

    @property
    def per_wall_second(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.count / self.cpu if self.cpu else 0.0


def _timed(run: Callable[[], int]) -> Measure:
    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    return Measure(time.perf_counter() - wall, time.process_time() - cpu, count)


class EsLAppSide:
    name = "esl-app InboundClient"

    def __init__(self, address: tuple[str, int], *, full_parse: bool = False, event_format: str = "plain") -> None:
        from ..transport.inbound import InboundClient

        self.count = 0
        self.target = 0
        self.done = Signal()
        self.full_parse = full_parse
        self.event_format = event_format
        if full_parse:
            self.name = f"esl-app, {event_format} events, every header read"
        self.client = InboundClient(
            address[0], address[1], "ClueCon", name="bench", events=("ALL",), on_event=self._on_event,
            command_timeout=60.0, event_format=event_format,  # type: ignore[arg-type]
        )  # fmt: skip
        self.client.start()
        if not self.client.wait_connected(10):
            raise RuntimeError(f"esl-app client could not connect: {self.client.last_error}")

    def _on_event(self, event: Any) -> None:
        if self.full_parse:
            len(event.headers)  # every header parsed and decoded
        event.name, event.unique_id, event.get("Channel-State")
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def stream(self, events: int) -> int:
        self.count, self.target = 0, events
        self.done.clear()
        self.client.api(f"bench_stream {events} {self.event_format}", timeout=60)
        if not self.done.wait(300):
            raise RuntimeError(f"{self.name}: {self.count} of {events} events arrived")
        return self.count

    def api(self, calls: int, concurrency: int) -> int:
        api = self.client.api
        if concurrency <= 1:
            for _ in range(calls):
                api("status")
            return calls
        share = calls // concurrency
        workers = [gevent.spawn(lambda: [api("status") for _ in range(share)]) for _ in range(concurrency)]
        gevent.joinall(workers, raise_error=True)
        return share * concurrency

    def close(self) -> None:
        self.client.stop()


class GreenswitchSide:
    name = "greenswitch InboundESL"

    def __init__(self, address: tuple[str, int]) -> None:
        from greenswitch.esl import InboundESL

        self.count = 0
        self.target = 0
        self.done = Signal()
        self.esl = InboundESL(address[0], address[1], "ClueCon")
        self.esl.connect()
        self.esl.register_handle("*", self._on_event)

    def _on_event(self, event: Any) -> None:
        headers = event.headers
        headers.get("Event-Name"), headers.get("Unique-ID"), headers.get("Channel-State")
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def stream(self, events: int) -> int:
        self.count, self.target = 0, events
        self.done.clear()
        self.esl.send(f"api bench_stream {events}")
        if not self.done.wait(300):
            raise RuntimeError(f"{self.name}: {self.count} of {events} events arrived")
        return self.count

    def api(self, calls: int, concurrency: int) -> int:
        send = self.esl.send
        if concurrency <= 1:
            for _ in range(calls):
                send("api status")
            return calls
        share = calls // concurrency
        workers = [gevent.spawn(lambda: [send("api status") for _ in range(share)]) for _ in range(concurrency)]
        gevent.joinall(workers, raise_error=True)
        return share * concurrency

    def close(self) -> None:
        self.esl.stop()


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    client: str
    test: str
    per_wall_second: float
    per_cpu_second: float | None
    samples: list[float] = field(default_factory=list)


@dataclass
class InboundBenchReport:
    events: int
    mean_event_bytes: int
    rounds: int
    api_calls: int
    concurrency: int
    rows: list[Row]

    def row(self, client: str, test: str) -> Row:
        return next(r for r in self.rows if r.client == client and r.test == test)

    def ratios(self) -> dict[str, float]:
        ours, theirs = EsLAppSide.name, GreenswitchSide.name
        out: dict[str, float] = {}
        for test, attr in (
            ("events", "per_cpu_second"),
            ("events", "per_wall_second"),
            ("api sequential", "per_cpu_second"),
            ("api sequential", "per_wall_second"),
            (f"api x{self.concurrency}", "per_cpu_second"),
            (f"api x{self.concurrency}", "per_wall_second"),
        ):
            a, b = getattr(self.row(ours, test), attr), getattr(self.row(theirs, test), attr)
            out[f"{test} ({attr.replace('_', ' ')})"] = a / b if a and b else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = self.ratios()
        return data

    def table(self) -> str:
        lines = [
            f"stream: {self.events} CHANNEL_* events per round, {self.mean_event_bytes} bytes on average; "
            f"{self.rounds} rounds, medians",
            "",
            "| client | test | per wall second | per CPU second |",
            "|---|---|---:|---:|",
        ]
        for r in self.rows:
            cpu = f"{r.per_cpu_second:,.0f}" if r.per_cpu_second is not None else "-"
            lines.append(f"| {r.client} | {r.test} | {r.per_wall_second:,.0f} | {cpu} |")
        lines.append("")
        lines += [f"esl-app / greenswitch, {name}: **{value:.1f}x**" for name, value in self.ratios().items()]
        return "\n".join(lines)


def run(
    events: int = 10_000,
    rounds: int = 3,
    api_calls: int = 4_000,
    concurrency: int = 16,
    progress: Callable[[str], None] | None = None,
) -> InboundBenchReport:
    say = progress or (lambda text: None)
    block, per_block = build_stream(50)
    mean = len(block) // per_block
    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(port_queue, 50), daemon=True)
    server.start()
    try:
        address = ("127.0.0.1", port_queue.get(timeout=60))
        samples: dict[tuple[str, str], list[Measure]] = {}

        def record(side: Any, test: str, measure: Measure) -> None:
            samples.setdefault((side.name, test), []).append(measure)

        for index in range(rounds):
            for factory in (
                lambda: GreenswitchSide(address),
                lambda: EsLAppSide(address),
                lambda: EsLAppSide(address, full_parse=True),
                lambda: EsLAppSide(address, full_parse=True, event_format="json"),
            ):
                side = factory()
                try:
                    record(side, "events", _timed(lambda s=side: s.stream(events)))
                    if not getattr(side, "full_parse", False):
                        record(side, "api sequential", _timed(lambda s=side: s.api(api_calls, 1)))
                        record(side, f"api x{concurrency}", _timed(lambda s=side: s.api(api_calls, concurrency)))
                finally:
                    side.close()
                say(f"round {index + 1}/{rounds}: {side.name} done")
        rows = []
        for (client, test), measures in samples.items():
            wall = statistics.median(m.per_wall_second for m in measures)
            cpu = statistics.median(m.per_cpu_second for m in measures)
            rows.append(Row(client, test, wall, cpu, [round(m.per_wall_second) for m in measures]))
        return InboundBenchReport(events, mean, rounds, api_calls, concurrency, rows)
    finally:
        server.kill()
        server.join(5)
