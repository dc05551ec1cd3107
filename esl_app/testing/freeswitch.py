"""A stand-in for mod_python3's ``freeswitch`` module, so flows can be tested in-process.

``Session`` behaves like ``freeswitch.Session`` for what ``esl_app.modpython`` uses (``execute``,
``getVariable``, ``setVariable``, ``hangup``, ``ready``, ``getDigits``, ``flushDigits``, ``sleep``,
``get_uuid``) and has the same channel behaviour as the fake FreeSWITCH: each call IS a
``FakeFreeSWITCH`` (same ``CallScript``, same applications, expansion, DTMF, hangup and bridge
outcomes, same ``CallRecord``), running on a thread of its own with its own gevent hub. This side
talks to it over a socketpair with plain blocking sockets, the way a FreeSWITCH call thread runs a
mod_python3 handler: no greenlet on the call's thread, nothing monkey-patched.

```python
from esl_app.testing.freeswitch import simulate_in_process
result = simulate_in_process(app, destination="1000", dtmf="1")
assert result.verbs == ["answer", "playback", "play_and_get_digits", "set", "set", "set", "bridge"]
```
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import types
import uuid as uuid_module
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket

from ..protocol import FrameKind, Parser, commands
from .peer import CallRecord, CallScript, FakeFreeSWITCH
from .trace import TracingSocket

log = logging.getLogger("esl_app.testing.freeswitch")

_sessions: dict[str, Session] = {}  # live calls by uuid, for API() (uuid_break, uuid_kill ...)
_sessions_lock = threading.Lock()


class Session:
    """One simulated call, seen as mod_python3's ``freeswitch.Session``."""

    def __init__(
        self, script: CallScript | None = None, *, safety_timeout: float = 60.0, trace: bool = False, **fields: Any
    ) -> None:
        if script is None:
            script = CallScript(**fields)
        elif fields:
            script = script.model_copy(update=fields)
        self.script = script
        # what crossed the stand-in's connection to the fake FreeSWITCH (TracingSocket): one line per
        # session method that reached the channel (``sendmsg execute ...``, ``sendmsg hangup``) and event
        self.trace: list[str] | None = [] if trace else None
        app_end, peer_end = socket.socketpair()
        self._sock = app_end
        self._write_lock = threading.Lock()
        self._parser = Parser()
        self._done: set[str] = set()
        self._digits = ""
        self._hangup_cause: str | None = None
        self._eof = False
        self.record: CallRecord | None = None
        self.peer: FakeFreeSWITCH | None = None
        self._peer_ready = threading.Event()
        self._peer_error: BaseException | None = None
        self._peer_thread = threading.Thread(
            target=self._peer_main, args=(peer_end.detach(), safety_timeout), name="fake-freeswitch", daemon=True
        )
        self._peer_thread.start()
        self._peer_ready.wait(10)
        assert self.peer is not None, "the fake FreeSWITCH did not start"
        self.uuid = self.peer.uuid
        self._send(commands.CONNECT)
        self._pump(lambda: self._connected, 10.0)
        self._send(commands.MYEVENTS)
        # subscribed before the handler runs (a real session needs no subscription at all)
        self._pump(lambda: self._replies >= 1, 10.0)
        with _sessions_lock:
            _sessions[self.uuid] = self

    _connected = False
    _replies = 0

    # -- the peer's thread -------------------------------------------------------------------
    def _peer_main(self, fileno: int, safety_timeout: float) -> None:
        sock = gevent.socket.socket(fileno=fileno)  # this thread's own hub
        peer_sock: Any = sock if self.trace is None else TracingSocket(sock, self.trace.append)
        try:
            self.peer = FakeFreeSWITCH(self.script, peer_sock, safety_timeout=safety_timeout)
            self._peer_ready.set()
            self.record = self.peer.run()
        except BaseException as exc:
            self._peer_error = exc
            self._peer_ready.set()
        finally:
            sock.close()
            gevent.get_hub().destroy(destroy_loop=True)

    # -- the wire ------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        with self._write_lock:
            try:
                self._sock.sendall(data)
            except OSError:
                self._eof = True

    def _pump(self, until: Callable[[], bool], timeout: float | None) -> bool:
        """Read frames until ``until()`` or the socket closes or ``timeout``; returns ``until()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not until() and not self._eof:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                data = b""
            if not data:
                self._eof = True
                break
            for frame in self._parser.feed(data):
                self._on_frame(frame)
        return until()

    def _on_frame(self, frame: Any) -> None:
        if frame.is_connect_reply:
            self._connected = True
        elif frame.is_event:
            event = frame.event()
            name = event.name
            if name == "CHANNEL_EXECUTE_COMPLETE":
                self._done.add(event.get("Application-UUID") or "")
            elif name == "DTMF":
                self._digits += event.get("DTMF-Digit") or ""
            elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
                self._hangup_cause = self._hangup_cause or event.get("Hangup-Cause") or "NORMAL_CLEARING"
        elif frame.kind is FrameKind.REPLY:
            self._replies += 1
        elif frame.kind is FrameKind.DISCONNECT:
            self._hangup_cause = self._hangup_cause or self._channel_cause() or "NORMAL_CLEARING"

    def _channel_cause(self) -> str | None:
        return self.peer.channel.hangup_cause if self.peer is not None else None

    def _transferred(self) -> bool:
        return self.peer is not None and self.peer.record.transferred_to is not None

    # -- freeswitch.Session ----------------------------------------------------------------------
    def get_uuid(self) -> str:
        return self.uuid

    def ready(self) -> bool:
        if self._hangup_cause is None and self.peer is not None and self.peer.channel.hangup_cause:
            self._hangup_cause = self.peer.channel.hangup_cause  # hung up, its event not read yet
        return self._hangup_cause is None and not self._eof and not self._transferred()

    def getVariable(self, name: str) -> str | None:
        assert self.peer is not None
        if name == "hangup_cause":
            return self._hangup_cause or self.peer.channel.get_var(name)
        return self.peer.channel.get_var(name)

    def setVariable(self, name: str, value: str | None) -> None:
        # switch_channel_set_variable_var_check(..., SWITCH_FALSE): stored as given, never expanded
        if self.ready() and self.peer is not None:
            self.peer.channel.set_var(name, value)

    def execute(self, app: str, data: str | None = None) -> None:
        """``switch_core_session_execute_application``: runs until the application returns."""
        if not self.ready():
            return  # sanity_check: nothing happens on a channel that is not ready
        app_uuid = str(uuid_module.uuid4())
        self._send(commands.sendmsg("execute", app=app, arg=data or None, event_uuid=app_uuid, event_lock=True))
        self._pump(lambda: app_uuid in self._done, None)
        self._done.discard(app_uuid)

    def answered(self) -> bool:
        """``CoreSession::answered``: CF_ANSWERED (false once the channel is not ready: sanity_check)."""
        return self.ready() and self.peer is not None and self.peer.channel.answer_state == "answered"

    def answer(self) -> None:
        self.execute("answer")

    def preAnswer(self) -> None:
        self.execute("pre_answer")

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if not self.ready():
            return
        self._send(commands.hangup(cause))
        self._pump(lambda: self._hangup_cause is not None, 10.0)

    def getDigits(self, maxdigits: int, terminators: str, timeout: int, interdigit: int = 0) -> str:
        if not self.ready():
            return ""

        def enough() -> bool:
            return len(self._digits) >= maxdigits or any(t in self._digits for t in terminators or "")

        self._pump(lambda: enough() or not self.ready(), timeout / 1000)
        taken, self._digits = self._digits[:maxdigits], self._digits[maxdigits:]
        return taken

    def flushDigits(self) -> int:
        self._digits = ""
        return 0

    def sleep(self, ms: int, sync: int = 0) -> int:
        self._pump(lambda: not self.ready(), ms / 1000)
        return 0

    def consoleLog(self, level: str, message: str) -> None:
        log.info("[%s] %s", level, message.rstrip())

    # -- the end of the handler ------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> CallRecord:
        """The handler returned: FreeSWITCH goes on with the dialplan (the socket is closed here) and
        the call's record is returned."""
        with _sessions_lock:
            _sessions.pop(self.uuid, None)
        self._send(commands.EXIT)
        self._pump(lambda: False, 2.0)  # until the peer closes
        self._sock.close()
        self._peer_thread.join(timeout)
        if self._peer_error is not None:
            raise RuntimeError("the fake FreeSWITCH failed") from self._peer_error
        assert self.record is not None, "the fake FreeSWITCH did not finish"
        return self.record


