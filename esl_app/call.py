"""The call-control API a flow uses: blocking verbs named the way telephony people speak.

Each verb runs one FreeSWITCH application through ``Session.execute`` (own ``Event-UUID``, waits for
the matching CHANNEL_EXECUTE_COMPLETE). Caller-controlled text is only ever passed as data: the codec
moves arguments with newlines into a ``text/plain`` body and refuses CR/LF anywhere else, and escapes
every argument against FreeSWITCH's variable expansion (``${system(...)}`` would run a command). Values
of variables go through ``api uuid_setvar``, which does not expand at all. The one way to let
FreeSWITCH expand is an explicit ``Expand("...${var}...")`` (``esl_app.protocol.expansion``).
"""

from __future__ import annotations

import logging
import re
import uuid as uuid_module
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from .errors import CallTransferred, CommandError, UnsafeArgumentError
from .protocol import Event, Headers, commands
from .protocol.expansion import Expand, quote_token, setvar_value
from .recovery import MAX_CHARS, RESULT_HEADERS, VARIABLE, Checkpoint, Entry, Journal, check_state, keep_result
from .recovery import replayed_event as _replayed_event
from .session import BackgroundJob, Session, WaitFor

log = logging.getLogger("esl_app.call")

BridgeOutcome = Literal["answered", "busy", "no_answer", "failed"]
HangupHook = Callable[["Call", str | None], None]

# set on a call handed off from a static to an async socket: where it was going before the transfer
HANDOFF_DESTINATION = "esl_app_destination"
HANDOFF_CONTEXT = "esl_app_context"

# what bridge_result reads from a bridge's completion (all a replayed bridge needs)
BRIDGE_HEADERS = (
    "variable_DIALSTATUS", "variable_originate_disposition", "variable_originate_failed_cause",
    "variable_last_bridge_hangup_cause", "variable_bridge_hangup_cause", "variable_bridge_uuid", "Other-Leg-Unique-ID",
)  # fmt: skip
_BUSY = {"USER_BUSY", "BUSY", "CALL_REJECTED"}
_NO_ANSWER = {"NO_ANSWER", "NOANSWER", "NO_USER_RESPONSE", "ALLOTTED_TIMEOUT", "PROGRESS_TIMEOUT"}
_VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SIP_REASONS = {
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
    503: "Service Unavailable", 603: "Decline",
}  # fmt: skip


class BridgeResult(BaseModel):
    """How a ``bridge`` ended: ``answered`` (the far end took the call), ``busy``, ``no_answer``, ``failed``."""

    outcome: BridgeOutcome
    cause: str | None = None  # the failure cause, or the far end's hangup cause after an answered bridge
    dial_status: str | None = None
    other_leg_uuid: str | None = None
    # when FreeSWITCH reported the bridge over (its event's Event-Date-Timestamp, epoch seconds)
    ended_at: float | None = None

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"


class RecordResult(BaseModel):
    path: str
    seconds: float | None = None
    response: str | None = None


def _quote(value: str, what: str) -> str:
    """One argument of an application that splits on spaces (``switch_separate_string``): quoted and
    escaped so it arrives whole and unchanged (the codec then escapes the expansion layer)."""
    if not isinstance(value, str):
        raise UnsafeArgumentError(f"{what} must be text, not {type(value).__name__}")
    return quote_token(value)


def _not_expandable_later(value: str, what: str) -> str:
    """Refuse ``$`` and backslashes where FreeSWITCH expands the text again after the application got
    it (a transfer destination is matched and substituted into the next dialplan's actions, a
    ``phrase:`` macro expands its data): no escaping can know how many passes follow."""
    if "$" in value or "\\" in value:
        raise UnsafeArgumentError(f"{what} cannot contain '$' or a backslash (FreeSWITCH would expand it): {value!r}")
    return value


_WORD = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")


def _word(value: str, what: str) -> str:
    if not _WORD.match(value):
        raise UnsafeArgumentError(f"invalid {what} {value!r}")
    return value


def _check_variable_name(name: str) -> str:
    if not _VARIABLE_NAME.match(name):
        raise UnsafeArgumentError(f"invalid channel variable name {name!r}")
    return name


