"""A lean fake FreeSWITCH for load: plays the switch's side of many outbound-socket calls over TCP.

Each call is one greenlet that connects to the server under test (as the ``socket`` application
does), reads the commands it sends and answers with frames pre-rendered by ``traffic.CallTemplates``
(a ~10 kB connect reply, every event with the channel block), in the order the test kit's
``FakeFreeSWITCH`` plays them for an async ``full`` socket. It reproduces only what a call of the
benchmark flow needs (connect, myevents/event/filter, linger, sendmsg execute and hangup, exit),
so one generator process costs a fraction of the server's CPU per call; several processes share
the load (``run_workers``) and report their own CPU, so the report can say when the generator, not
the server, was the limit.

Modes: ``closed`` (C calls in flight, each starting when the previous ended), ``open`` (R new calls
per second for D seconds whatever the completions: the honest mode for latency), ``hold`` (N calls
kept in a playback until released, to measure the server's memory per held call).
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import resource
import socket
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..protocol.commands import MYEVENTS_SUBSCRIPTION
from .traffic import CallTemplates, replies

# how a call ended, from FreeSWITCH's side
SERVED = "served"  # answered by the app, then hung up by it
REFUSED = "refused"  # not answered: the app responded 4xx/5xx and/or hung up explicitly


@dataclass
class LoadSpec:
    """One load phase, as given to every worker process (each takes its share)."""

    host: str
    port: int
    mode: str = "closed"  # closed | open | hold
    duration: float = 5.0  # closed/open: seconds of load
    concurrency: int = 50  # closed: calls in flight (all processes together)
    rate: float = 100.0  # open: new calls per second (all processes); hold: ramp rate
    hold_calls: int = 0  # hold: calls to keep in playback (all processes)
    call_timeout: float = 25.0  # FreeSWITCH waits 25 s for a first command (spec 2.2)
    processes: int = 2
    cpus: list[int] | None = None  # pin the workers to these CPUs (the server has the others)
    linger_exit_wait: float = 5.0  # after the linger notice: how long to wait for the app's exit/close

    def share(self, index: int) -> LoadSpec:
        """This worker's part of the load (rates and counts split evenly across processes)."""
        n = self.processes

        def part(total: int) -> int:
            return total // n + (1 if index < total % n else 0)

        return LoadSpec(
            host=self.host,
            port=self.port,
            mode=self.mode,
            duration=self.duration,
            concurrency=part(self.concurrency),
            rate=self.rate / n,
            hold_calls=part(self.hold_calls),
            call_timeout=self.call_timeout,
            processes=1,
            cpus=self.cpus,
            linger_exit_wait=self.linger_exit_wait,
        )


@dataclass
class WorkerResult:
    calls: int = 0  # calls that ended (any outcome), counted when they ended
    outcomes: Counter = field(default_factory=Counter)  # served / refused / error kinds
    setup_ms: list[float] = field(default_factory=list)  # served calls: connect -> first sendmsg execute
    refused_ms: list[float] = field(default_factory=list)  # refused calls: connect -> the refusal's first execute
    lag_ms: list[float] = field(default_factory=list)  # open loop: start later than scheduled
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    started: float = 0.0  # time.time() of the first call
    ended: float = 0.0

    def merge(self, other: WorkerResult) -> None:
        self.calls += other.calls
        self.outcomes.update(other.outcomes)
        self.setup_ms.extend(other.setup_ms)
        self.refused_ms.extend(other.refused_ms)
        self.lag_ms.extend(other.lag_ms)
        self.cpu_seconds += other.cpu_seconds
        self.wall_seconds = max(self.wall_seconds, other.wall_seconds)
        self.started = min(self.started or other.started, other.started or self.started)
        self.ended = max(self.ended, other.ended)


