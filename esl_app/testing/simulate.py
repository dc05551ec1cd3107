"""Run one call through an ``App`` against the fake FreeSWITCH: in memory, or over TCP to a server."""

from __future__ import annotations

import socket
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import gevent
import gevent.socket
from gevent.pool import Pool

from ..app import App
from ..call import Call
from .channel import split_arguments
from .peer import CallRecord, CallScript, FakeFreeSWITCH, TimingModel
from .pipe import memory_socket_pair
from .trace import TracingSocket


class SimulatedCall:
    """The outcome of a simulated call: what FreeSWITCH saw (``record``) and the flow's ``call``."""

    def __init__(self, record: CallRecord, call: Call | None, trace: list[str]) -> None:
        self.record = record
        self.call = call
        self.trace = trace

    @property
    def verbs(self) -> list[str]:
        """Applications that ran on the channel, in order (e.g. ``["answer", "playback"]``)."""
        return list(self.record.verbs)

    @property
    def executed(self) -> list[tuple[str, str]]:
        return list(self.record.executed)

    def args(self, app: str) -> list[str]:
        """Arguments of every run of ``app``."""
        return [arg for name, arg in self.record.executed if name == app]

    @property
    def hangup_cause(self) -> str | None:
        return self.record.hangup_cause

    @property
    def answered(self) -> bool:
        return self.record.answered

    @property
    def responded(self) -> str | None:
        """The SIP response sent with ``respond``, if any (e.g. ``"503 Service Unavailable"``)."""
        responses = self.args("respond")
        return responses[-1] if responses else None

    @property
    def variables(self) -> dict[str, str]:
        return dict(self.record.variables)

    def __repr__(self) -> str:
        return f"<SimulatedCall verbs={self.verbs} hangup_cause={self.hangup_cause}>"


def _script(script: CallScript | None, fields: dict[str, Any]) -> CallScript:
    if script is None:
        return CallScript(**fields)
    return script.model_copy(update=fields) if fields else script


def simulate_call(
    app: App,
    script: CallScript | None = None,
    *,
    timeout: float = 30.0,
    chunker: Callable[[bytes], list[bytes]] | None = None,
    trace: bool = False,
    timing: TimingModel | None = None,
    **fields: Any,
) -> SimulatedCall:
    """Place one call to ``app`` in memory (no sockets). ``fields`` are ``CallScript`` fields:
    ``destination``, ``caller_id_number``, ``dtmf``, ``hangup_at``, ``bridge``, ``mode``...
    """
    peer_end, app_end = memory_socket_pair()
    lines: list[str] = []
    peer_sock: Any = TracingSocket(peer_end, lines.append) if trace else peer_end
    peer = FakeFreeSWITCH(_script(script, fields), peer_sock, chunker=chunker, timing=timing)
    peer_greenlet = gevent.spawn(peer.run)
    app_greenlet = gevent.spawn(app.handle, app_end, ("memory", 0))
    done = gevent.joinall([peer_greenlet, app_greenlet], timeout=timeout, raise_error=True)
    if len(done) != 2:
        gevent.killall([peer_greenlet, app_greenlet])
        raise TimeoutError(f"simulated call did not finish within {timeout} s; trace so far:\n" + "\n".join(lines))
    return SimulatedCall(peer_greenlet.value, app_greenlet.value, lines)