class Call:
    """One call, as seen by a flow. Created by the framework after ``connect``."""

    __slots__ = (
        "_hangup_hooks", "_variables", "handed_off", "journal", "match", "recovered", "resumed", "session", "state",
    )  # fmt: skip

    def __init__(self, session: Session, match: Any = None) -> None:
        self.session = session
        self.match = match  # the RouteMatch that chose the flow (captured groups)
        self._variables: dict[str, str | None] = {}
        self._hangup_hooks: list[HangupHook] = []
        self.state: dict[str, Any] = {}  # free space for guards and flows to share per-call data
        # static->async hand-off (App.hand_off_to_async): ``handed_off`` on the first leg once it is
        # sent to the async socket; ``resumed`` on the second leg, recognised by its signed marker,
        # which skips the door's counts and the guards it already passed
        self.handed_off = False
        self.resumed = False
        # session recovery (esl_app.recovery): the checkpoint this connection resumes from (a worker
        # died mid-call), and the journal of a resumable flow
        self.recovered: Checkpoint | None = None
        self.journal: Journal | None = None

    # -- who and what ----------------------------------------------------------------------------
    @property
    def uuid(self) -> str:
        return self.session.uuid

    @property
    def data(self) -> Headers:
        """The channel data FreeSWITCH sent in reply to ``connect`` (decoded)."""
        return self.session.channel_data

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.session.channel_data.get(name, default)

    def restore_destination(self, destination: str, context: str) -> None:
        """Route this connection as ``destination``/``context`` (a resumed call, from its checkpoint)."""
        self._variables[HANDOFF_DESTINATION] = destination
        self._variables[HANDOFF_CONTEXT] = context

    @property
    def destination(self) -> str:
        """The number dialled (for a call handed off from a static socket: the one dialled originally)."""
        return (
            self.variable(HANDOFF_DESTINATION)
            or self.header("Caller-Destination-Number")
            or self.header("Channel-Destination-Number")
            or ""
        )

    @property
    def caller_id_number(self) -> str:
        return self.header("Caller-Caller-ID-Number") or self.header("Channel-Caller-ID-Number") or ""

    @property
    def caller_id_name(self) -> str:
        return self.header("Caller-Caller-ID-Name") or ""

    @property
    def context(self) -> str:
        return (
            self.variable(HANDOFF_CONTEXT)
            or self.header("Caller-Context")
            or self.header("Channel-Context")
            or ""
        )

    @property
    def channel_name(self) -> str:
        return self.header("Channel-Name") or ""

    @property
    def mode(self) -> str:
        return self.session.mode

    @property
    def answered(self) -> bool:
        return self.session.answered

    @property
    def hangup_cause(self) -> str | None:
        return self.session.hangup_cause

    @property
    def is_up(self) -> bool:
        return not (self.session.hung_up.is_set() or self.session.transferred or self.session.connection.closed)

    def variable(self, name: str, default: str | None = None) -> str | None:
        """A channel variable as known locally: the connect data plus what this flow set or unset."""
        if name in self._variables:
            value = self._variables[name]
            return default if value is None else value
        return self.session.channel_data.get("variable_" + name, default)

    def sip_header(self, name: str, default: str | None = None) -> str | None:
        """An incoming SIP ``X-`` header, as FreeSWITCH exposes it (``variable_sip_h_<name>``)."""
        return self.variable("sip_h_" + name, default)

    def on_hangup(self, hook: HangupHook) -> HangupHook:
        """Run ``hook(call, cause)`` once when the call leaves the application."""
        self._hangup_hooks.append(hook)
        return hook

    # -- generic ---------------------------------------------------------------------------------
    def execute(
        self,
        app: str,
        arg: str | Expand | None = None,
        *,
        timeout: float | None = None,
        event_lock: bool = True,
        wake: bool = True,
    ) -> Event:
        """Run any FreeSWITCH application and wait for its completion (the escape hatch).

        ``arg`` arrives as written (escaped against expansion); ``Expand(...)`` to have FreeSWITCH expand it.
        ``wake=False`` spares the LF waker's writes when the completion's timing does not matter (spec 9:
        FreeSWITCH's listener may then hold it up to 20 ms)."""
        event = self._run_app(app, arg, timeout=timeout, event_lock=event_lock, keep=RESULT_HEADERS, wake=wake)
        assert event is not None
        return event

    def _exec(
        self, app: str, arg: str | Expand | None, timeout: float | None, keep: tuple[str, ...] = (), wake: bool = True
    ) -> Event:
        """A verb's application: a resumable flow journals only the completion headers it reads."""
        event = self._run_app(app, arg, timeout=timeout, keep=keep, wake=wake)
        assert event is not None
        return event

    # -- session recovery ------------------------------------------------------------------------
    def checkpoint(self, name: str, **state: Any) -> dict[str, Any]:
        """Mark a point of a resumable flow, with a small JSON ``state``; returns that state.

        It is recorded on the channel with the next application (no round trip of its own). When
        the call resumes after a worker died, the flow is replayed up to where it was, and this
        returns the state recorded the first time: put decisions that come from outside the call
        (the clock, a database, chance) in it, so the replay takes the same path. Its name labels
        the ``esl_app_calls_resumed_total`` metric. Outside a resumable flow it only validates."""
        state = check_state(name, state)
        journal = self.journal
        if journal is None or not journal.active:
            return state
        if journal.replaying:
            recorded, _ = journal.next_recorded()
            if recorded is not None and recorded.name == name and recorded.state is not None:
                journal.entries.append(recorded)
                return recorded.state
            self._diverged(journal, f"checkpoint {name!r}", recorded)
        journal.entries.append(Entry(name=name, state=state))
        return state

    def _run_app(
        self,
        app: str,
        arg: str | Expand | None,
        *,
        timeout: float | None,
        event_lock: bool = True,
        wait: WaitFor = "complete",
        keep: tuple[str, ...] = (),
        wake: bool = True,
        set_first: Mapping[str, str] | None = None,
        by_api: bool = False,
    ) -> Event | None:
        """Every application of a flow: journaled and checkpointed when the flow is resumable.

        ``keep``: the completion headers the caller reads, the only ones kept in the journal (what a
        replayed application returns)."""
        journal = self.journal
        if journal is None or not journal.active:
            return self.session.execute(app, arg, timeout=timeout, event_lock=event_lock, wait=wait, wake=wake,
                                        set_first=set_first, by_api=by_api)  # fmt: skip
        if journal.replaying:
            recorded, last = journal.next_recorded()
            if last or (recorded is not None and recorded.app == app):
                event = _replayed_event(recorded, self.session.channel_data)
                # the application that ran on while nobody listened: its result is on the channel now
                result = keep_result(event, keep) if last else recorded.result  # type: ignore[union-attr]
                journal.entries.append(Entry(app=app, result=result))
                if app == "answer":
                    self.session.answered = True
                return event
            self._diverged(journal, f"application {app!r}", recorded)
        entry = Entry(app=app)
        if not journal.disabled:
            self._record_checkpoint(journal)
        journal.entries.append(entry)
        event = self.session.execute(app, arg, timeout=timeout, event_lock=event_lock, wait=wait, wake=wake,
                                     set_first=set_first, by_api=by_api)  # fmt: skip
        if event is not None:
            entry.result = keep_result(event, keep)
        return event

    def journal_step(self, app: str) -> None:
        """Journal a step of a resumable flow that is not one application of its own (a queue's hold:
        music and announcements in a loop, not journaled one by one). Like an application, it is one
        entry, recorded on the channel with the next write; a replay that reaches it is handled by
        the verb that made it (``esl_app.queue.caller``). Outside a resumable flow, or while replaying,
        it does nothing."""
        journal = self.journal
        if journal is None or not journal.active or journal.replaying:
            return
        if not journal.disabled:
            self._record_checkpoint(journal)
        journal.entries.append(Entry(app=app))

    def journal_diverged(self, what: str) -> None:
        """During a replay, the flow met ``what`` where the journal has something else: run on for real."""
        journal = self.journal
        if journal is not None and journal.active and journal.replaying:
            recorded, _ = journal.next_recorded()
            self._diverged(journal, what, recorded)

    def _diverged(self, journal: Journal, what: str, recorded: Entry | None) -> None:
        """The replay met something else than was recorded: the flow took another path (a decision
        not put in a checkpoint). Stop replaying: from here on everything runs for real."""
        log.error(
            "%s: resumed flow diverged from its checkpoint at entry %d (%s, recorded %s): running on from here",
            self.uuid, len(journal.entries) + 1, what, recorded.app or recorded.name if recorded else None,
        )  # fmt: skip
        assert journal.recovered is not None
        journal.recovered = None

    def _record_checkpoint(self, journal: Journal) -> None:
        """Ride the journal on the application's own write: no round trip of its own."""
        raw = journal.value()
        if len(raw) > MAX_CHARS:
            # too long a journal for a channel variable: clear it, a crash from here restarts the flow
            log.warning("%s: checkpoint journal over %d chars: this call is no longer resumable", self.uuid, MAX_CHARS)
            journal.disabled = True
            raw = b""
        value = raw.decode()
        if self.session.full:
            # never expanded; FreeSWITCH runs it on the listener before it reads the next command.
            # The line is checked once per call (the UUID); the value is the journal's own base64url,
            # digits, dots and hex, safe by construction
            unset = journal.unset_command
            if not unset:
                unset = journal.unset_command = commands.api("uuid_setvar", self.uuid, VARIABLE)
            data = unset[:-2] + b" " + raw + b"\n\n" if raw else unset
        else:
            # api is refused without ``full``: the set application (the value is base64url and hex,
            # nothing in it can expand), queued right before the application
            data = commands.execute("set", f"{VARIABLE}={value}", event_uuid=str(uuid_module.uuid4()))
        self.session.ride_along(data, self._checkpoint_written, replace=True)
        self._variables[VARIABLE] = value or None

    def _checkpoint_written(self, result: Any) -> None:
        frame = result.value if result.successful() else None
        if frame is not None and frame.reply_text.startswith("-ERR"):
            log.warning("%s: checkpoint not recorded: %s", self.uuid, frame.reply_text)

    def _forget_checkpoint(self) -> None:
        """The flow hands the call elsewhere: a later return to this route starts afresh."""
        journal = self.journal
        if journal is None or not journal.active or self.variable(VARIABLE) is None:
            return
        journal.active = False
        if self.session.full:
            data = commands.api("uuid_setvar", self.uuid, VARIABLE)
        else:
            data = commands.execute("unset", VARIABLE, event_uuid=str(uuid_module.uuid4()))
        self.session.ride_along(data, self._checkpoint_written, replace=True)
        self._variables[VARIABLE] = None

    def start(self, app: str, arg: str | Expand | None = None, *, timeout: float | None = None) -> Event:
        """Start an application that runs until hangup (``park``, ``conference``...) and return once
        it started; it runs without event-lock so later verbs still execute (nested inside it)."""
        event = self._run_app(app, arg, timeout=timeout, wait="start", event_lock=False)
        assert event is not None
        return event

    def api(self, command: str, *args: str, timeout: float | None = None) -> str:
        return self.session.api(command, *args, timeout=timeout)

    def bgapi(self, command: str, *args: str) -> BackgroundJob:
        return self.session.bgapi(command, *args)

    # -- answering and ending --------------------------------------------------------------------
    def answer(self, *, timeout: float | None = None) -> None:
        self._exec("answer", None, timeout)
        self.session.answered = True

    def pre_answer(self, *, timeout: float | None = None) -> None:
        self._exec("pre_answer", None, timeout)

    def ring_ready(self, *, timeout: float | None = None) -> None:
        self._exec("ring_ready", None, timeout)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang the call up (a no-op when it is already down)."""
        self.session.hangup(cause)

    def respond(self, code: int | str, reason: str | None = None, *, timeout: float | None = None) -> None:
        """Send a SIP response before answer, e.g. ``respond(503)`` so the proxy tries elsewhere."""
        code_text = str(code)
        if not code_text.isdigit() or len(code_text) != 3:
            raise UnsafeArgumentError(f"respond needs a 3-digit SIP code, got {code!r}")
        reason = reason or _SIP_REASONS.get(int(code_text), "")
        self._exec("respond", f"{code_text} {reason}".strip(), timeout)

    def transfer(
        self, destination: str, dialplan: str = "XML", context: str | None = None, *, timeout: float | None = None
    ) -> None:
        """Send the call to another extension; the call then leaves this application."""
        parts = [
            _quote(_not_expandable_later(destination, "transfer destination"), "transfer destination"),
            _quote(_not_expandable_later(dialplan, "transfer dialplan"), "transfer dialplan"),
        ]
        if context:
            parts.append(_quote(_not_expandable_later(context, "transfer context"), "transfer context"))
        self._forget_checkpoint()
        self._exec("transfer", " ".join(parts), timeout)
        self.session.transferred = True

    def park(self) -> None:
        self.start("park")

    def conference(self, name: str | Expand, *, timeout: float | None = None) -> None:
        self.start("conference", name, timeout=timeout)

    def wait_for_hangup(self, timeout: float | None = None) -> bool:
        return self.session.wait_for_hangup(timeout)

    # -- media -----------------------------------------------------------------------------------
    def playback(self, path: str | Expand, *, timeout: float | None = None) -> str:
        """Play a file or ``tone_stream://``; returns FreeSWITCH's ``Application-Response``."""
        if isinstance(path, str) and path.startswith("phrase:"):
            _not_expandable_later(path, "phrase")  # the macro expands its data again
        event = self._exec("playback", path, timeout, ("Application-Response",))
        return event.get("Application-Response") or ""

    play = playback

    def gather(
        self,
        prompt: str,
        *,
        min_digits: int = 1,
        max_digits: int = 1,
        tries: int = 1,
        timeout: float = 5.0,
        terminators: str = "#",
        invalid_prompt: str = "silence_stream://250",
        regex: str | None = None,
        digit_timeout: float | None = None,
        variable: str = "esl_app_digits",
        call_timeout: float | None = None,
    ) -> str | None:
        """``play_and_get_digits``: returns the digits (terminator excluded), or None when the caller
        gave no valid input in ``tries`` attempts. Timeouts are in seconds."""
        if not (0 < min_digits <= max_digits):
            raise UnsafeArgumentError(f"gather needs 0 < min_digits <= max_digits, got {min_digits}, {max_digits}")
        if terminators and not re.fullmatch(r"[0-9*#]+|none", terminators):
            raise UnsafeArgumentError(f"invalid terminators {terminators!r}")
        args = [
            str(min_digits), str(max_digits), str(tries), str(int(timeout * 1000)), terminators or "none",
            _quote(prompt, "prompt"), _quote(invalid_prompt, "invalid prompt"), _check_variable_name(variable),
        ]  # fmt: skip
        if regex is not None or digit_timeout is not None:
            args.append(_quote(regex or r"\d+|[*#0-9]+", "regex"))
        if digit_timeout is not None:
            args.append(str(int(digit_timeout * 1000)))
        keep = ("variable_read_result", "variable_" + variable)
        event = self._run_app("play_and_get_digits", " ".join(args), timeout=call_timeout, keep=keep)
        assert event is not None
        self.session.clear_dtmf()  # the digits it read also came as DTMF events: not for collect_dtmf
        if (event.get("variable_read_result") or "").lower() != "success":
            return None
        return event.get("variable_" + variable) or None

    play_and_get_digits = gather

    def collect_dtmf(
        self,
        max_digits: int = 1,
        *,
        timeout: float = 5.0,
        digit_timeout: float | None = None,
        terminators: str = "#",
    ) -> str:
        """Digits pressed from now on: stops at ``max_digits``, a terminator (not included), or a timeout
        (first digit: ``timeout``; next: ``digit_timeout``).

        Async socket: read from DTMF events, no application runs. Static socket: FreeSWITCH creates
        DTMF events only while an application reads digits (spec 2.4), so the ``read`` application
        collects them (digits typed earlier are its type-ahead).
        """
        if self.session.mode == "static":
            return self._read_digits(max_digits, timeout, digit_timeout, terminators)
        digits = ""
        wait = timeout
        while len(digits) < max_digits:
            digit = self.session.next_dtmf(wait)
            if digit is None:
                break
            if digit in terminators:
                break
            digits += digit
            wait = digit_timeout if digit_timeout is not None else timeout
        return digits

    def _read_digits(self, max_digits: int, timeout: float, digit_timeout: float | None, terminators: str) -> str:
        if terminators and not re.fullmatch(r"[0-9*#]+", terminators):
            raise UnsafeArgumentError(f"invalid terminators {terminators!r}")
        variable = "esl_app_read_digits"
        args = [
            "1", str(max_digits), "silence_stream://10", variable, str(int(timeout * 1000)), terminators or "none",
        ]  # fmt: skip
        if digit_timeout is not None:
            args.append(str(int(digit_timeout * 1000)))
        event = self._run_app("read", " ".join(args), timeout=None, keep=("variable_" + variable,))
        assert event is not None
        return event.get("variable_" + variable) or ""

    def say(
        self,
        text: str,
        *,
        language: str = "en",
        kind: str = "NUMBER",
        method: str = "pronounced",
        gender: str | None = None,
        timeout: float | None = None,
    ) -> None:
        words = [_word(language, "say language"), _word(kind, "say type"), _word(method, "say method")]
        if gender:
            words.append(_word(gender, "say gender"))
        # the text is one quoted argument: with spaces it would otherwise shift into the gender slot
        words.append(_quote(text, "say text"))
        self._exec("say", " ".join(words), timeout)

    def speak(self, text: str, *, engine: str = "flite", voice: str = "kal", timeout: float | None = None) -> None:
        # speak splits engine|voice at '|' and takes the rest as the text, unparsed
        _word(engine, "speak engine")
        _word(voice, "speak voice")
        self._exec("speak", f"{engine}|{voice}|{text}", timeout)

    def record(
        self,
        path: str,
        *,
        time_limit: int = 60,
        silence_threshold: int | None = None,
        silence_hits: int | None = None,
        timeout: float | None = None,
    ) -> RecordResult:
        args = [_quote(path, "record path"), str(int(time_limit))]
        if silence_threshold is not None:
            args.append(str(int(silence_threshold)))
            if silence_hits is not None:
                args.append(str(int(silence_hits)))
        event = self._exec("record", " ".join(args), timeout, ("variable_record_seconds", "Application-Response"))
        seconds = event.get("variable_record_seconds")
        return RecordResult(
            path=path,
            seconds=float(seconds) if seconds else None,
            response=event.get("Application-Response"),
        )

    def sleep(self, milliseconds: int, *, timeout: float | None = None) -> None:
        self._exec("sleep", str(int(milliseconds)), timeout)

    # -- bridging --------------------------------------------------------------------------------
    def bridge(
        self,
        dialstring: str | Expand,
        *,
        timeout: int | None = None,
        variables: Mapping[str, str] | None = None,
        call_timeout: float | None = None,
        wake: bool = True,
        quiet_setup: bool = False,
    ) -> BridgeResult:
        """Bridge to ``dialstring`` and report how it went. The A-leg stays ours whatever happens:
        ``continue_on_fail`` and ``hangup_after_bridge=false`` are set first (pipelined, no extra wait).

        ``dialstring`` arrives as written; a flow's own ``${...}`` needs ``Expand("user/${ext}")``
        (``Expand("sofia/gateway/${gw}/") + number`` keeps ``number`` data). ``variables`` go in
        ``{name=value}``, as data. ``wake=False``: no LF waker while it runs (``execute``).
        ``quiet_setup``: on an async ``full`` socket those variables are set by one ``api
        uuid_setvar_multi`` instead of three ``set`` applications (the same A-leg variables, without
        their six events and three replies to read; the call's trace then shows no ``set``)."""
        setup = {"continue_on_fail": "true", "hangup_after_bridge": "false"}
        if timeout is not None:
            setup["call_timeout"] = str(int(timeout))
        if variables:
            leg_vars = ",".join(f"{_check_variable_name(k)}={_leg_value(v)}" for k, v in variables.items())
            dialstring = "{" + leg_vars + "}" + dialstring
        # set in the bridge's own write (one syscall; on a full socket one api, no events); a replayed
        # bridge is not placed again, so neither are they
        event = self._run_app("bridge", dialstring, timeout=call_timeout, keep=BRIDGE_HEADERS, wake=wake,
                              set_first=setup, by_api=quiet_setup)  # fmt: skip
        assert event is not None
        return bridge_result(event)

    # -- queues (ACD) ----------------------------------------------------------------------------
    def enqueue(self, queue: str, **options: Any) -> Any:
        """Wait in an inbound queue until an agent answers (``esl_app.queue.caller.enqueue``: priority,
        skills, max_wait, exit_digits, music, service); returns a ``QueueOutcome``."""
        from .queue.caller import enqueue  # imported on use: the queue needs Redis, most flows don't

        return enqueue(self, queue, **options)

    # -- variables -------------------------------------------------------------------------------
    def set(self, name: str, value: str | Expand, *, timeout: float | None = None) -> None:
        """Set a channel variable to exactly ``value``.

        On a ``full`` socket through ``api uuid_setvar``, which never expands; else with the ``set``
        application, its value escaped for both of set's expansion passes. ``Expand(...)`` values
        always take the ``set`` application (FreeSWITCH expands them, twice)."""
        self.set_variables({name: value}, timeout=timeout)

    def set_variables(self, values: Mapping[str, str | Expand], *, timeout: float | None = None) -> None:
        """Set several channel variables at once (one round trip on a ``full`` socket)."""
        for name in values:
            _check_variable_name(name)
        self.session.raise_if_gone()
        literal = {n: v for n, v in values.items() if isinstance(v, str)}
        if literal and self.session.in_process:
            # mod_python3's setVariable never expands (esl_app.modpython.session): values as they are
            for n, v in literal.items():
                self.session.set_variable(n, v)
        elif literal and self.session.full:
            calls = [
                ("uuid_setvar", self.uuid, n, setvar_value(v)) if v else ("uuid_setvar", self.uuid, n)
                for n, v in literal.items()
            ]
            for (_, _, n, *_), output in zip(calls, self.session.api_many(calls, timeout=timeout), strict=True):
                if not output.startswith("+OK"):
                    self.session.raise_if_gone()
                    raise CommandError(f"api uuid_setvar {n}", output)
        else:
            literal = {}
        for n, v in values.items():
            if n not in literal:
                self._exec("set", f"{n}={v}" if isinstance(v, str) else f"{n}=" + v, timeout)
        for n, v in values.items():
            self._variables[n] = str(v) or None

    def export(self, name: str, value: str | Expand, *, timeout: float | None = None) -> None:
        """Set a variable here and on every leg bridged later (the ``export`` application, which
        expands its argument once: the value is escaped for that pass)."""
        arg = f"{_check_variable_name(name)}={value}" if isinstance(value, str) else f"{name}=" + value
        self._exec("export", arg, timeout)
        self._variables[name] = str(value)

    def unset(self, name: str, *, timeout: float | None = None) -> None:
        self._exec("unset", _check_variable_name(name), timeout)
        self._variables[name] = None

    def get(self, name: str, *, timeout: float | None = None) -> str | None:
        """Read a channel variable from FreeSWITCH now (``api uuid_getvar``: safe with newlines)."""
        _check_variable_name(name)
        self.session.raise_if_gone()
        if self.session.in_process:
            return self.session.get_variable(name)
        if not self.session.full:
            # api is refused without 'full'; getvar works but breaks on values with newlines (spec 1.2)
            frame = self.session.send_command(f"getvar {name}\n\n".encode(), "getvar", timeout)
            return frame.reply_text if frame.ok else None
        value = self.session.api("uuid_getvar", self.uuid, name, timeout=timeout)
        if value == "_undef_" or value.startswith("-ERR"):
            return None
        return value

    def __repr__(self) -> str:
        return f"<Call {self.uuid} {self.caller_id_number} -> {self.destination}>"


