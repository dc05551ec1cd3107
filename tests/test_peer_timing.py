"""The fake peer's timing model (spec 9): the idle listener's 20 ms poll, the async park tick, and
the bare-LF waker that ends the poll. Lower bounds are exact (a wait cannot be shorter); upper bounds
use medians and wide margins because the machine is shared."""

from __future__ import annotations

import statistics
import time

import gevent

from esl_app.protocol import Parser, commands
from esl_app.testing.peer import CallScript, FakeFreeSWITCH, TimingModel, next_boundary
from esl_app.testing.pipe import memory_socket_pair


class Client:
    def __init__(self, mode: str = "async", timing: TimingModel | None = None, *, no_timing: bool = False) -> None:
        peer_end, self.sock = memory_socket_pair()
        model = None if no_timing else (timing or TimingModel())
        self.peer = FakeFreeSWITCH(CallScript(mode=mode), peer_end, timing=model, safety_timeout=20)
        self.greenlet = gevent.spawn(self.peer.run)
        self.parser = Parser()
        self.frames: list = []
        self.reader = gevent.spawn(self._read)
        self.waking = False

    def _read(self) -> None:
        while data := self.sock.recv(65536):
            for frame in self.parser.feed(data):
                self.frames.append((time.perf_counter(), frame))

    def wait_for(self, predicate, timeout: float = 2.0):
        with gevent.Timeout(timeout):
            while True:
                for stamp, frame in self.frames:
                    if predicate(frame):
                        self.frames.remove((stamp, frame))
                        return stamp, frame
                gevent.sleep(0.0005)

    def handshake(self) -> None:
        self.sock.sendall(commands.CONNECT + commands.MYEVENTS)
        self.wait_for(lambda f: f.is_connect_reply)
        self.wait_for(lambda f: f.reply_text.startswith("+OK Events"))
        if self.peer.async_mode:
            self.wait_for(lambda f: f.is_event and f.event().name == "CHANNEL_PARK")

    def wake(self, interval: float = 0.001) -> None:
        self.waking = True

        def loop() -> None:
            while self.waking:
                self.sock.sendall(commands.WAKE)
                gevent.sleep(interval)

        gevent.spawn(loop)

    def execute_latency(self, app: str = "answer") -> tuple[float, float]:
        """Seconds from writing the execute to its reply, and to its COMPLETE event."""
        sent = time.perf_counter()
        self.sock.sendall(commands.execute(app, event_uuid=f"u-{sent}"))
        replied, _ = self.wait_for(lambda f: f.reply_text == "+OK")
        done, _ = self.wait_for(
            lambda f: f.is_event and f.event().get("Application-UUID") == f"u-{sent}"
            and f.event().name == "CHANNEL_EXECUTE_COMPLETE"
        )
        return replied - sent, done - sent

    def close(self) -> None:
        self.waking = False
        self.sock.close()
        self.greenlet.join(timeout=5)


def test_next_boundary():
    assert next_boundary(0.0, 0.02, 0.0) == 0.02
    assert next_boundary(0.0, 0.02, 0.019) == 0.02
    assert abs(next_boundary(0.0, 0.02, 0.021) - 0.04) < 1e-12


def test_async_execute_waits_for_the_park_tick_and_the_listener_poll():
    client = Client("async")
    client.handshake()
    samples = [client.execute_latency() for _ in range(5)]
    client.close()
    replies = [r for r, _ in samples]
    completes = [c for _, c in samples]
    assert statistics.median(replies) < 0.010  # the reply is not delayed: the command woke the poll
    # queued for the park tick (<= 20 ms), then held by the idle listener's poll (up to 20 ms more)
    assert min(completes) >= 0.015


def test_a_bare_lf_ends_the_poll_so_completions_arrive_at_the_park_tick():
    client = Client("async")
    client.handshake()
    client.wake(0.001)
    samples = [client.execute_latency()[1] for _ in range(7)]
    client.close()
    assert statistics.median(samples) < 0.030  # park tick only, no extra poll wait
    assert client.peer.wake_bytes > 0
    assert all(s >= 0.0 for s in samples)


def test_static_execute_runs_at_once():
    client = Client("static")
    client.handshake()
    client.wake(0.001)
    samples = [client.execute_latency()[0] for _ in range(7)]
    client.close()
    assert statistics.median(samples) < 0.010  # no park tick: inline, '+OK' when finished


def test_events_of_an_idle_listener_wait_for_the_poll_unless_the_client_writes():
    client = Client("async")
    client.handshake()
    gevent.sleep(0.005)
    pressed = time.perf_counter()
    client.peer.press("5")
    stamp, _ = client.wait_for(lambda f: f.is_event and f.event().name == "DTMF")
    slow = stamp - pressed
    client.wake(0.001)
    gevent.sleep(0.01)
    pressed = time.perf_counter()
    client.peer.press("6")
    stamp, _ = client.wait_for(lambda f: f.is_event and f.event().name == "DTMF")
    fast = stamp - pressed
    client.close()
    assert slow > 0.001  # held until the poll boundary
    assert fast < slow


def test_timing_model_is_off_by_default():
    client = Client("async", no_timing=True)
    client.handshake()
    samples = [client.execute_latency()[1] for _ in range(5)]
    client.close()
    assert statistics.median(samples) < 0.015
