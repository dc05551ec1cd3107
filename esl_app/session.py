"""One call's Event Socket conversation: handshake, completion tracking, hangup, DTMF, jobs.

The flow's greenlet calls the blocking methods; the connection's reader greenlet feeds
``_on_frame``, which only resolves waiters (never runs user code). Every execute carries its own
``Event-UUID`` and is resolved by the CHANNEL_EXECUTE_COMPLETE whose ``Application-UUID`` matches
(spec 3.4), never by application name (greenswitch G10/G11). A hangup fails every pending wait at once.
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import gevent
from gevent.event import AsyncResult
from gevent.event import Event as Flag
from gevent.queue import Empty, Queue

from .errors import CallHangup, CallTransferred, CommandError, CommandTimeout, ConnectionClosed
from .protocol import Event, Expand, Frame, FrameKind, Headers, ProtocolError, commands
from .transport import Connection
from .transport.waker import Waker, WakerSettings

log = logging.getLogger("esl_app.session")

WaitFor = Literal["complete", "start", "none"]
_HANGUP = object()  # wakes a DTMF reader when the call goes away


@dataclass(slots=True)
class SessionSettings:
    connect_timeout: float = 5.0
    command_timeout: float = 10.0  # replies to plain commands
    execute_timeout: float = 3600.0  # default for an application to complete
    linger_seconds: int | None = 10  # None: no linger (hangup events may then be cut, spec 2.6)
    hangup_wait: float = 2.0  # after the flow: how long to wait for CHANNEL_HANGUP_COMPLETE
    write_timeout: float = 10.0
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
    # a held call is mostly its raw connect reply and these objects: no per-instance dict
    __slots__ = (
        "_dtmf", "_event_waiters", "_jobs", "_jobs_subscribed", "_waiters", "answered", "channel_data", "closed",
        "connection", "events_received", "full", "hangup_by", "hangup_cause", "hangup_complete",
        "hangup_complete_event", "hung_up", "lingering", "mode", "name", "observer", "settings", "transferred",
        "uuid", "waker",
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
        self.hung_up = Flag()
        self.hangup_complete = Flag()
        self.closed = Flag()
        self._waiters: dict[str, _Waiter] = {}
        self._jobs: dict[str, AsyncResult] = {}
        self._event_waiters: list[tuple[Callable[[Event], bool], AsyncResult]] = []
        self._dtmf: Queue | None = None  # made on the first digit or DTMF wait (a Queue is ~2.5 kB per call)
        self._jobs_subscribed = False
        self.events_received = 0
        self.waker = Waker(self.connection, self.settings.waker)

    # -- handshake -------------------------------------------------------------------------------
    def connect(self) -> Headers:
        """``connect``, ``myevents`` and ``linger`` pipelined; returns the channel data."""
        settings = self.settings
        self.connection.start()
        try:
            connected = self.connection.send(commands.CONNECT)
            subscribed = self.connection.send(commands.MYEVENTS)
            lingered = (
                self.connection.send(commands.linger(settings.linger_seconds))
                if settings.linger_seconds is not None
                else None
            )
            assert connected is not None and subscribed is not None
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
    ) -> Event | None:
        """Run an application; by default block until its CHANNEL_EXECUTE_COMPLETE and return it.

        ``wait="start"`` returns at its CHANNEL_EXECUTE (for applications that run until hangup,
        like ``park`` or ``conference``), ``wait="none"`` once FreeSWITCH accepted the command.
        """
        self.raise_if_gone()
        deadline = timeout if timeout is not None else self.settings.execute_timeout
        app_uuid = str(uuid_module.uuid4())
        data = commands.execute(app, arg, event_uuid=app_uuid, event_lock=event_lock, loops=loops)
        waiter = _Waiter(wait)
        if wait != "none":
            self._waiters[app_uuid] = waiter  # registered before writing (spec 3.4)
        started = gevent.get_hub().loop.now()
        outcome = "error"
        try:
            reply = self._send(data)
            if wait == "none":
                # don't wait even for '+OK': on a static socket it only comes after the application
                # finished (greenswitch G14); a refusal is still reported, in the log
                reply.rawlink(lambda result: self._log_refused(app, result))
                outcome = "ok"
                return None
            # on a static socket the reply itself only comes when the application is done (spec 2.4)
            frame = self._get(reply, deadline, app)
            if not frame.ok:
                raise CommandError(f"execute {app}", frame.reply_text)
            remaining = max(0.0, deadline - (gevent.get_hub().loop.now() - started))
            if self.mode == "async" and self.settings.waker.enabled:
                # the completion must not sit in FreeSWITCH's 20 ms listener poll (spec 9)
                with self.waker:
                    event = self._get(waiter.result, remaining, app, reported=deadline)
            else:
                event = self._get(waiter.result, remaining, app, reported=deadline)
            outcome = "ok"
            return event
        except CallHangup:
            outcome = "hangup"
            raise
        except CommandTimeout:
            outcome = "timeout"
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
        frame = self._get(
            self._send(commands.api(command, *args)), timeout or self.settings.command_timeout, command
        )
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
            frame = self._get(
                self._send(commands.event("BACKGROUND_JOB")), self.settings.command_timeout, "event"
            )
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
        try:
            item = self._digits().get(timeout=timeout)
        except Empty:
            return None
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

    def wait_for_event(self, predicate: Callable[[Event], bool], timeout: float) -> Event:
        self.raise_if_gone()
        entry = (predicate, AsyncResult())
        self._event_waiters.append(entry)
        try:
            return self._get(entry[1], timeout, "event")
        finally:
            if entry in self._event_waiters:
                self._event_waiters.remove(entry)

    def wait_for_hangup(self, timeout: float | None = None) -> bool:
        return self.hung_up.wait(timeout)

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
            result = self.connection.send(data)
        except ConnectionClosed:
            raise self._ended() from None
        assert result is not None
        return result

    def _get(self, result: AsyncResult, timeout: float | None, what: str, reported: float | None = None) -> Any:
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            limit = reported if reported is not None else timeout
            raise CommandTimeout(f"{self.uuid or self.name}: {what} did not complete within {limit} s") from None
        except ConnectionClosed:
            raise self._ended() from None

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
        name = event.name
        ours = not self.uuid or event.unique_id in (None, self.uuid)
        if ours:
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