class _Call:
    """FreeSWITCH's side of one call; ``run`` returns (outcome, setup seconds or None)."""

    __slots__ = (
        "answered",
        "app_hungup",
        "buffer",
        "connected",
        "first_execute",
        "linger",
        "lock",
        "nixed",
        "parked",
        "refused",
        "release",
        "sock",
        "spec",
        "subscribed",
        "t",
        "uuid",
    )

    def __init__(self, spec: LoadSpec, templates: CallTemplates, release: Any) -> None:
        self.spec = spec
        self.t = templates
        self.release = release  # hold mode: playbacks wait until it is set
        self.uuid = str(uuidlib.uuid4()).encode()
        self.sock: Any = None
        self.buffer = b""
        self.connected = self.subscribed = self.parked = False
        self.answered = self.app_hungup = self.refused = False
        self.linger = False
        self.nixed: frozenset[str] = frozenset()  # myevents' events taken back with nixevent
        self.lock: Any = None  # hold mode: the playback's completion is written from another greenlet
        self.first_execute: float | None = None

    def run(self, started: float) -> str:
        import gevent.socket

        spec = self.spec
        try:
            sock = self.sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as FreeSWITCH does (spec 2.1)
            sock.settimeout(spec.call_timeout)
            try:
                sock.connect((spec.host, spec.port))
            except TimeoutError:
                return "connect_timeout"
            except ConnectionRefusedError:
                return "connect_refused"
            except OSError as exc:
                return f"connect_{errno.errorcode.get(exc.errno or 0, 'error').lower()}"
            deadline = started + spec.call_timeout
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return "timeout"
                sock.settimeout(remaining)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return "timeout" if self.first_execute is not None else "timeout_no_execute"
                except ConnectionResetError:
                    return "reset"
                if not data:
                    # the app closed: a call it answered and hung up, or refused, is fine
                    return self._verdict(closed_by_app=True)
                self.buffer += data
                done = self._serve()
                if done:
                    return self._verdict(closed_by_app=False)
        except ConnectionResetError:
            return "reset"
        except BrokenPipeError:
            return self._verdict(closed_by_app=True)
        except OSError as exc:
            return f"os_{errno.errorcode.get(exc.errno or 0, 'error').lower()}"
        finally:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.close()

    def _verdict(self, *, closed_by_app: bool) -> str:
        if self.answered and self.app_hungup:
            return SERVED
        if self.refused or (self.app_hungup and not self.answered):
            return REFUSED
        if not self.connected:
            return "closed_before_connect" if closed_by_app else "no_connect"
        return "closed_before_hangup"  # the app let go of a live call: FreeSWITCH would go on in the dialplan

    # -- commands --------------------------------------------------------------------------------
    def _serve(self) -> bool:
        """Answer every complete command in the buffer; True once FreeSWITCH closes the socket."""
        out: list[bytes] = []
        close = False
        buffer = self.buffer
        while True:
            # FreeSWITCH skips CR/LF before a command (spec 1.3)
            start = 0
            size = len(buffer)
            while start < size and buffer[start] in (10, 13):
                start += 1
            end = buffer.find(b"\n\n", start)
            if end < 0:
                alt = buffer.find(b"\r\n\r\n", start)
                if alt < 0:
                    break
                end, sep = alt, 4
            else:
                sep = 2
            block = buffer[start:end]
            rest = end + sep
            body = b""
            lower = block.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                line_end = block.find(b"\n", at)
                length = int(block[at + 15 : line_end if line_end >= 0 else None].strip() or b"0")
                if len(buffer) < rest + length:
                    break
                body = buffer[rest : rest + length]
                rest += length
            buffer = buffer[rest:]
            close = self._command(block, body, out) or close
            if close:
                break
        self.buffer = buffer
        if out:
            self._send(b"".join(out))
        return close

    def _send(self, data: bytes) -> None:
        if self.lock is None:
            self.sock.sendall(data)
            return
        with self.lock:  # a held call writes from two greenlets
            self.sock.sendall(data)

    def _complete_when_released(self, frame: bytes) -> None:
        self.release.wait()
        with contextlib.suppress(OSError):
            self._send(frame)

    def _command(self, block: bytes, body: bytes, out: list[bytes]) -> bool:
        t = self.t
        line, _, rest = block.partition(b"\n")
        word = line.split(b" ", 1)[0].strip().lower()
        r = _REPLIES
        if word == b"connect":
            self.connected = True
            out.append(t.render(t.connect_reply, self.uuid))
            self._maybe_park(out)
        elif word == b"myevents":
            out.append(r["myevents_again"] if self.subscribed else r["myevents"])
            self.subscribed = True
            self._maybe_park(out)
        elif word == b"event":
            out.append(r["event"])
            self.subscribed = True
            self.nixed = self.nixed.difference(line.decode("ascii", "replace").upper().split()[1:])
            self._maybe_park(out)
        elif word == b"nixevent":
            # mod_event_socket clears these event_list entries, so myevents' set stops sending them
            names = [n for n in line.decode("ascii", "replace").upper().split()[1:] if n in MYEVENTS_SUBSCRIPTION]
            self.nixed = self.nixed.union(names)
            out.append(r["nixed"] if names else r["no_keywords"])
        elif word == b"filter":
            arg = line[7:].decode("utf-8", "replace").strip()
            head, _, value = arg.partition(" ")
            out.append(b"Content-Type: command/reply\nReply-Text: +OK filter added. [%s]=[%s]\n\n" % (
                head.encode(), value.encode()))  # fmt: skip
        elif word == b"linger":
            self.linger = True
            seconds = line[6:].strip()
            out.append(
                b"Content-Type: command/reply\nReply-Text: +OK will linger %s seconds\n\n" % seconds
                if seconds and seconds != b"0"
                else r["linger"]
            )
        elif word == b"nolinger":
            self.linger = False
            out.append(r["nolinger"])
        elif word == b"sendmsg":
            return self._sendmsg(rest, body, out)
        elif word == b"exit":
            out.append(r["bye"])
            out.append(t.render(t.final_notice(), self.uuid))
            return True
        elif word == b"api":
            out.append(b"Content-Type: api/response\nContent-Length: 3\n\n+OK")
        else:
            out.append(r["not_found"])
        return False

    def _maybe_park(self, out: list[bytes]) -> None:
        if self.connected and self.subscribed and not self.parked:
            self.parked = True
            if "CHANNEL_PARK" not in self.nixed:
                out.append(self.t.render(self.t.park(), self.uuid))

    def _sendmsg(self, rest: bytes, body: bytes, out: list[bytes]) -> bool:
        headers: dict[bytes, bytes] = {}
        for raw in rest.split(b"\n"):
            name, colon, value = raw.partition(b":")
            if colon:
                headers.setdefault(name.strip().lower(), value.strip())
        command = headers.get(b"call-command", b"").lower()
        out.append(_REPLIES["ok"])
        if self.app_hungup:
            return False  # the channel is gone: +OK and no effect (spec 2.6)
        if command == b"hangup":
            return self._hangup(headers.get(b"hangup-cause") or b"NORMAL_CLEARING", out)
        if command != b"execute":
            return False
        if self.first_execute is None:
            self.first_execute = time.perf_counter()
        app = headers.get(b"execute-app-name", b"").decode("utf-8", "replace")
        arg_b = headers.get(b"execute-app-arg")
        if arg_b is None and body:
            arg_b = body
        arg = (arg_b or b"").decode("utf-8", "replace")
        app_uuid = headers.get(b"event-uuid") or str(uuidlib.uuid4()).encode()
        lowered = app.lower()
        t = self.t
        started = "CHANNEL_EXECUTE" not in self.nixed
        if lowered == "hangup":
            start, _ = t.execute(app, arg, self.answered)
            if started:
                out.append(t.render(start, self.uuid, app_uuid))
            return self._hangup(arg_b or b"NORMAL_CLEARING", out)
        if lowered == "respond" and arg[:1] in ("4", "5", "6"):
            self.refused = True
        start, done = t.execute(app, arg, self.answered)
        if started:
            out.append(t.render(start, self.uuid, app_uuid))
        if lowered == "answer" and not self.answered:
            self.answered = True
            out.append(t.render(t.answer_event(), self.uuid))
        if lowered == "playback" and self.release is not None:
            # hold: the prompt plays until the run releases the calls. Commands are still answered
            # meanwhile, as FreeSWITCH's listener does: a server's liveness probe (api) must not find a
            # dead switch when the ramp to 10,000 held calls outlasts its probe interval
            import gevent
            from gevent.lock import Semaphore

            self.lock = self.lock or Semaphore()
            self._send(b"".join(out))
            out.clear()
            _HELD[0] += 1
            gevent.spawn(self._complete_when_released, t.render(done, self.uuid, app_uuid))
            return False
        out.append(t.render(done, self.uuid, app_uuid))
        return False

    def _hangup(self, cause: bytes, out: list[bytes]) -> bool:
        self.app_hungup = True
        cause_text = cause.decode("ascii", "replace").strip() or "NORMAL_CLEARING"
        out.append(self.t.render(self.t.hangup_sequence(cause_text, self.answered, self.nixed), self.uuid))
        if self.linger:
            out.append(self.t.render(self.t.linger_notice(), self.uuid))
            return False  # the socket stays open until exit or close (spec 2.6)
        out.append(self.t.render(self.t.final_notice(), self.uuid))
        return True