class API:
    """``freeswitch.API().executeString``: the commands the transport issues from other threads
    (``uuid_break``, ``uuid_kill``) go to that call's fake FreeSWITCH; others get ``-ERR``."""

    def executeString(self, command: str) -> str:
        name, _, rest = command.partition(" ")
        target = rest.split(" ", 1)[0]
        with _sessions_lock:
            session = _sessions.get(target)
        if session is None:
            return f"-ERR no such channel {target!r}" if name.startswith("uuid_") else f"-ERR {name} Command not found!"
        if name == "uuid_getvar":
            parts = rest.split(" ")
            value = session.getVariable(parts[1]) if len(parts) > 1 else None
            return value if value is not None else "_undef_"
        session._send(commands.api(name, *rest.split(" ")))  # the reply is read (and ignored) by the call thread
        return "+OK"


def consoleLog(level: str, message: str) -> None:
    log.info("[%s] %s", level, message.rstrip())


def install() -> types.ModuleType:
    """Put this stand-in in ``sys.modules['freeswitch']`` (what mod_python3 provides); returns it."""
    module = sys.modules[__name__]
    sys.modules["freeswitch"] = module
    return module


__all__ = ["API", "Session", "consoleLog", "install"]


def simulate_in_process(
    app: Any,
    script: CallScript | None = None,
    *,
    pool: str | None = None,
    timeout: float = 30.0,
    trace: bool = False,
    **fields: Any,
) -> Any:
    """One call to ``app`` through the mod_python3 transport: ``esl_app.modpython.handler`` runs on
    a thread of its own (as FreeSWITCH runs it) against a stand-in ``freeswitch.Session``. Returns a
    ``SimulatedCall``, like ``esl_call``, so the same assertions hold over both transports."""
    from ..modpython import host
    from .simulate import SimulatedCall

    install()
    target = f"esl_app.testing:{id(app)}"  # the registered app (a test's App need not be importable)
    host.load(target, app)
    session = Session(script, trace=trace, **fields)
    outcome: dict[str, Any] = {}

    def call_thread() -> None:
        try:
            outcome["call"] = host.run_call(session, target + (f" pool={pool}" if pool else ""))
        except BaseException as exc:  # mod_python3 logs it and the dialplan goes on
            outcome["error"] = exc

    thread = threading.Thread(target=call_thread, name=f"call-{session.uuid}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"in-process call did not finish within {timeout} s")
    record = session.close()
    if "error" in outcome:
        raise outcome["error"]
    return SimulatedCall(record, outcome.get("call"), session.trace or [])