def _leg_value(value: str) -> str:
    """A ``{name=value}`` value: originate splits at ``,`` and ``=`` and unescapes twice, so the
    characters that steer that parsing are refused; ``$`` is escaped by the codec like all data."""
    if not isinstance(value, str) or any(c in value for c in ",{}'\\"):
        raise UnsafeArgumentError(f"dial-string variable value cannot contain , {{ }} ' or a backslash: {value!r}")
    return f"'{value}'" if " " in value else value


def bridge_result(event: Event) -> BridgeResult:
    """Classify a bridge's CHANNEL_EXECUTE_COMPLETE (spec 3.5: originate_disposition, DIALSTATUS)."""
    status = event.get("variable_DIALSTATUS") or ""
    disposition = event.get("variable_originate_disposition") or ""
    other = event.get("variable_bridge_uuid") or event.get("Other-Leg-Unique-ID")
    stamp = event.get("Event-Date-Timestamp") or ""
    ended_at = int(stamp) / 1_000_000 if stamp.isdigit() else None
    if status.upper() == "SUCCESS" or disposition.upper() in ("SUCCESS", "ANSWER"):
        cause = event.get("variable_last_bridge_hangup_cause") or event.get("variable_bridge_hangup_cause")
        return BridgeResult(
            outcome="answered", cause=cause, dial_status=status or None, other_leg_uuid=other, ended_at=ended_at
        )
    cause = (disposition or event.get("variable_originate_failed_cause") or status or "").upper() or None
    key = {status.upper(), cause or ""}
    if key & _BUSY:
        outcome: BridgeOutcome = "busy"
    elif key & _NO_ANSWER:
        outcome = "no_answer"
    else:
        outcome = "failed"
    return BridgeResult(
        outcome=outcome, cause=cause, dial_status=status or None, other_leg_uuid=other, ended_at=ended_at
    )


__all__ = ["BridgeResult", "Call", "CallTransferred", "CommandError", "RecordResult", "bridge_result"]