_REPLIES = replies()
_HELD = [0]  # calls of this process currently in a held playback (hold mode)


def summarize_outcome(outcomes: dict[str, int]) -> str:
    """``"N served, M refused, errors {...}"`` for logs."""
    errors = {k: v for k, v in outcomes.items() if k not in (SERVED, REFUSED)}
    return f"{outcomes.get(SERVED, 0)} served, {outcomes.get(REFUSED, 0)} refused, errors {errors}"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50": _percentile(values, 0.50),
        "p90": _percentile(values, 0.90),
        "p99": _percentile(values, 0.99),
        "max": max(values) if values else float("nan"),
    }


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (10,000 held calls need as many sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_load(spec: LoadSpec, progress: Any = None, held: Any = None, release_flag: Any = None) -> WorkerResult:
    """Run this process's share of a load phase (gevent, in this process); returns its result.

    ``progress``/``held``: shared counters the coordinator reads for the progress bar and for the
    hold phase; ``release_flag``: a ``multiprocessing.Event`` that ends held playbacks.
    """
    import gevent
    from gevent.event import Event as Flag
    from gevent.pool import Group

    raise_fd_limit()
    templates = CallTemplates()
    result = WorkerResult()
    group = Group()
    release = Flag() if spec.mode == "hold" else None
    cpu_start = _cpu()
    wall_start = time.perf_counter()
    result.started = time.time()

    def one(scheduled: float | None) -> None:
        started = time.perf_counter()
        if scheduled is not None:
            result.lag_ms.append((started - scheduled) * 1000)
        call = _Call(spec, templates, release)
        outcome = call.run(started)
        if call.first_execute is not None:
            (result.setup_ms if outcome == SERVED else result.refused_ms).append((call.first_execute - started) * 1000)
        result.calls += 1
        result.outcomes[outcome] += 1
        if progress is not None:
            progress.value += 1

    if spec.mode == "closed":
        stop_at = wall_start + spec.duration

        def loop() -> None:
            while time.perf_counter() < stop_at:
                one(None)

        for _ in range(spec.concurrency):
            group.spawn(loop)
        group.join()
    elif spec.mode == "open":
        interval = 1.0 / spec.rate if spec.rate > 0 else spec.duration
        count = int(spec.duration * spec.rate)
        for k in range(count):
            scheduled = wall_start + k * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            group.spawn(one, scheduled)
        group.join()
    elif spec.mode == "hold":
        interval = 1.0 / spec.rate if spec.rate > 0 else 0.0
        for k in range(spec.hold_calls):
            scheduled = wall_start + k * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            group.spawn(one, scheduled)

        def watch() -> None:
            while release_flag is None or not release_flag.is_set():
                if held is not None:
                    held.value = _HELD[0]
                gevent.sleep(0.05)
            assert release is not None
            release.set()

        watcher = gevent.spawn(watch)
        group.join()
        watcher.kill()
    else:
        raise ValueError(f"unknown mode {spec.mode!r}")
    result.wall_seconds = time.perf_counter() - wall_start
    result.cpu_seconds = _cpu() - cpu_start
    result.ended = time.time()
    return result


def _worker(spec: LoadSpec, progress: Any, held: Any, release_flag: Any, out: Any) -> None:
    if spec.cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, spec.cpus)
    from ..transport.collector import settle

    # the generator is the measuring instrument: a 20 ms collector pass here would be counted as the
    # server's setup latency
    settle()
    try:
        out.put(run_load(spec, progress, held, release_flag))
    except BaseException as exc:  # report instead of hanging the coordinator
        failed = WorkerResult()
        failed.outcomes[f"generator_crash:{type(exc).__name__}"] += 1
        out.put(failed)
        raise


class Workers:
    """Several generator processes running one load phase; poll ``completed``/``held`` while they run."""

    def __init__(self, spec: LoadSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.spec = spec
        self.release = ctx.Event()
        self._queue = ctx.Queue()
        self._progress = [ctx.Value("l", 0, lock=False) for _ in range(spec.processes)]
        self._held = [ctx.Value("l", 0, lock=False) for _ in range(spec.processes)]
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(spec.share(i), self._progress[i], self._held[i], self.release, self._queue),
                daemon=True,
            )
            for i in range(spec.processes)
        ]

    def start(self) -> None:
        for proc in self._procs:
            proc.start()

    @property
    def completed(self) -> int:
        return sum(value.value for value in self._progress)

    @property
    def held(self) -> int:
        return sum(value.value for value in self._held)

    def alive(self) -> bool:
        return any(proc.is_alive() for proc in self._procs) and self._queue.empty()

    def join(self, timeout: float | None = None) -> WorkerResult:
        total = WorkerResult()
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self._procs:
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            total.merge(self._queue.get(timeout=left))
        for proc in self._procs:
            proc.join(timeout=5)
        return total

    def kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
