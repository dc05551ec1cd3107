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
    def __init__(
        self,
        mode: str = "async",
        timing: TimingModel | None = None,
        *,
        no_timing: bool = False,
        script: CallScript | None = None,
    ) -> None:
        peer_end, self.sock = memory_socket_pair()
        model = None if no_timing else (timing or TimingModel())
        script = script or CallScript(mode=mode)
        self.peer = FakeFreeSWITCH(script, peer_end, timing=model, safety_timeout=20)
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


def test_static_socket_runs_each_command_to_its_end_before_it_reads_the_next():
    """Spec 2.4: a static socket's listener is the call's own thread. Three commands in one write: the
    playback runs inline (0.1 s); the api behind it and the answer after that run only once it has
    ended; replies first, in order, then the events, the playback's COMPLETE before the answer's start."""
    client = Client(script=CallScript(mode="static", app_seconds={"playback": 0.1}))
    client.handshake()
    sent = time.perf_counter()
    client.sock.sendall(
        commands.execute("playback", "a.wav", event_uuid="u-play")
        + commands.api("uuid_exists", client.peer.uuid)
        + commands.execute("answer", event_uuid="u-answer")
    )
    replies = [client.wait_for(lambda f: not f.is_event) for _ in range(3)]
    events = [client.wait_for(lambda f: f.is_event and f.event().name.startswith("CHANNEL_EXECUTE")) for _ in range(4)]
    client.close()
    assert [frame.reply_text.strip() for _, frame in replies] == ["+OK", "true", "+OK"]
    assert min(stamp for stamp, _ in replies) - sent >= 0.1  # nothing behind the playback ran before its end
    assert max(stamp for stamp, _ in replies) <= min(stamp for stamp, _ in events)
    order = [(f.event().name, f.event().get("Application-UUID")) for _, f in sorted(events, key=lambda e: e[0])]
    assert order == [
        ("CHANNEL_EXECUTE", "u-play"), ("CHANNEL_EXECUTE_COMPLETE", "u-play"),
        ("CHANNEL_EXECUTE", "u-answer"), ("CHANNEL_EXECUTE_COMPLETE", "u-answer"),
    ]  # fmt: skip
