"""The inbound Event Socket client: esl-app connects to a FreeSWITCH node's port 8021 and stays there.

One ``InboundClient`` per node. ``start()`` runs a connect loop in a greenlet: TCP connect, wait for
``auth/request`` (or ``text/rude-rejection``: the node's ACL refused us), ``auth``, ``event
plain|json ...`` and the filters; then it waits until the connection ends and starts over with a
jittered exponential backoff. Everything is re-done after each reconnect (spec 5.1, 5.2).

On the wire it is the same sans-IO codec and ``Connection`` as the outbound server: commands are
pipelined, replies matched in order (FreeSWITCH answers every command once, in order, spec 4.3), and
events go to a queue drained by one dispatcher greenlet, so a slow ``on_event`` handler never delays
a reply, and events reach it in arrival order.

* ``api(command)`` returns the body (FreeSWITCH reports failures as ``-ERR ...`` text in the body;
  ``api_ok`` raises ``CommandFailed`` for them).
* ``bgapi(command)`` sends the command with a ``Job-UUID`` header that esl-app chose (FreeSWITCH
  honours it, mod_event_socket.c), registers the job *before* writing, and returns a
  ``BackgroundJob`` at once: its result (the BACKGROUND_JOB body) can be awaited even before the
  ``+OK Job-UUID`` reply arrives, and the reply is checked when it does. If the connection drops
  before the result, the job fails with ``JobLost``: the command may or may not have run, so the
  caller must ask the node (``uuid_exists``) rather than retry blindly.

Every wait is bounded (connect, greeting, each reply, each job's reply). Caller-controlled text never
splits a command: CR, LF or NUL in a command is refused (``UnsafeCommandError``). The default event
socket password ``ClueCon`` is refused for a node that is not on loopback unless
``allow_default_password`` is set: anyone who can reach the port could run ``api`` on the node.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import socket
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import gevent
import gevent.socket
from gevent.event import AsyncResult
from gevent.event import Event as Signal

from ..errors import CommandError, ConnectionClosed, EslAppError
from ..errors import CommandTimeout as _BaseCommandTimeout
from ..protocol import Event, Frame, FrameKind, Parser, ProtocolError, UnsafeCommandError, commands
from ..protocol.commands import check_safe, encode_command
from ..protocol.frames import EVENT_KINDS
from .connection import Connection

log = logging.getLogger("esl_app.transport.inbound")

__all__ = [
    "DEFAULT_PASSWORD",
    "AuthenticationFailed",
    "BackgroundJob",
    "CommandFailed",
    "CommandTimeout",
    "ConnectionLost",
    "DefaultPasswordRefused",
    "DisconnectNotice",
    "FrameTooLarge",
    "InboundClient",
    "InboundError",
    "JobLost",
    "NotConnected",
    "ProtocolViolation",
    "RudeRejection",
    "SubscriptionFailed",
    "UnsafeCommandError",
]

DEFAULT_PASSWORD = "ClueCon"  # event_socket.conf.xml's shipped password (spec 5.1)
MAX_JOB_UUID = 36  # FreeSWITCH copies a Job-UUID into a 37-byte buffer (spec 4.2)
# An inbound socket carries no connect reply, so envelope header blocks stay small; api bodies can
# be large (``show channels`` on a busy node), events are capped separately (``max_event_bytes``).
MAX_HEADER_BLOCK = 1024 * 1024
MAX_API_BODY = 64 * 1024 * 1024
MAX_QUEUED_EVENTS = 100_000  # FreeSWITCH's own per-listener queue (spec 6.12)

State = Literal["connecting", "connected", "disconnected"]


# -- errors --------------------------------------------------------------------------------------


class InboundError(EslAppError):
    """Base of the inbound client's errors."""


class DefaultPasswordRefused(InboundError, ValueError):
    """The default password ``ClueCon`` for a node that is not on loopback, without explicit consent."""


class ConnectionLost(InboundError, ConnectionClosed):
    """The connection to the node is gone (or was never up); the reason is the ``__cause__``."""


class NotConnected(ConnectionLost):
    """The client is not connected to the node right now (it keeps reconnecting in the background)."""


class JobLost(ConnectionLost):
    """The connection ended before a ``bgapi`` job's result arrived: the command may have run.

    ``accepted`` tells whether FreeSWITCH had acknowledged the job (``+OK Job-UUID``) before that.
    Either way the outcome is unknown: ask the node (``uuid_exists``), never send it again blindly.
    """

    def __init__(self, message: str, *, job_uuid: str, accepted: bool) -> None:
        super().__init__(message)
        self.job_uuid = job_uuid
        self.accepted = accepted


