"""``InProcessSession``: the Call API's session over mod_python3's ``freeswitch.Session``.

It has the surface ``esl_app.call.Call`` and ``esl_app.app.App`` use on the socket ``Session``
(execute, hangup, api, DTMF, the hangup state), so the same flows run inside FreeSWITCH unchanged.
Everything runs on the call's own FreeSWITCH thread and blocks it, as mod_python3 expects; no
greenlet is involved (``esl_app.hubthread`` serves the data tiers).

What FreeSWITCH does here (src/switch_cpp.cpp, 1.10.12):
- ``execute(app, data)`` is ``switch_core_session_execute_application``: the same path as an
  Event Socket ``execute``, so ``data`` is expanded (``${...}``) exactly as over the socket. The
  argument is escaped with the same rules (``expansion.render`` with ``passes_for(app)``).
- ``setVariable`` is ``switch_channel_set_variable_var_check(..., SWITCH_FALSE)``: never expanded,
  so literal values go there as they are (the socket path needs ``uuid_setvar`` for that).
- Every method starts with ``sanity_check``: on a channel that is no longer ready it does nothing.
  ``ready()`` is false once the call hung up AND once it was transferred (``CF_TRANSFER``); the
  ``hangup_cause`` variable tells the two apart.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid as uuid_module
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from ..errors import CallHangup, CallTransferred, CommandError, CommandTimeout, EslAppError
from ..protocol import Expand, expansion
from ..session import SessionSettings

log = logging.getLogger("esl_app.modpython")

WaitFor = Literal["complete", "start", "none"]


class VerbUnavailable(EslAppError):
    """A Call API verb that cannot exist inside FreeSWITCH (named in the message)."""

    def __init__(self, verb: str, why: str) -> None:
        super().__init__(f"{verb} is not available in-process (mod_python3): {why}")
        self.verb = verb


# the socket's channel data headers, and the channel variables (or caller profile fields, which
# ``getVariable`` falls back to) that hold the same thing in-process
_HEADER_VARIABLES = {
    "caller-destination-number": "destination_number",
    "channel-destination-number": "destination_number",
    "caller-caller-id-number": "caller_id_number",
    "channel-caller-id-number": "caller_id_number",
    "caller-caller-id-name": "caller_id_name",
    "caller-context": "context",
    "channel-context": "context",
    "channel-name": "channel_name",
    "caller-network-addr": "network_addr",
    "caller-ani": "ani",
    "caller-dialplan": "dialplan",
}


class ChannelData:
    """The connect reply's headers, answered live from the channel (``getVariable``).

    ``variable_<name>`` reads the variable; the ``Caller-*``/``Channel-*`` headers routing uses read
    the caller profile fields; ``Unique-ID`` is the call's uuid."""

    __slots__ = ("_fs", "_uuid")

    def __init__(self, fs_session: Any, uuid: str) -> None:
        self._fs = fs_session
        self._uuid = uuid

    def get(self, name: str, default: str | None = None) -> str | None:
        lower = name.lower()
        if lower in ("unique-id", "channel-unique-id", "caller-unique-id"):
            return self._uuid
        if lower.startswith("variable_"):
            variable = name[len("variable_") :]
        else:
            variable = _HEADER_VARIABLES.get(lower)
            if variable is None:
                return default
        value = self._fs.getVariable(variable)
        return default if value is None or value == "" else value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(())  # FreeSWITCH offers no listing of a channel's variables to mod_python


class ExecuteResult:
    """What the socket's CHANNEL_EXECUTE_COMPLETE carries, read from the channel after ``execute``:
    ``Application-Response`` is the ``current_application_response`` variable the event is built
    from (switch_core_session.c), ``variable_<name>`` the channel variable."""

    __slots__ = ("_session", "app", "data", "name")

    def __init__(self, session: InProcessSession, app: str, data: str) -> None:
        self._session = session
        self.app = app
        self.data = data
        self.name = "CHANNEL_EXECUTE_COMPLETE"

    def get(self, name: str, default: str | None = None) -> str | None:
        lower = name.lower()
        if lower == "application":
            return self.app
        if lower == "application-data":
            return self.data or default
        if lower == "application-response":
            return self._session.get_variable("current_application_response") or default
        if lower == "other-leg-unique-id":
            return self._session.get_variable("bridge_uuid") or default
        return self._session.channel_data.get(name, default)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    @property
    def unique_id(self) -> str:
        return self._session.uuid


