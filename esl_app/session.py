"""One call's Event Socket conversation: handshake, completion tracking, hangup, DTMF, jobs.

The flow's greenlet calls the blocking methods; the connection's reader greenlet feeds
``_on_frame``, which only resolves waiters (never runs user code). Every execute carries its own
``Event-UUID`` and is resolved by the CHANNEL_EXECUTE_COMPLETE whose ``Application-UUID`` matches
(spec 3.4), never by application name (greenswitch G10/G11). A hangup fails every pending wait at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import gevent
from gevent.event import AsyncResult
from gevent.event import Event as Flag
from gevent.queue import Empty, Queue

from .errors import CallHangup, CallTransferred, CommandError, CommandTimeout, ConnectionClosed
from .protocol import Event, Expand, Frame, FrameKind, Headers, ProtocolError, commands
from .transport import Connection
from .transport.keepalive import KeepaliveSettings, enable_keepalive, has_keepalive
from .transport.waker import Waker, WakerSettings

log = logging.getLogger("esl_app.session")

WaitFor = Literal["complete", "start", "none"]
_HANGUP = object()  # wakes a DTMF reader when the call goes away
# the events of its own channel a session acts on (``_on_event``)
_CALL_EVENTS = frozenset(
    {
        "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "DTMF", "CHANNEL_ANSWER", "CHANNEL_BRIDGE",
        "CHANNEL_UNBRIDGE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
    }
)  # fmt: skip

# myevents' events that change nothing for a call (``_on_event``): the handshake nixes them, so the
# switch neither renders nor sends them. Of a plain answer-playback-hangup call's 13 events (~128 kB)
# that is 7 (~55 kB): CHANNEL_PARK and _UNPARK (async sockets), two CHANNEL_STATE, and a
# CHANNEL_EXECUTE per application. An execute waiting for a start asks for CHANNEL_EXECUTE back.
DEFAULT_NIX_EVENTS = ("CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_STATE", "CHANNEL_EXECUTE")
# what may be nixed: myevents' set less the events the session acts on (CHANNEL_EXECUTE comes back on demand)
NIXABLE_EVENTS = (commands.MYEVENTS_SUBSCRIPTION - _CALL_EVENTS) | {"CHANNEL_EXECUTE"}


# FreeSWITCH applications that play media or wait for the caller: they complete seconds after they
# start, so the LF waker backs off for them (WakerSettings.long_max_interval) instead of writing every ms
LONG_RUNNING_APPS = frozenset(
    {
        "playback", "play_and_get_digits", "read", "record", "sleep", "say", "phrase", "speak",
        "endless_playback", "gentones", "bridge", "conference", "park", "play_and_detect_speech",
    }
)  # fmt: skip


@dataclass(slots=True)
class SessionSettings:
    connect_timeout: float = 5.0
    command_timeout: float = 10.0  # replies to plain commands
    execute_timeout: float = 3600.0  # default for an application to complete
    linger_seconds: int | None = 10  # None: no linger (hangup events may then be cut, spec 2.6)
    hangup_wait: float = 2.0  # after the flow: how long to wait for CHANNEL_HANGUP_COMPLETE
    write_timeout: float = 10.0
    # after a verb's timeout the application is stopped (api uuid_break); if its completion has not
    # come this long after, the call is killed (api uuid_kill): an event-locked application would
    # otherwise hold every later command, the hangup included, until it ends by itself (spec 2.4)
    stop_wait: float = 2.0
    # a flow ending with an error: the bound for each of its cleanup commands (respond 503, hangup)
    cleanup_timeout: float = 5.0
    # every wait longer than this asks FreeSWITCH ``api uuid_exists``; no reply within
    # liveness_timeout closes the connection (a hung or unreachable switch frees the call's slot);
    # None: no probes (TCP keepalive still detects a dead host)
    liveness_interval: float | None = 30.0
    liveness_timeout: float = 10.0
    # a wait longer than this packs the call's connect reply (Headers.pack: zlib, ~11 kB -> well under
    # 4 kB on a real SIP call) while the call sits in a playback, a bridge, a queue; None: never
    pack_after: float | None = 1.0
    # sent as ``nixevent`` in the handshake (``full`` sockets; a socket without it refuses the command,
    # harmlessly); ``subscribe()`` asks for one back. Empty: every event of myevents' set.
    nix_events: tuple[str, ...] = DEFAULT_NIX_EVENTS
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    waker: WakerSettings = field(default_factory=WakerSettings)  # async sockets only


@dataclass(slots=True)
class _Waiter:
    wait: WaitFor
    result: AsyncResult = field(default_factory=AsyncResult)


class SessionObserver(Protocol):
    """Receives what happens on calls, for metrics; must be cheap and must not raise."""

    def execute_done(self, app: str, seconds: float, outcome: str) -> None:
        """An execute finished: outcome is ``ok``, ``hangup``, ``timeout`` or ``error``."""

    def protocol_error(self, error: Exception) -> None:
        """The peer sent bytes that could not be framed or parsed; the call is being ended."""


class BackgroundJob:
    """A ``bgapi`` job; ``wait()`` returns its output (the BACKGROUND_JOB event's body)."""

    def __init__(self, job_uuid: str, command: str, result: AsyncResult) -> None:
        self.uuid = job_uuid
        self.command = command
        self._result = result

    def ready(self) -> bool:
        return self._result.ready()

    def wait(self, timeout: float | None = 60.0) -> str:
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout:
            raise CommandTimeout(f"bgapi job {self.uuid} ({self.command}) not done within {timeout} s") from None


class Session:
    in_process = False  # the Event Socket; esl_app.modpython.session.InProcessSession runs inside FreeSWITCH

    # a held call is mostly its raw connect reply and these objects: no per-instance dict
    __slots__ = (
        "_busy", "_dtmf", "_event_waiters", "_jobs", "_jobs_subscribed", "_nixed", "_riders", "_waiters", "answered",
        "channel_data",
        "closed", "connection", "connection_lost", "events_received", "full", "hangup_by", "hangup_cause",
        "hangup_complete", "hangup_complete_event", "hung_up", "last_execute", "lingering", "mode", "name", "observer",
        "other_leg",
        "settings", "transferred", "uuid", "waker",
    )  # fmt: skip

    def __init__(
        self,
        sock: Any,
        settings: SessionSettings | None = None,
        *,
        name: str = "",
        observer: SessionObserver | None = None,
    ) -> None:
        self.settings = settings or SessionSettings()
        self.name = name
        self.observer = observer
        self.connection = Connection(
            sock, self._on_frame, self._on_close, name=name, write_timeout=self.settings.write_timeout
        )
        self.channel_data = Headers()
        self.uuid = ""
        self.mode: Literal["async", "static"] = "async"
        self.full = True
        self.lingering = False  # linger accepted by FreeSWITCH
        self.answered = False
        self.transferred = False
        self.hangup_cause: str | None = None
        self.hangup_by: Literal["app", "peer"] | None = None
        self.hangup_complete_event: Event | None = None
        self.other_leg: str | None = None  # the bridged B-leg's uuid, between CHANNEL_BRIDGE and UNBRIDGE
        self.hung_up = Flag()
        self.hangup_complete = Flag()
        self.closed = Flag()
        # the connection closed with no word of a hangup (no CHANNEL_HANGUP, no disconnect notice):
        # the channel may well be up, and FreeSWITCH goes on with the dialplan's next action
        self.connection_lost = False
        self._waiters: dict[str, _Waiter] = {}
        self._jobs: dict[str, AsyncResult] = {}
        self._event_waiters: list[tuple[Callable[[Event], bool], AsyncResult]] = []
        self._dtmf: Queue | None = None  # made on the first digit or DTMF wait (a Queue is ~2.5 kB per call)
        self._jobs_subscribed = False
        # commands that keep FreeSWITCH's listener from reading (an api runs on it, a static socket's
        # execute runs inline on it: spec 2.4, 4.1); a liveness probe would wait behind them
        self._busy = 0
        # commands that go out in the same write as the next command (a checkpoint: ``ride_along``)
        self._riders: list[tuple[bytes, Callable[[AsyncResult], None]]] = []
        self.events_received = 0
        # myevents' events FreeSWITCH does not send this socket (the handshake's nixevent, when it took)
        self._nixed: frozenset[str] = frozenset()
        # (application, wall time) of the last execute written: latency figures end where the command left
        self.last_execute: tuple[str, float] | None = None
        self.waker = Waker(self.connection, self.settings.waker)

    # -- handshake -------------------------------------------------------------------------------
    def connect(self) -> Headers:
        """``connect``, ``myevents``, ``linger`` and ``nixevent`` pipelined; returns the channel data."""
        settings = self.settings
        # a crashed or unreachable switch host answers nothing, not even a FIN: let TCP find out
        if not has_keepalive(self.connection.sock):  # inherited from the server's listener (Linux)
            enable_keepalive(self.connection.sock, settings.keepalive)
        self.connection.start()
        try:
            handshake = [commands.CONNECT, commands.MYEVENTS]
            if settings.linger_seconds is not None:
                handshake.append(commands.linger(settings.linger_seconds))
            if settings.nix_events:
                handshake.append(commands.nixevent(*settings.nix_events))
            # one write, not four: FreeSWITCH reads and runs them one after the other anyway (spec 4.3)
            connected, subscribed, *rest = self.connection.send_batch(handshake)
            lingered = rest.pop(0) if settings.linger_seconds is not None else None
            nixed = rest.pop(0) if settings.nix_events else None
            frame = self._get(connected, settings.connect_timeout, "connect")
        except ConnectionClosed:
            # the call ended before connect: the only frame was the final notice (spec 2.2)
            raise CallHangup("the call ended before connect", self.hangup_cause) from None
        if not frame.is_connect_reply:
            raise CommandError("connect", frame.reply_text or frame.content_type)
        self.channel_data = frame.headers
        self.uuid = frame.headers.get("Unique-ID") or frame.headers.get("Channel-Unique-ID") or ""
        self.mode = "static" if (frame.headers.get("Socket-Mode") or "").lower() == "static" else "async"
        self.full = (frame.headers.get("Control") or "full").lower() == "full"
        self.answered = (frame.headers.get("Answer-State") or "").lower() == "answered"
        self.connection.name = self.name = self.uuid or self.name
        # the flow starts now: the myevents and linger replies come before the reply of its first
        # command anyway (FIFO), so waiting for them would only add a round trip to every decision
        subscribed.rawlink(self._on_subscribed)
        if lingered is not None:
            lingered.rawlink(self._on_linger)
        if nixed is not None and self.full:  # without 'full' the switch refuses nixevent (spec 2.3)
            self._nixed = frozenset(settings.nix_events)
            nixed.rawlink(self._on_nixed)
        return self.channel_data

    # -- commands --------------------------------------------------------------------------------
    def execute(
        self,
        app: str,
        arg: str | Expand | None = None,
        *,
        timeout: float | None = None,
        wait: WaitFor = "complete",
        event_lock: bool = True,
        loops: int | None = None,
        wake: bool = True,
        set_first: Mapping[str, str] | None = None,
        by_api: bool = False,
    ) -> Event | None:
        """Run an application; by default block until its CHANNEL_EXECUTE_COMPLETE and return it.

        ``wait="start"`` returns at its CHANNEL_EXECUTE (for applications that run until hangup,
        like ``park`` or ``conference``), ``wait="none"`` once FreeSWITCH accepted the command.
        ``wake=False``: no LF waker while waiting (a completion nobody needs within 20 ms: spec 9).
        ``set_first``: channel variables set before it runs, in the same write (one syscall), waited for
        by nobody: ``set`` applications queued ahead of it, or with ``by_api`` on an async ``full``
        socket one ``api uuid_setvar_multi`` (one reply and no events, where each ``set`` makes a
        reply and two events; literal values only: one with ``;``, ``$`` or CR/LF takes the ``set``
        applications, which escape it). A refusal is logged.
        """
        self.raise_if_gone()
        if wait == "start" and "CHANNEL_EXECUTE" in self._nixed:
            self.subscribe("CHANNEL_EXECUTE")
        deadline = timeout if timeout is not None else self.settings.execute_timeout
        app_uuid = str(uuid_module.uuid4())
        data = commands.execute(app, arg, event_uuid=app_uuid, event_lock=event_lock, loops=loops)
        waiter = _Waiter(wait)
        if wait != "none":
            self._waiters[app_uuid] = waiter  # registered before writing (spec 3.4)
        started = gevent.get_hub().loop.now()
        outcome = "error"
        replied = False
        try:
            reply = self._send_preceded(set_first, data, by_api) if set_first else self._send(data)
            self.last_execute = (app, time.time())
            if self.mode == "static":
                # the application runs inline on the listener's thread until its reply (spec 2.4)
                self._busy += 1
                reply.rawlink(self._listener_free)
            if wait == "none":
                # don't wait even for '+OK': on a static socket it only comes after the application
                # finished (greenswitch G14); a refusal is still reported, in the log
                reply.rawlink(lambda result: self._log_refused(app, result))
                outcome = "ok"
                return None
            # on a static socket the reply itself only comes when the application is done (spec 2.4)
            frame = self._get(reply, deadline, app, probe=True)
            replied = True
            if not frame.ok:
                raise CommandError(f"execute {app}", frame.reply_text)
            # the command, its reply and reply frame would live as long as the wait (~1 kB per held call)
            del data, reply, frame
            remaining = max(0.0, deadline - (gevent.get_hub().loop.now() - started))
            if self.mode == "async" and wake and self.settings.waker.enabled and not waiter.result.ready():
                # the completion must not sit in FreeSWITCH's 20 ms listener poll (spec 9); often it came
                # in the same read as the reply, and then there is nothing to wake
                with self.waker.around(long=app.lower() in LONG_RUNNING_APPS):
                    event = self._get(waiter.result, remaining, app, reported=deadline, probe=True)
            else:
                event = self._get(waiter.result, remaining, app, reported=deadline, probe=True)
            outcome = "ok"
            return event
        except CallHangup:
            outcome = "hangup"
            raise
        except CommandTimeout:
            outcome = "timeout"
            if wait == "complete":
                self._stop_application(app, waiter, replied)
            raise
        finally:
            self._waiters.pop(app_uuid, None)
            if self.observer is not None:
                self.observer.execute_done(app, gevent.get_hub().loop.now() - started, outcome)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self.hung_up.is_set() or self.connection.closed:
            return
        try:
            frame = self._get(self._send(commands.hangup(cause)), self.settings.command_timeout, "hangup")
        except CallHangup:
            return
        if not frame.ok:
            raise CommandError("hangup", frame.reply_text)
        self._mark_hangup(cause, by="app")

    def api(self, command: str, *args: str, timeout: float | None = None) -> str:
        """``api`` (blocks FreeSWITCH's listener for this socket until it returns, spec 4.1)."""
        self._check_open()
        reply = self._send(commands.api(command, *args))
        self._busy += 1  # FreeSWITCH's listener runs it: no probe could be answered meanwhile (spec 4.1)
        reply.rawlink(self._listener_free)
        frame = self._get(reply, timeout or self.settings.command_timeout, command)
        if frame.kind is FrameKind.REPLY:  # a gated socket answers api with a command/reply (spec 4.1)
            raise CommandError(f"api {command}", frame.reply_text)
        return frame.reply_text

    def api_many(self, calls: list[tuple[str, ...]], timeout: float | None = None) -> list[str]:
        """Several ``api`` commands written back to back (one round trip); their outputs, in order."""
        self._check_open()
        sent = [(call[0], self._send(commands.api(*call))) for call in calls]
        outputs = []
        for command, reply in sent:
            frame = self._get(reply, timeout or self.settings.command_timeout, command)
            if frame.kind is FrameKind.REPLY:  # a gated socket answers api with a command/reply (spec 4.1)
                raise CommandError(f"api {command}", frame.reply_text)
            outputs.append(frame.reply_text)
        return outputs

    def bgapi(self, command: str, *args: str) -> BackgroundJob:
        self._check_open()
        if not self._jobs_subscribed:
            # myevents alone does not deliver BACKGROUND_JOB; with it, only this call's jobs pass (spec 2.5)
            frame = self._get(self._send(commands.event("BACKGROUND_JOB")), self.settings.command_timeout, "event")
            if not frame.ok:
                raise CommandError("event plain BACKGROUND_JOB", frame.reply_text)
            self._jobs_subscribed = True
        job_uuid = str(uuid_module.uuid4())
        result = AsyncResult()
        self._jobs[job_uuid] = result
        frame = self._get(
            self._send(commands.bgapi(command, *args, job_uuid=job_uuid)), self.settings.command_timeout, command
        )
        if not frame.ok:
            self._jobs.pop(job_uuid, None)
            raise CommandError(f"bgapi {command}", frame.reply_text)
        return BackgroundJob(job_uuid, command, result)

    def subscribe(self, *names: str) -> None:
        """Ask again for events of myevents' set that the handshake nixed (``nix_events``), from the next
        command on: FreeSWITCH runs a socket's commands in the order written (spec 4.3), so an event
        made by a command written after this one is delivered. Its reply is not waited for."""
        wanted = [name for name in names if name in self._nixed]
        if not wanted:
            return
        self._check_open()
        self._nixed = self._nixed.difference(wanted)
        self._send(commands.event(*wanted)).rawlink(self._on_resubscribed)

    def send_command(self, data: bytes, what: str, timeout: float | None = None) -> Frame:
        """Any other command (already serialized); returns its reply frame."""
        self._check_open()
        return self._get(self._send(data), timeout or self.settings.command_timeout, what)

    # -- waiting ---------------------------------------------------------------------------------
    def _digits(self) -> Queue:
        if self._dtmf is None:
            self._dtmf = Queue()
            if self.hung_up.is_set():
                self._dtmf.put(_HANGUP)
        return self._dtmf

    def next_dtmf(self, timeout: float) -> str | None:
        """The next digit from DTMF events, or None after ``timeout`` seconds."""
        self.raise_if_gone()
        digits = self._digits()
        interval = self.settings.liveness_interval
        while True:
            step = timeout if interval is None else min(timeout, interval)
            try:
                item = digits.get(timeout=step)
                break
            except Empty:
                timeout -= step
                if timeout <= 0:
                    return None
                self._check_alive()
        if item is _HANGUP:
            self._dtmf.put(_HANGUP)
            raise self._ended()
        return item

    def clear_dtmf(self) -> None:
        if self._dtmf is None:
            return
        while True:
            try:
                item = self._dtmf.get_nowait()
            except Empty:
                return
            if item is _HANGUP:
                self._dtmf.put(_HANGUP)
                return

    def wait_for_event(
        self, predicate: Callable[[Event], bool], timeout: float, *, events: tuple[str, ...] = ()
    ) -> Event:
        """The first event ``predicate`` accepts. ``events``: the names it waits for, so that any the
        handshake nixed are asked for first (a wait for CHANNEL_STATE, say)."""
        self.raise_if_gone()
        if events:
            self.subscribe(*events)
        entry = (predicate, AsyncResult())
        self._event_waiters.append(entry)
        try:
            return self._get(entry[1], timeout, "event", probe=True)
        finally:
            if entry in self._event_waiters:
                self._event_waiters.remove(entry)

    def wait_for_hangup(self, timeout: float | None = None) -> bool:
        """True once the call is down; False after ``timeout`` (None: no limit, but a switch that stops
        answering liveness probes ends the wait, and the call, within about liveness_interval)."""
        try:
            return self._wait_held(self.hung_up.wait, timeout)
        except (CallHangup, CallTransferred):
            return self.hung_up.is_set() or self.connection.closed

    def raise_if_gone(self) -> None:
        if self.hung_up.is_set() or self.transferred or self.connection.closed:
            raise self._ended()

    # -- end of the call -------------------------------------------------------------------------
    def finish(self) -> None:
        """After the flow: wait briefly for the hangup record if lingering, then ``exit`` and close."""
        # a static socket never gets CHANNEL_HANGUP_COMPLETE (spec 2.6): don't wait for it there
        if self.hung_up.is_set() and self.lingering and self.mode == "async" and not self.hangup_complete.is_set():
            gevent.wait([self.hangup_complete, self.closed], timeout=self.settings.hangup_wait, count=1)
        if not self.connection.closed:
            try:
                # exit: FreeSWITCH answers '+OK bye' and the final notice; the call itself stays as it is
                self.connection.send(commands.EXIT)  # its '+OK bye' is not waited for
                self.closed.wait(0.5)
            except ConnectionClosed:
                pass
            self.connection.close()

    # -- internals -------------------------------------------------------------------------------
    def _on_subscribed(self, result: AsyncResult) -> None:
        frame = result.value if result.successful() else None
        if frame is not None and not frame.ok:
            # no events: no completion would ever arrive; end this socket so the dialplan's fallback runs
            log.error("%s: myevents refused (%s): closing the socket", self.uuid, frame.reply_text)
            self.connection.close()

    def _on_linger(self, result: AsyncResult) -> None:
        frame = result.value if result.successful() else None
        if frame is None:
            return
        self.lingering = frame.ok
        if not frame.ok:
            # without 'full' linger is refused: say so instead of silently going on (greenswitch G12)
            log.warning(
                "%s: linger refused (%s): socket without 'full'? hangup events may be cut", self.uuid, frame.reply_text
            )

    def _on_nixed(self, result: AsyncResult) -> None:
        frame = result.value if result.successful() else None
        if frame is not None and not frame.ok:
            self._nixed = frozenset()  # nothing was taken back: every event still comes
            log.warning("%s: nixevent refused (%s): receiving all of myevents' events", self.uuid, frame.reply_text)

    def _on_resubscribed(self, result: AsyncResult) -> None:
        frame = result.value if result.successful() else None
        if frame is not None and not frame.ok:
            log.warning("%s: event subscription refused: %s", self.uuid, frame.reply_text)

    def _log_refused(self, app: str, result: AsyncResult) -> None:
        frame = result.value if result.successful() else None
        if frame is not None and not frame.ok:
            log.warning("%s: execute %s refused: %s", self.uuid, app, frame.reply_text)

    def _ended(self) -> CallHangup | CallTransferred:
        if self.transferred and not self.hung_up.is_set():
            return CallTransferred("the call was transferred out of this application")
        cause = self.hangup_cause
        if self.connection.closed and not self.hung_up.is_set():
            return CallHangup(f"the Event Socket connection closed ({self.connection.close_reason})", cause)
        return CallHangup(f"the call was hung up ({cause or 'cause unknown'})", cause)

    def _check_open(self) -> None:
        if self.connection.closed:
            raise self._ended()

    def _send(self, data: bytes) -> AsyncResult:
        try:
            if self._riders:
                return self._send_with_riders(data)
            result = self.connection.send(data)
        except ConnectionClosed:
            raise self._ended() from None
        assert result is not None
        return result

    def ride_along(self, data: bytes, on_reply: Callable[[AsyncResult], None], *, replace: bool = False) -> None:
        """Write ``data`` (a serialized command) together with the next command, in one write, without
        waiting for its reply: no round trip of its own. FreeSWITCH processes commands in order and
        answers each one in order (spec 4.3), so it takes effect before that next command runs.
        ``on_reply`` gets its reply (or the failure). ``replace``: drop the riders still waiting."""
        if replace:
            self._riders.clear()
        self._riders.append((data, on_reply))

    def _send_preceded(self, values: Mapping[str, str], data: bytes, by_api: bool) -> AsyncResult:
        """``data`` after the riders and what sets ``values``, in one write."""
        literal = not any(c in v for v in values.values() for c in ";$\r\n")
        by_api = by_api and self.full and self.mode == "async" and literal
        if by_api:
            assignments = ";".join(f"{name}={value}" for name, value in values.items())
            first = [commands.api("uuid_setvar_multi", self.uuid, assignments)]
        else:
            first = [commands.execute("set", f"{name}={value}", event_uuid=str(uuid_module.uuid4()))
                     for name, value in values.items()]  # fmt: skip
        riders, self._riders = self._riders, []
        try:
            results = self.connection.send_batch([*(rider for rider, _ in riders), *first, data])
        except ConnectionClosed:
            raise self._ended() from None
        for (_, on_reply), result in zip(riders, results, strict=False):
            self._track_rider(result, on_reply)
        for reply in results[len(riders) : -1]:
            if by_api or self.mode == "static":  # the listener runs it (api, spec 4.1; static, 2.4)
                self._busy += 1
                reply.rawlink(self._listener_free)
            reply.rawlink(self._log_set_refused)
        return results[-1]

    def _log_set_refused(self, result: AsyncResult) -> None:
        frame = result.value if result.successful() else None
        if frame is not None and frame.reply_text.startswith("-"):  # -ERR, -USAGE
            log.warning("%s: variables before an execute not set: %s", self.uuid, frame.reply_text.strip())

    def _send_with_riders(self, data: bytes) -> AsyncResult:
        riders, self._riders = self._riders, []
        results = self.connection.send_batch([*(rider for rider, _ in riders), data])
        for (_, on_reply), result in zip(riders, results[:-1], strict=True):
            self._track_rider(result, on_reply)
        return results[-1]

    def _track_rider(self, result: AsyncResult, on_reply: Callable[[AsyncResult], None]) -> None:
        self._busy += 1  # an api rider runs on FreeSWITCH's listener (spec 4.1)
        result.rawlink(self._listener_free)
        result.rawlink(on_reply)

    def _get(
        self,
        result: AsyncResult,
        timeout: float | None,
        what: str,
        reported: float | None = None,
        *,
        probe: bool = False,
    ) -> Any:
        if probe:
            settings = self.settings
            interval, pack_after = settings.liveness_interval, settings.pack_after
            if (interval is not None and (timeout is None or timeout > interval)) or (
                pack_after is not None and (timeout is None or timeout > pack_after)
            ):
                return self._get_long(result, timeout, what, reported)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            limit = reported if reported is not None else timeout
            raise CommandTimeout(f"{self.uuid or self.name}: {what} did not complete within {limit} s") from None
        except ConnectionClosed:
            raise self._ended() from None

    def _get_long(self, result: AsyncResult, timeout: float | None, what: str, reported: float | None) -> Any:
        def timed_out() -> CommandTimeout:
            limit = reported if reported is not None else timeout
            return CommandTimeout(f"{self.uuid or self.name}: {what} did not complete within {limit} s")

        def ready(step: float | None) -> bool:
            try:
                # wait() times out quietly, so a gevent.Timeout here is the flow's own bound: it ends
                # the wait as in _get, while the end of a step only leads to a pack or a probe
                result.wait(step)
            except gevent.Timeout:
                raise timed_out() from None
            return result.ready()

        if not self._wait_held(ready, timeout):
            raise timed_out()
        try:
            return result.get()
        except ConnectionClosed:
            raise self._ended() from None

    def _wait_held(self, wait: Callable[[float | None], bool], timeout: float | None) -> bool:
        """A long wait (``wait(step)``: True once done); False after ``timeout``. After ``pack_after``
        seconds the call counts as held and its connect reply is packed (``Headers.pack``); every
        ``liveness_interval`` seconds FreeSWITCH is asked whether the call lives (``_check_alive``)."""
        interval, pack_after = self.settings.liveness_interval, self.settings.pack_after
        loop = gevent.get_hub().loop
        now = loop.now()
        deadline = None if timeout is None else now + timeout
        next_probe = None if interval is None else now + interval
        pack_at = None if pack_after is None else now + pack_after
        while True:
            marks = [mark for mark in (deadline, next_probe, pack_at) if mark is not None]
            if wait(max(0.0, min(marks) - loop.now()) if marks else None):
                return True
            now = loop.now()
            if deadline is not None and now >= deadline:
                return False
            if pack_at is not None and now >= pack_at:
                pack_at = None
                self.channel_data.pack()
            if next_probe is not None and interval is not None and now >= next_probe:
                self._check_alive()
                next_probe = loop.now() + interval

    def _check_alive(self) -> None:
        """``api uuid_exists``: no reply within liveness_timeout closes the connection (the switch host
        is gone or hung); ``false`` means the call ended without an event saying so. Raises CallEnded."""
        if self.connection.closed:
            raise self._ended()
        if self._busy or not self.uuid:
            return  # the listener is running an api or a static socket's application: no answer yet
        timeout = self.settings.liveness_timeout
        try:
            frame = self.connection.request(commands.api("uuid_exists", self.uuid), timeout)
        except ConnectionClosed:
            raise self._ended() from None
        except CommandTimeout:
            log.error("%s: FreeSWITCH did not answer a liveness probe within %s s: closing the connection",
                      self.uuid, timeout)  # fmt: skip
            self.connection.close(ConnectionClosed(f"no answer to a liveness probe within {timeout} s"))
            raise self._ended() from None
        # without 'full' the probe is refused, but any reply shows the switch is alive
        if frame.kind is FrameKind.API and frame.reply_text.strip() == "false":
            log.warning("%s: the channel no longer exists on FreeSWITCH", self.uuid)
            self._mark_hangup(None)
            raise self._ended()

    def _stop_application(self, app: str, waiter: _Waiter, replied: bool) -> None:
        """After a verb's timeout: stop the application so later commands (the hangup too) can run.

        Executes carry ``event-lock``, so nothing queued behind a running application runs before it
        ends (spec 2.4). ``api uuid_break`` stops media applications at once (transcript 10). An answered
        bridge ends when its B-leg is killed, and the call stays ours (``hangup_after_bridge=false``).
        What neither stops (park, conference, a bridge still ringing) is ended with ``api uuid_kill``
        of the call itself. A static socket runs the application inline and reads nothing meanwhile,
        and a socket without ``full`` cannot send ``api``: the connection is closed, freeing this side
        at once (the dialplan goes on once the application ends). Every step is bounded by
        command_timeout and stop_wait; docs/failures.md.
        """
        if self.connection.closed or self.hung_up.is_set() or self.transferred:
            return
        if not replied or self.mode == "static" or not self.full:
            why = "no reply to the execute" if not replied else "it cannot be stopped over this socket"
            log.warning("%s: %s timed out and %s: closing the connection", self.uuid, app, why)
            self.connection.close(ConnectionClosed(f"{app} timed out"))
            return
        settings = self.settings
        steps: list[tuple[str, tuple[str, ...], bool]] = [("uuid_break", (self.uuid,), False)]
        if app == "bridge" and self.other_leg:
            steps = [("uuid_kill", (self.other_leg, "ALLOTTED_TIMEOUT"), False)]
        steps.append(("uuid_kill", (self.uuid, "NORMAL_TEMPORARY_FAILURE"), True))
        for command, args, ends_call in steps:
            try:
                frame = self.connection.request(commands.api(command, *args), settings.command_timeout)
            except ConnectionClosed:
                return
            except CommandTimeout:
                log.error("%s: no reply to %s: closing the connection", self.uuid, command)
                self.connection.close(ConnectionClosed(f"no reply to {command}"))
                return
            log.warning("%s: %s timed out: %s %s -> %s", self.uuid, app, command, args[0], frame.reply_text.strip())
            with self.waker if self.settings.waker.enabled else contextlib.nullcontext():
                gone = self.hung_up if ends_call else waiter.result
                gevent.wait([gone, self.closed], timeout=settings.stop_wait, count=1)
            if (not ends_call and waiter.result.ready()) or self.hung_up.is_set() or self.connection.closed:
                return
        log.error("%s: %s still running after uuid_kill: closing the connection", self.uuid, app)
        self.connection.close(ConnectionClosed(f"{app} could not be stopped"))

    def _listener_free(self, _: AsyncResult) -> None:
        self._busy -= 1

    def _on_frame(self, frame: Frame) -> None:
        if frame.is_event:
            try:
                event = frame.event()
            except ProtocolError as exc:
                log.error("%s: malformed event from FreeSWITCH, ending the call: %s", self.uuid, exc)
                self.hangup_cause = self.hangup_cause or "ESL_PROTOCOL_ERROR"
                if self.observer is not None:
                    self.observer.protocol_error(exc)
                gevent.spawn(self._abort_after_protocol_error)
                return
            self._on_event(event)
        elif frame.kind is FrameKind.DISCONNECT:
            # linger notice: "call gone, socket still open", events may still follow (spec 2.6);
            # final notice: the socket closes now. Either way the call is no longer ours.
            self._mark_hangup(None)
        elif frame.kind is FrameKind.LOG:
            log.debug("%s: log/data %r", self.uuid, frame.body[:200])
        else:
            log.warning("%s: ignoring unexpected %r frame", self.uuid, frame.content_type)

    def _on_event(self, event: Event) -> None:
        self.events_received += 1
        name = event.name  # the first line: read without looking further into the ~10 kB event
        # half of a call's events change nothing here (CHANNEL_PARK, _STATE, _UNPARK, CHANNEL_EXECUTE
        # when no verb waits for a start): their Unique-ID is not even looked up
        if name in _CALL_EVENTS and (
            not (name == "CHANNEL_EXECUTE" and all(w.wait != "start" for w in self._waiters.values()))
            and (not self.uuid or event.unique_id in (None, self.uuid))
        ):
            if name == "CHANNEL_EXECUTE_COMPLETE" or name == "CHANNEL_EXECUTE":
                waiter = self._waiters.get(event.get("Application-UUID") or "")
                if (
                    waiter is not None
                    and (name == "CHANNEL_EXECUTE_COMPLETE" or waiter.wait == "start")
                    and not waiter.result.ready()
                ):
                    waiter.result.set(event)
            elif name == "DTMF":
                digit = event.get("DTMF-Digit")
                if digit:
                    self._digits().put(digit)
            elif name == "CHANNEL_ANSWER":
                self.answered = True
            elif name == "CHANNEL_BRIDGE":
                self.other_leg = event.get("Bridge-B-Unique-ID") or event.get("Other-Leg-Unique-ID")
            elif name == "CHANNEL_UNBRIDGE":
                self.other_leg = None
            elif name == "CHANNEL_HANGUP":
                self._mark_hangup(event.get("Hangup-Cause"))
            elif name == "CHANNEL_HANGUP_COMPLETE":
                self.hangup_complete_event = event
                self._mark_hangup(event.get("Hangup-Cause"))
                self.hangup_complete.set()
        if name == "BACKGROUND_JOB":
            job = self._jobs.pop(event.get("Job-UUID") or "", None)
            if job is not None:
                job.set(event.body)
        if not self._event_waiters:
            return
        for predicate, result in list(self._event_waiters):
            try:
                matched = predicate(event)
            except Exception:
                log.exception("%s: event predicate failed", self.uuid)
                matched = False
            if matched and not result.ready():
                result.set(event)

    def _mark_hangup(self, cause: str | None, by: Literal["app", "peer"] = "peer") -> None:
        if cause:
            self.hangup_cause = cause
        if self.hung_up.is_set():
            return
        self.hangup_by = by
        self.hung_up.set()
        error = self._ended()
        for waiter in list(self._waiters.values()):
            if not waiter.result.ready():
                waiter.result.set_exception(error)
        for _, result in self._event_waiters:
            if not result.ready():
                result.set_exception(error)
        if self._dtmf is not None:
            self._dtmf.put(_HANGUP)

    def _on_close(self, reason: BaseException | None) -> None:
        if isinstance(reason, ProtocolError):
            self.hangup_cause = self.hangup_cause or "ESL_PROTOCOL_ERROR"
            if self.observer is not None:
                self.observer.protocol_error(reason)
        if not self.hung_up.is_set() and not self.transferred:
            self.connection_lost = True
        self._mark_hangup(None)
        error = ConnectionClosed(f"connection closed before the job finished ({reason})")
        for job in self._jobs.values():
            if not job.ready():
                job.set_exception(error)
        self._jobs.clear()
        self.closed.set()

    def _abort_after_protocol_error(self) -> None:
        # the stream can no longer be trusted for reading, but writing still works: end the call cleanly
        with contextlib.suppress(Exception):
            self.connection.send(commands.hangup("NORMAL_TEMPORARY_FAILURE"), expect_reply=False)
        self.connection.close()