class AuthenticationFailed(InboundError):
    """``auth`` answered ``-ERR invalid`` (FreeSWITCH then closes the connection)."""


class RudeRejection(InboundError):
    """``text/rude-rejection``: the node's ``apply-inbound-acl`` refused this address."""


class DisconnectNotice(InboundError):
    """``text/disconnect-notice``: the node is closing the connection (the text says why)."""


class SubscriptionFailed(InboundError):
    """``event`` or ``filter`` was refused (e.g. ``-ERR no keywords supplied``)."""


class ProtocolViolation(InboundError):
    """Bytes from the node that cannot be framed or are not FreeSWITCH frames."""


class FrameTooLarge(ProtocolViolation):
    """An event larger than ``max_event_bytes``."""


class CommandTimeout(InboundError, _BaseCommandTimeout):
    """No reply (or job result) within the timeout. The connection stays up: the reply may still come."""


class CommandFailed(InboundError, CommandError):
    """The node answered ``-ERR ...`` (``api_ok``, a refused ``bgapi``, ``BackgroundJob.ok``)."""


# -- background jobs -----------------------------------------------------------------------------


class BackgroundJob:
    """One ``bgapi`` command: its acknowledgement and its result (the BACKGROUND_JOB body)."""

    __slots__ = ("_link", "_reply", "_result", "_timer", "accepted", "client", "command", "job_uuid", "sent_at")

    def __init__(self, client: InboundClient, job_uuid: str, command: str) -> None:
        self.client = client
        self.job_uuid = job_uuid
        self.command = command
        self.accepted = False
        self.sent_at = time.monotonic()
        self._reply: AsyncResult = AsyncResult()
        self._result: AsyncResult = AsyncResult()
        self._link: _Link | None = None
        self._timer: Any = None

    @property
    def done(self) -> bool:
        return self._result.ready()

    @property
    def result(self) -> str | None:
        """The result body, once it arrived (None before, or when the job failed)."""
        return self._result.value if self._result.successful() else None

    def wait(self, timeout: float | None = None) -> str:
        """The job's output (e.g. ``+OK <uuid>\\n`` or ``-ERR NO_ANSWER\\n`` for originate).

        ``timeout`` defaults to the client's ``job_timeout``. Raises ``CommandTimeout`` (no result yet:
        the job may still finish, wait again; or no reply to the bgapi in time), ``JobLost``,
        ``NotConnected`` (the client was stopped), ``CommandFailed`` (the bgapi itself was refused).
        """
        wait = self.client.job_timeout if timeout is None else timeout
        try:
            return self._result.get(timeout=wait)
        except gevent.Timeout:
            raise CommandTimeout(
                f"{self.client.name}: no result for job {self.job_uuid} ({self.command!r}) within {wait} s"
            ) from None

    def ok(self, timeout: float | None = None) -> str:
        """Like ``wait``, but a result starting with ``-ERR``/``-USAGE`` raises ``CommandFailed``."""
        text = self.wait(timeout)
        if _is_error(text):
            raise CommandFailed(f"bgapi {self.command}", text)
        return text

    def wait_accepted(self, timeout: float | None = None) -> str:
        """The ``+OK Job-UUID: ...`` reply text (raises like ``wait`` when it did not come)."""
        wait = self.client.command_timeout if timeout is None else timeout
        try:
            return self._reply.get(timeout=wait)
        except gevent.Timeout:
            raise CommandTimeout(f"{self.client.name}: no reply to bgapi {self.command!r} within {wait} s") from None

    # -- resolution, called by the client ------------------------------------------------------

    def _on_reply(self, reply: AsyncResult) -> None:
        self._cancel_timer()
        if self._result.ready():
            return
        if not reply.successful():
            self._fail(self.client._lost_error(self, reply.exception))
            return
        frame: Frame = reply.value
        text = frame.reply_text
        if _is_error(text):
            self._fail(CommandFailed(f"bgapi {self.command}", text))
            return
        named = (frame.headers.get("Job-UUID") or "").strip()
        if not text.startswith("+OK") or (named and named != self.job_uuid):
            self._fail(ProtocolViolation(f"bgapi reply {text!r} does not name job {self.job_uuid}"))
            return
        self.accepted = True
        self._reply.set(text)

    def _on_reply_timeout(self, timeout: float) -> None:
        if not self.accepted and not self._result.ready():
            self._fail(CommandTimeout(f"{self.client.name}: no reply to bgapi {self.command!r} within {timeout} s"))

    def _resolve(self, body: str) -> None:
        self._cancel_timer()
        if not self._reply.ready():
            self.accepted = True
            self._reply.set(f"+OK Job-UUID: {self.job_uuid}")
        if not self._result.ready():
            self._result.set(body)
        self.client._jobs.pop(self.job_uuid, None)

    def _fail(self, error: BaseException) -> None:
        self._cancel_timer()
        if not self._reply.ready():
            self._reply.set_exception(error)
        if not self._result.ready():
            self._result.set_exception(error)
        self.client._jobs.pop(self.job_uuid, None)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()

    def __repr__(self) -> str:
        state = "done" if self.done else "accepted" if self.accepted else "sent"
        return f"<BackgroundJob {self.job_uuid} {self.command!r} {state}>"