class _HangupState:
    """``session.hung_up``: set once the channel is no longer up (read live from ``ready()``)."""

    __slots__ = ("_session",)

    def __init__(self, session: InProcessSession) -> None:
        self._session = session

    def is_set(self) -> bool:
        return self._session.gone()


class _NoConnection:
    """No socket in-process: ``connection.closed`` is what Call and App check; it never closes."""

    closed = False
    close_reason = None

    def close(self, reason: Any = None) -> None:  # nothing to close
        pass


class InProcessJob:
    """``bgapi`` in-process: the API command runs on a thread of its own (FreeSWITCH's API may be
    called from any thread); ``wait()`` returns its output."""

    def __init__(self, command: str, future: concurrent.futures.Future[str]) -> None:
        self.uuid = str(uuid_module.uuid4())
        self.command = command
        self._future = future

    def ready(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = 60.0) -> str:
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise CommandTimeout(f"bgapi job {self.uuid} ({self.command}) not done within {timeout} s") from None


class InProcessSession:
    """One call driven through ``freeswitch.Session`` on the call's own thread."""

    in_process = True

    def __init__(self, fs_session: Any, freeswitch: Any, settings: SessionSettings | None = None) -> None:
        self.fs = fs_session
        self.freeswitch = freeswitch  # the module: API() for api/bgapi
        self.settings = settings or SessionSettings()
        uuid = fs_session.get_uuid() if hasattr(fs_session, "get_uuid") else fs_session.getVariable("uuid")
        self.uuid: str = uuid or ""
        self.name = self.uuid
        self.channel_data = ChannelData(fs_session, self.uuid)
        self.mode = "inprocess"
        self.full = True
        self.answered = bool(fs_session.answered())  # CoreSession::answered: CF_ANSWERED
        self.transferred = False
        self.hangup_cause: str | None = None
        self.hangup_by: Literal["app", "peer"] | None = None
        self.hung_up = _HangupState(self)
        self.connection = _NoConnection()
        self.observer = None
        self._gone = False

    # -- state -----------------------------------------------------------------------------------
    def gone(self) -> bool:
        """Whether the channel is no longer ours: hung up (cause known) or transferred away."""
        if self._gone:
            return True
        if self.fs.ready():
            return False
        self._gone = True
        cause = self.fs.getVariable("hangup_cause")
        if cause:
            self.hangup_cause = self.hangup_cause or cause
            if self.hangup_by is None:
                self.hangup_by = "peer"
        elif not self.transferred:
            # not ready, no hangup cause: CF_TRANSFER (a transfer, by this flow or from outside)
            self.transferred = True
        return True

    def raise_if_gone(self) -> None:
        if self.gone():
            raise self._ended()

    def _ended(self) -> CallHangup | CallTransferred:
        if self.transferred and not self.hangup_cause:
            return CallTransferred("the call was transferred out of this application")
        cause = self.hangup_cause
        return CallHangup(f"the call was hung up ({cause or 'cause unknown'})", cause)

    def get_variable(self, name: str) -> str | None:
        value = self.fs.getVariable(name)
        return None if value is None or value == "" else value

    def set_variable(self, name: str, value: str | None) -> None:
        """``setVariable``: stored as given, never expanded; an empty value unsets."""
        self.raise_if_gone()
        self.fs.setVariable(name, value or "")

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
    ) -> ExecuteResult | None:
        """Run an application on the call's thread until it returns (``wait`` makes no difference
        here: an application always runs to its end before ``execute`` returns; nor does ``wake``:
        there is no listener poll in process). ``set_first``: ``set`` applications run before it
        (``by_api`` is for sockets)."""
        for name, value in (set_first or {}).items():
            self.execute("set", f"{name}={value}")
        self.raise_if_gone()
        if loops is not None and loops != 1:
            raise VerbUnavailable(f"execute {app} with loops={loops}", "call execute in a Python loop instead")
        data = "" if arg is None else expansion.render(arg, expansion.passes_for(app))
        stopper = self._stopper(app, timeout) if timeout is not None else None
        try:
            self.fs.execute(app, data)
        finally:
            if stopper is not None:
                stopper.cancel()
        if stopper is not None and stopper.fired and not self.gone():
            raise CommandTimeout(f"{self.uuid}: {app} did not complete within {timeout} s")
        if app == "transfer" and not self.fs.ready() and not self.fs.getVariable("hangup_cause"):
            self.transferred = True  # the flow's own transfer: ``Call.transfer`` ends the flow
            self._gone = True
            return ExecuteResult(self, app, data)
        if self.gone():
            raise self._ended()
        if app == "answer":
            self.answered = True
        return ExecuteResult(self, app, data)

    def _stopper(self, app: str, timeout: float) -> _Stopper:
        return _Stopper(self, app, timeout)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self.gone():
            return
        self.hangup_cause = cause
        self.hangup_by = "app"
        self.fs.hangup(cause)
        self._gone = True

    def api(self, command: str, *args: str, timeout: float | None = None) -> str:
        """FreeSWITCH's API, in-process (``freeswitch.API().executeString``)."""
        line = " ".join((command, *args)).rstrip(" ")
        if "\n" in line or "\r" in line:
            raise CommandError(f"api {command}", "CR/LF in an api command line")
        return self.freeswitch.API().executeString(line) or ""

    def api_many(self, calls: list[tuple[str, ...]], timeout: float | None = None) -> list[str]:
        return [self.api(*call) for call in calls]

    def bgapi(self, command: str, *args: str) -> InProcessJob:
        future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(self.api(command, *args))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name=f"bgapi-{command}", daemon=True).start()
        return InProcessJob(" ".join((command, *args)), future)

    def send_command(self, data: bytes, what: str, timeout: float | None = None) -> Any:
        raise VerbUnavailable(what, "there is no Event Socket connection to send a raw command on")

    def wait_for_event(self, predicate: Any, timeout: float) -> Any:
        raise VerbUnavailable("wait_for_event", "channel events are not delivered to a mod_python3 handler")

    # -- DTMF and waiting ------------------------------------------------------------------------
    def next_dtmf(self, timeout: float) -> str | None:
        """The next digit the caller pressed (FreeSWITCH's DTMF queue, type-ahead included)."""
        self.raise_if_gone()
        digit = self.fs.getDigits(1, "", max(1, int(timeout * 1000)))
        if self.gone():
            raise self._ended()
        return digit or None

    def clear_dtmf(self) -> None:
        if not self.gone():
            self.fs.flushDigits()

    def wait_for_hangup(self, timeout: float | None = None) -> bool:
        """True once the call is down, False after ``timeout``. ``session.sleep`` keeps reading the
        channel's media meanwhile (as the socket's park would)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.gone():
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            self.fs.sleep(max(1, int(min(left, 1.0) * 1000)))
        return True

    def finish(self) -> None:
        """Nothing to close: the handler returns and FreeSWITCH goes on with the dialplan."""


class _Stopper:
    """A verb's ``timeout=`` in-process: after it, ``uuid_break`` the running application from a
    timer thread (the API is callable from any thread); the verb then raises CommandTimeout."""

    def __init__(self, session: InProcessSession, app: str, timeout: float) -> None:
        self.fired = False
        self._session = session
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        try:
            self._session.api("uuid_break", self._session.uuid, "all")
        except Exception as exc:  # logged: the verb still reports its timeout
            log.warning("%s: uuid_break after a timeout failed: %s", self._session.uuid, exc)

    def cancel(self) -> None:
        self._timer.cancel()