def simulate_tcp_call(
    address: tuple[str, int],
    script: CallScript | None = None,
    *,
    timeout: float = 30.0,
    emit: Callable[[str], None] | None = None,
    timing: TimingModel | None = None,
    trace: bool = True,
    **fields: Any,
) -> SimulatedCall:
    """Place one call over TCP to a running esl-app server, as FreeSWITCH's ``socket`` app would.
    ``trace=False`` keeps no trace (a load generator: the trace re-parses every frame written)."""
    lines: list[str] = []

    def record_line(line: str) -> None:
        lines.append(line)
        if emit is not None:
            emit(line)

    sock = gevent.socket.create_connection(address, timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as FreeSWITCH does (spec 2.1)
    wire = TracingSocket(sock, record_line) if trace or emit is not None else sock
    peer = FakeFreeSWITCH(_script(script, fields), wire, timing=timing)
    with gevent.Timeout(timeout, TimeoutError(f"simulated call to {address} did not finish within {timeout} s")):
        record = peer.run()
    return SimulatedCall(record, None, lines)


Leg = Literal["static", "async"]


def simulate_transfers(
    app: App,
    *,
    dialplan: Callable[[str, str], Leg | None],
    max_legs: int = 6,
    connect: Callable[..., SimulatedCall] | None = None,
    **fields: Any,
) -> list[SimulatedCall]:
    """Follow one call through its transfers, as FreeSWITCH would with a dialplan that sends some
    extensions to esl-app: after each leg that ends transferred, ``dialplan(destination, context)``
    says whether the new extension runs ``socket`` again (``"static"``/``"async"``) or not (None:
    the chain ends there). Every leg is the same channel: its uuid and channel variables carry over.

    ``connect`` places one leg (default ``simulate_call`` with ``app``; e.g. ``partial(esl_call.tcp,
    app)`` for TCP). Returns the legs in order; stops after ``max_legs`` (a loop)."""
    place = connect or (lambda **leg: simulate_call(app, **leg))
    legs: list[SimulatedCall] = []
    script = _script(None, fields)
    leg_fields: dict[str, Any] = {**fields, "uuid": script.uuid or str(uuidlib.uuid4())}
    leg_fields.setdefault("mode", dialplan(script.destination, script.context) or "static")
    while len(legs) < max_legs:
        result = place(**leg_fields)
        legs.append(result)
        target = result.record.transferred_to
        if target is None or result.record.hangup_cause is not None:
            break
        words = split_arguments(target, 4)
        destination = words[0] if words else ""
        context = words[2] if len(words) > 2 else leg_fields.get("context", script.context)
        mode = dialplan(destination, context)
        if mode is None:
            break
        leg_fields = {
            **leg_fields,
            "destination": destination,
            "context": context,
            "mode": mode,
            "variables": dict(result.record.variables),  # the same channel, with what the legs set
            "hangup_at": None,
        }
    return legs


class _SetupTimer:
    """Socket wrapper noting when the first ``sendmsg`` execute arrives (the call's setup latency)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.started = time.perf_counter()
        self.first_execute: float | None = None

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self.first_execute is None and b"call-command: execute" in data:
            self.first_execute = time.perf_counter()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@dataclass
class LoadReport:
    calls: int
    failed: int
    seconds: float
    setup_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.setup_ms:
            return float("nan")
        ordered = sorted(self.setup_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        text = (
            f"{self.calls} calls ({self.failed} failed) in {self.seconds:.2f} s: {self.calls_per_second:.0f} calls/s; "
            f"setup latency (connect -> first execute) p50 {self.percentile(0.5):.2f} ms, "
            f"p99 {self.percentile(0.99):.2f} ms"
        )
        if self.errors:
            text += f"; errors {self.errors}"
        return text


def measure_tcp_calls(
    address: tuple[str, int], calls: int, *, concurrency: int = 10, timeout: float = 30.0, **fields: Any
) -> LoadReport:
    """Place ``calls`` calls, ``concurrency`` at a time, and measure throughput and setup latency."""
    script = CallScript(**fields)
    pool = Pool(concurrency)
    report = LoadReport(calls=calls, failed=0, seconds=0.0)

    def one() -> None:
        try:
            sock = gevent.socket.create_connection(address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            timer = _SetupTimer(sock)
            with gevent.Timeout(timeout):
                FakeFreeSWITCH(script, timer).run()
            if timer.first_execute is not None:
                report.setup_ms.append((timer.first_execute - timer.started) * 1000)
        except BaseException as exc:
            report.failed += 1
            report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1

    started = time.perf_counter()
    for _ in range(calls):
        pool.spawn(one)
    pool.join()
    report.seconds = time.perf_counter() - started
    return report