# -- the client ----------------------------------------------------------------------------------


class _Link:
    """One TCP connection attempt and what happened to it."""

    __slots__ = ("closed", "conn", "error", "greeting", "last_frame_at", "ready")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.greeting: AsyncResult = AsyncResult()
        self.closed = Signal()
        self.error: BaseException | None = None
        self.ready = False  # authenticated and subscribed
        self.last_frame_at = time.monotonic()


class InboundClient:
    """A self-healing inbound Event Socket connection to one FreeSWITCH node.

    ``events``: event names to subscribe to (``CUSTOM sub::class`` tokens allowed); BACKGROUND_JOB is
    always added because ``bgapi`` needs it, and delivered to ``on_event`` only when listed.
    ``filters``: ``(header, value)`` pairs for ``filter`` (FreeSWITCH semantics: positive filters
    OR-ed, a negative match vetoes); a ``filter Event-Name BACKGROUND_JOB`` is added with them so the
    job results still pass. ``on_event`` runs in one dispatcher greenlet, in arrival order.
    ``on_state(client, state, error)``: ``connecting``, ``connected``, ``disconnected`` (with why).
    ``idle_timeout``: treat the connection as dead when no frame arrived for that long (None: never;
    set it above the node's heartbeat interval when subscribed to HEARTBEAT). ``job_timeout``: the
    default bound of ``BackgroundJob.wait`` (an originate can ring for a minute or more).
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        name: str | None = None,
        events: Sequence[str] = ("HEARTBEAT",),
        event_format: Literal["plain", "json", "xml"] = "plain",
        filters: Sequence[tuple[str, str]] = (),
        on_event: Callable[[Event], None] | None = None,
        on_state: Callable[[InboundClient, str, BaseException | None], None] | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        allow_default_password: bool = False,
        idle_timeout: float | None = None,
        job_timeout: float = 300.0,
        max_event_bytes: int = 4 * 1024 * 1024,
        max_queued_events: int = MAX_QUEUED_EVENTS,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name or f"{host}:{port}"
        check_safe("password", password)
        if not password:
            raise ValueError("the event socket password is empty")
        if password == DEFAULT_PASSWORD and not allow_default_password and not is_loopback(host):
            raise DefaultPasswordRefused(
                f"{self.name}: refusing the default event socket password {DEFAULT_PASSWORD!r} for a node that is "
                "not on loopback (anyone who reaches port 8021 could run api commands on it); set a password in "
                "event_socket.conf.xml, or pass allow_default_password=True to accept the risk"
            )
        self._password = password
        if event_format not in ("plain", "json", "xml"):
            raise ValueError(f"event_format must be plain, json or xml, not {event_format!r}")
        self.event_format = event_format
        self.events = tuple(_check_tokens(events))
        self._wanted = {token.upper() for token in self.events}
        self.filters = tuple(_check_filter(header, value) for header, value in filters)
        self.on_event = on_event
        self.on_state = on_state
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        if backoff_min <= 0 or backoff_max < backoff_min:
            raise ValueError("backoff needs 0 < backoff_min <= backoff_max")
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.idle_timeout = idle_timeout
        self.job_timeout = job_timeout
        self.max_event_bytes = max_event_bytes
        self.max_queued_events = max_queued_events
        # state
        self.state: State = "disconnected"
        self.last_error: BaseException | None = None
        self.connected_at: float | None = None
        self.connects = 0  # successful connections (authenticated and subscribed)
        self.attempts = 0  # connection attempts
        self.events_received = 0
        self.events_dropped = 0  # dropped because the dispatcher queue was full
        self._link: _Link | None = None
        self._ready = Signal()
        self._stop = Signal()
        self._runner: gevent.Greenlet | None = None
        self._dispatcher: gevent.Greenlet | None = None
        self._queue: deque[Event] = deque()
        self._queue_ready = Signal()
        self._jobs: dict[str, BackgroundJob] = {}
        self._logged_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> InboundClient:
        """Start connecting (in the background); returns at once. See ``wait_connected``."""
        if self._runner is not None and not self._runner.dead:
            return self
        self._stop.clear()
        if self.on_event is not None:
            self._dispatcher = gevent.spawn(self._dispatch_loop)
        self._runner = gevent.spawn(self._run)
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Say ``exit`` (briefly), close, and stop reconnecting. Pending jobs fail with ``NotConnected``."""
        self._stop.set()
        link = self._link
        if link is not None and link.conn is not None and not link.conn.closed and link.ready:
            with contextlib.suppress(Exception):
                reply = link.conn.send(commands.EXIT)
                if reply is not None:
                    reply.get(timeout=timeout)
        if link is not None:
            self._drop(link, NotConnected(f"{self.name}: client stopped"))
        runner = self._runner
        if runner is not None and runner is not gevent.getcurrent():
            runner.kill(block=True, timeout=timeout)
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not gevent.getcurrent():
            dispatcher.kill(block=True, timeout=timeout)
        self._fail_jobs(None, NotConnected(f"{self.name}: client stopped"))
        self._ready.clear()
        if self.state != "disconnected":
            self._set_state("disconnected", NotConnected(f"{self.name}: client stopped"))

    def __enter__(self) -> InboundClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.ready and link.conn is not None and not link.conn.closed

    def wait_connected(self, timeout: float | None = None) -> bool:
        """True once connected (authenticated and subscribed), False after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.connected:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._ready.is_set():
                gevent.sleep(0.01)  # a connection that just ended, not yet seen by the loop
            else:
                self._ready.wait(remaining)
        return True

    def reconnect(self, reason: str = "reconnect requested") -> None:
        """Drop the current connection; the loop connects again (e.g. after a probe timed out)."""
        link = self._link
        if link is not None:
            self._drop(link, ConnectionLost(f"{self.name}: {reason}"))

    # -- commands -------------------------------------------------------------------------------

    def api(self, command: str, timeout: float | None = None) -> str:
        """Run ``api <command>``; return the body. ``-ERR ...`` bodies are returned as they are."""
        data = commands.api(command)
        frame = self._request(data, timeout, f"api {command}")
        return frame.reply_text

    def api_ok(self, command: str, timeout: float | None = None) -> str:
        """``api`` that raises ``CommandFailed`` when the body starts with ``-ERR`` or ``-USAGE``."""
        text = self.api(command, timeout)
        if _is_error(text):
            raise CommandFailed(f"api {command}", text)
        return text

    def bgapi(self, command: str, job_uuid: str | None = None, timeout: float | None = None) -> BackgroundJob:
        """Send ``bgapi <command>`` with a ``Job-UUID`` header; return the job at once.

        ``timeout`` bounds the wait for FreeSWITCH's ``+OK Job-UUID`` reply (default
        ``command_timeout``); ``BackgroundJob.wait`` bounds the wait for the result. Raises
        ``NotConnected`` (nothing was sent) or ``JobLost`` (the write timed out: it may have been sent).
        """
        job_uuid = job_uuid or str(uuidlib.uuid4())
        check_safe("Job-UUID", job_uuid)
        if len(job_uuid) > MAX_JOB_UUID or not job_uuid.strip() or " " in job_uuid:
            # FreeSWITCH would cut it to 36 characters and the result would never match
            raise ValueError(f"Job-UUID must be 1-{MAX_JOB_UUID} characters without spaces: {job_uuid!r}")
        data = commands.bgapi(command, job_uuid=job_uuid)
        link, conn = self._live()
        if job_uuid in self._jobs:
            raise ValueError(f"job {job_uuid} is already running on {self.name}")
        job = BackgroundJob(self, job_uuid, command)
        job._link = link
        # registered before the write: the result may arrive right behind the reply
        self._jobs[job_uuid] = job
        try:
            # _live() saw the connection open and nothing ran since: a failure here is the write's own
            reply = conn.send(data)
        except (ConnectionClosed, _BaseCommandTimeout) as exc:
            # failed or timed out mid-write: part of the command may be on the wire and the job may
            # run; the connection is closed (Connection does so on any write error), never reused
            self._jobs.pop(job_uuid, None)
            self._drop(link, ConnectionLost(f"{self.name}: writing bgapi {command!r} failed: {exc}"))
            raise JobLost(
                f"{self.name}: writing bgapi {command!r} failed ({exc}); it may have been sent",
                job_uuid=job_uuid,
                accepted=False,
            ) from exc
        assert reply is not None
        wait = self.command_timeout if timeout is None else timeout
        timer = gevent.get_hub().loop.timer(wait)
        job._timer = timer
        timer.start(job._on_reply_timeout, wait)
        reply.rawlink(job._on_reply)
        return job

    def _live(self) -> tuple[_Link, Connection]:
        link = self._link
        if link is None or not link.ready or link.conn is None or link.conn.closed:
            raise NotConnected(f"{self.name}: not connected") from self.last_error
        return link, link.conn

    def _request(self, data: bytes, timeout: float | None, what: str) -> Frame:
        link, conn = self._live()
        wait = self.command_timeout if timeout is None else timeout
        try:
            reply = conn.send(data)  # a write error closes the connection (ConnectionClosed below)
            assert reply is not None
            return reply.get(timeout=wait)
        except gevent.Timeout:
            raise CommandTimeout(f"{self.name}: no reply to {what!r} within {wait} s") from None
        except _BaseCommandTimeout as exc:  # the write itself timed out: part of it may be on the wire
            self._drop(link, ConnectionLost(f"{self.name}: writing {what!r} timed out"))
            raise CommandTimeout(f"{self.name}: writing {what!r} timed out") from exc
        except ConnectionClosed as exc:
            raise ConnectionLost(f"{self.name}: connection lost before the reply to {what!r}") from (
                link.error or exc
            )

    def _lost_error(self, job: BackgroundJob, cause: BaseException | None) -> BaseException:
        link = job._link
        error = JobLost(
            f"{self.name}: connection lost before the result of job {job.job_uuid} ({job.command!r}); "
            "it may have run",
            job_uuid=job.job_uuid,
            accepted=job.accepted,
        )
        error.__cause__ = (link.error if link is not None else None) or cause
        return error

    # -- the connect loop -----------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            link = _Link()
            self._link = link
            self._set_state("connecting", None)
            self.attempts += 1
            try:
                self._connect(link)
            except Exception as exc:  # every failure of an attempt: report, back off, try again
                error = _as_inbound_error(self.name, exc)
                self._drop(link, error)
                self.last_error = error
                self._set_state("disconnected", error)
                failures += 1
                self._backoff(failures)
                continue
            failures = 0
            link.ready = True
            self.connects += 1
            self.connected_at = time.monotonic()
            self._ready.set()
            self._set_state("connected", None)
            self._wait_closed(link)
            self._ready.clear()
            error = link.error or ConnectionLost(f"{self.name}: connection closed")
            self.last_error = error
            self._set_state("disconnected", error)
            if not self._stop.is_set():
                self._backoff(1)

    def _connect(self, link: _Link) -> None:
        sock = gevent.socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.settimeout(None)
        with contextlib.suppress(OSError):
            # request/response: a command must not wait for the ACK of the previous one (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # FreeSWITCH sets no keepalive on inbound sockets (spec 5.1): ours finds a dead peer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = Connection(
            sock,
            lambda frame: self._on_frame(link, frame),
            lambda reason: self._on_close(link, reason),
            name=self.name,
            write_timeout=self.command_timeout,
            parser=Parser(max_header_block=MAX_HEADER_BLOCK, max_body=max(MAX_API_BODY, self.max_event_bytes)),
        )
        link.conn = conn
        conn.start()
        try:
            link.greeting.get(timeout=self.connect_timeout)
        except gevent.Timeout:
            raise ProtocolViolation(f"{self.name}: no auth/request within {self.connect_timeout} s") from None
        reply = self._setup_request(link, encode_command(f"auth {self._password}"), "auth")  # never log it
        if reply != "+OK accepted":
            raise AuthenticationFailed(f"{self.name}: auth refused: {reply!r}")
        tokens = list(self.events)
        if "BACKGROUND_JOB" not in self._wanted and "ALL" not in self._wanted:
            tokens.insert(0, "BACKGROUND_JOB")
        line = " ".join(["event", self.event_format, *tokens])
        reply = self._setup_request(link, encode_command(line), line)
        if not reply.startswith("+OK"):
            raise SubscriptionFailed(f"{self.name}: {line!r} refused: {reply!r}")
        filters = list(self.filters)
        if filters and ("Event-Name", "BACKGROUND_JOB") not in filters:
            filters.append(("Event-Name", "BACKGROUND_JOB"))  # or the job results would be filtered out
        for header, value in filters:
            line = f"filter {header} {value}"
            reply = self._setup_request(link, encode_command(line), line)
            if not reply.startswith("+OK"):
                raise SubscriptionFailed(f"{self.name}: {line!r} refused: {reply!r}")

    def _setup_request(self, link: _Link, data: bytes, what: str) -> str:
        conn = link.conn
        assert conn is not None
        try:
            reply = conn.send(data)
            assert reply is not None
            return reply.get(timeout=self.command_timeout).reply_text
        except gevent.Timeout:
            raise CommandTimeout(f"{self.name}: no reply to {what!r} within {self.command_timeout} s") from None
        except ConnectionClosed as exc:
            if link.error is not None:
                raise link.error from None
            raise ConnectionLost(f"{self.name}: connection closed during {what!r}") from exc

    def _wait_closed(self, link: _Link) -> None:
        idle = self.idle_timeout
        while not link.closed.is_set():
            if idle is None:
                link.closed.wait()
                return
            silent = time.monotonic() - link.last_frame_at
            if silent >= idle:
                self._drop(link, ConnectionLost(f"{self.name}: nothing received for {silent:.1f} s"))
                return
            link.closed.wait(idle - silent)

    def _backoff(self, failures: int) -> None:
        """Sleep an exponential delay with jitter (half fixed, half random), or until stopped."""
        base = min(self.backoff_max, self.backoff_min * 2 ** min(failures - 1, 30))
        self._stop.wait(base / 2 + random.random() * base / 2)

    def _drop(self, link: _Link, error: BaseException) -> None:
        if link.error is None:
            link.error = error
        conn = link.conn
        if conn is not None and not conn.closed:
            conn.close()
        if conn is None:
            self._on_close(link, None)

    def _set_state(self, state: State, error: BaseException | None) -> None:
        self.state = state
        if state == "disconnected" and error is not None:
            # one warning per distinct reason: a node that stays down does not flood the log
            text = str(error)
            quiet = text == self._logged_error or self._stop.is_set()  # repeated, or our own stop()
            log.log(logging.DEBUG if quiet else logging.WARNING, "%s: disconnected: %s", self.name, text)
            self._logged_error = text
        elif state == "connected":
            self._logged_error = None
            log.info("%s: connected to %s:%s", self.name, self.host, self.port)
        if self.on_state is not None:
            try:
                self.on_state(self, state, error)
            except Exception:
                log.exception("%s: on_state handler failed", self.name)

    # -- frames (run by the reader: never block, never run user code) --------------------------

    def _on_frame(self, link: _Link, frame: Frame) -> None:
        if link.closed.is_set():
            return
        link.last_frame_at = time.monotonic()
        kind = frame.kind
        if kind in EVENT_KINDS:
            self._on_event_frame(link, frame)
        elif kind is FrameKind.AUTH:
            if not link.greeting.ready():
                link.greeting.set(True)
        elif kind is FrameKind.REJECTION:
            text = frame.body.decode("utf-8", "replace").strip()
            self._fail_link(link, RudeRejection(f"{self.name}: refused by the node's ACL: {text!r}"))
        elif kind is FrameKind.DISCONNECT:
            if not frame.is_linger_notice:
                text = frame.body.decode("utf-8", "replace").strip().replace("\n", " ")
                self._fail_link(link, DisconnectNotice(f"{self.name}: the node closed the connection: {text!r}"))
        elif kind is FrameKind.LOG:
            pass  # never asked for (no ``log`` command)
        elif not frame.content_type:
            shown = repr(frame.to_bytes()[:200])
            self._fail_link(link, ProtocolViolation(f"{self.name}: not a FreeSWITCH frame (no Content-Type): {shown}"))
        else:
            log.debug("%s: ignoring a %r frame", self.name, frame.content_type)

    def _on_event_frame(self, link: _Link, frame: Frame) -> None:
        if len(frame.body) > self.max_event_bytes:
            self._fail_link(
                link,
                FrameTooLarge(f"{self.name}: an event of {len(frame.body)} bytes (limit {self.max_event_bytes})"),
            )
            return
        try:
            event = frame.event()
        except Exception as exc:  # ProtocolError, or anything a hostile body makes a decoder raise
            self._fail_link(link, ProtocolViolation(f"{self.name}: malformed event: {exc!r}"[:500]))
            return
        self.events_received += 1
        name = event.name
        if name == "BACKGROUND_JOB":
            job = self._jobs.get((event.get("Job-UUID") or "").strip())
            if job is not None:
                job._resolve(event.body)
            if "BACKGROUND_JOB" not in self._wanted and "ALL" not in self._wanted:
                return
        if self.on_event is None:
            return
        if len(self._queue) >= self.max_queued_events:
            self.events_dropped += 1
            if self.events_dropped in (1, 10, 100) or self.events_dropped % 1000 == 0:
                log.error("%s: on_event is too slow: %d events dropped", self.name, self.events_dropped)
            return
        self._queue.append(event)
        self._queue_ready.set()

    def _fail_link(self, link: _Link, error: InboundError) -> None:
        if link.error is None:
            link.error = error
        if not link.greeting.ready():
            link.greeting.set_exception(error)
        conn = link.conn
        if conn is not None and not conn.closed:
            conn.close()

    def _on_close(self, link: _Link, reason: BaseException | None) -> None:
        if link.error is None:
            if isinstance(reason, ProtocolError):
                link.error = ProtocolViolation(f"{self.name}: {reason}")
            elif reason is not None:
                link.error = ConnectionLost(f"{self.name}: connection lost: {reason}")
            else:
                link.error = ConnectionLost(f"{self.name}: the node closed the connection")
            if reason is not None:
                link.error.__cause__ = reason
        if not link.greeting.ready():
            link.greeting.set_exception(link.error)
        if self._link is link:
            self._ready.clear()
        self._fail_jobs(link, None)
        link.closed.set()

    def _fail_jobs(self, link: _Link | None, error: BaseException | None) -> None:
        for job in list(self._jobs.values()):
            if link is None or job._link is link:
                job._fail(error if error is not None else self._lost_error(job, None))

    # -- event dispatch -------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        queue = self._queue
        handler = self.on_event
        assert handler is not None
        while True:
            while queue:
                event = queue.popleft()
                try:
                    handler(event)
                except Exception:
                    log.exception("%s: on_event handler failed on %s", self.name, event.name)
            self._queue_ready.clear()
            if not queue:
                self._queue_ready.wait()

    def __repr__(self) -> str:
        return f"<InboundClient {self.name} {self.host}:{self.port} {self.state}>"


# -- helpers -------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (names are not resolved: unknown means remote)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower().rstrip(".") in ("localhost", "localhost.localdomain")


def _is_error(text: str) -> bool:
    return text.startswith("-ERR") or text.startswith("-USAGE")


def _check_tokens(events: Sequence[str]) -> list[str]:
    if isinstance(events, str):
        events = events.split()
    tokens: list[str] = []
    for item in events:
        for token in check_safe("event name", item).split():
            tokens.append(token)
    return tokens


def _check_filter(header: str, value: str) -> tuple[str, str]:
    check_safe("filter header", header)
    check_safe("filter value", value)
    if not header or any(c.isspace() for c in header) or ":" in header:
        raise UnsafeCommandError(f"invalid filter header {header!r}")
    if not value.strip():
        raise UnsafeCommandError(f"filter {header!r} has an empty value")
    return header, value


def _as_inbound_error(name: str, exc: BaseException) -> BaseException:
    if isinstance(exc, InboundError):
        return exc
    if isinstance(exc, ConnectionClosed):
        error: InboundError = ConnectionLost(f"{name}: connection closed during setup")
    elif isinstance(exc, OSError | gevent.Timeout):
        error = ConnectionLost(f"{name}: cannot connect: {exc or type(exc).__name__}")
    elif isinstance(exc, _BaseCommandTimeout):
        error = CommandTimeout(str(exc))
    else:
        log.exception("%s: unexpected error while connecting", name)
        error = InboundError(f"{name}: {exc!r}")
    error.__cause__ = exc
    return error
