"""A fake FreeSWITCH: plays the switch's side of ONE outbound-socket call (the ``socket`` dialplan app).

``FakeFreeSWITCH`` speaks mod_event_socket's protocol on any socket-like object (a real TCP socket, or
one end of ``esl_app.testing.pipe.memory_socket_pair()``), following the "Checklist for a fake
FreeSWITCH peer" of the protocol reference (``shared/esl-protocol.md``) and the 1.10.12 captures in
``fixtures/transcripts``:

* handshake: silent until the first command; a first command other than ``connect`` runs without a
  reply; ``connect`` gets the CHANNEL_DATA block; nothing within ``first_command_timeout`` (25 s):
  final notice and close;
* one reply per command, in order, with FreeSWITCH's exact ``Reply-Text`` strings (typos included),
  command words matched case-insensitively by prefix, gating of ``linger``/``event``/``api``... on a
  socket without ``full``;
* events only between commands, only when subscribed (``myevents``/``event``, filters applied), in
  plain, JSON or XML; written back to back, optionally cut into random chunks;
* async sockets: ``+OK`` at once, a park loop that runs queued executes (nested inside a running
  application unless that one has ``event-lock``), CHANNEL_PARK after ``connect``; static sockets:
  the execute runs inline and its ``+OK`` comes when it has finished, pipelined replies before events;
* applications with their observable effects (answer, playback, play_and_get_digits, bridge, ...),
  an unknown application hangs the call up with DESTINATION_OUT_OF_ORDER;
* the hangup sequences of spec 2.6 (async/static, with/without linger), cut after
  ``hangup_event_limit`` events to reproduce the real switch's race;
* the application closing the socket at any moment: nothing more is written, the call goes on in
  the dialplan.

The simulated call is described by a ``CallScript``; what happened is collected in a ``CallRecord``.
Every wait is bounded (``safety_timeout``), so a peer never hangs a test forever.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gevent
import gevent.socket
from gevent.event import Event as Signal
from gevent.greenlet import Greenlet
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..protocol import expansion, switch
from ..protocol.commands import MYEVENTS_SUBSCRIPTION
from ..protocol.switch import Command, CommandReader
from .channel import (
    HOSTNAME,
    VERSION,
    Channel,
    Pairs,
    Profile,
    common_headers,
    now_us,
    scoped_variables,
    socket_application_data,
    split_arguments,
)

__all__ = ["CallRecord", "CallScript", "FakeFreeSWITCH", "connect_tcp"]


# ---------------------------------------------------------------------------------------------
# Script and record


class CallScript(BaseModel):
    """What the simulated call is and how the caller behaves."""

    model_config = ConfigDict(extra="forbid")

    destination: str = "1000"
    caller_id_number: str = "1001"
    caller_id_name: str = "Test Caller"
    context: str = "default"
    uuid: str | None = None  # a random uuid4 per call when None
    # extra channel variables: variable_<name> in the connect reply and in events
    variables: dict[str, str] = Field(default_factory=dict)
    mode: Literal["async", "static"] = "async"
    full: bool = True
    # caller input for digit-reading applications: a str is the first attempt's input; a list gives
    # one entry per attempt ("" = no input). Digits after a terminator or beyond max stay as type-ahead.
    # Characters are not checked, so invalid input (e.g. "x") can be scripted to fail a regex.
    dtmf: str | list[str] = ""
    # async: after the COMPLETE of the Nth execute (1-based) the caller presses these digits
    dtmf_events: dict[int, str] = Field(default_factory=dict)
    # the caller hangs up when the Nth execute (1-based, every execute received) starts
    hangup_at: int | None = None
    hangup_before_connect: bool = False
    hangup_cause: str = "NORMAL_CLEARING"
    # outcome per bridge dialstring or per leg of one ("user/1002"; "*" = default): answer, busy, no_answer,
    # fail:<CAUSE>, or answer_fork: the user's second registration answers, a channel with its own uuid
    # (the leg's origination_uuid went to the first registration's channel, which lost the race)
    bridge: dict[str, str] = Field(default_factory=dict)
    # simulated run time per application name (default 0: complete at once)
    app_seconds: dict[str, float] = Field(default_factory=dict)
    # async/static without linger: deliver only the first N events of the hangup sequence (spec 2.6)
    hangup_event_limit: int | None = None
    record_seconds: float = 3.0
    # when the application server goes away mid-application: True, the application runs to its end
    # (the real switch: the call's thread only looks at the socket between applications, spec 2.7),
    # then ``socket`` returns; False, it is cut at once (quicker for tests that only need the close)
    apps_outlive_socket: bool = False

    @field_validator("bridge")
    @classmethod
    def _check_bridge(cls, value: dict[str, str]) -> dict[str, str]:
        for dialstring, outcome in value.items():
            if outcome not in ("answer", "answer_fork", "busy", "no_answer") and not re.fullmatch(
                r"fail:[A-Z_]+", outcome
            ):
                raise ValueError(
                    f"bridge outcome for {dialstring!r} must be answer, answer_fork, busy, no_answer or fail:<CAUSE>,"
                    f" not {outcome!r}"
                )
        return value

    @field_validator("hangup_event_limit")
    @classmethod
    def _check_limit(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("hangup_event_limit must be >= 0")
        return value


class CallRecord(BaseModel):
    """What happened during the call, for assertions. Live while the peer runs."""

    uuid: str
    commands: list[str] = Field(default_factory=list)  # first line of every command read
    executed: list[tuple[str, str]] = Field(default_factory=list)  # (application, argument) that ran
    verbs: list[str] = Field(default_factory=list)  # application names of ``executed``
    api_commands: list[str] = Field(default_factory=list)  # "uuid_getvar <uuid> foo" (api and bgapi)
    # API commands that variable expansion ran (``${system(id)}`` in an argument, or in a variable's value
    # when substituted): "system id". A real switch would have run them. Any entry is a test failure.
    api_expansions: list[str] = Field(default_factory=list)
    answered: bool = False
    hangup_cause: str | None = None
    hung_up_by: Literal["caller", "app", "switch"] | None = None
    variables: dict[str, str] = Field(default_factory=dict)  # channel variables (live, final at the end)
    closed_by: Literal["app", "switch"] | None = None
    continued_in_dialplan: bool = False  # the socket ended while the call was up
    # applications that ran to their end (not cut by a hangup, uuid_break or the socket's close)
    completed: list[tuple[str, str]] = Field(default_factory=list)
    lingered: bool = False  # a linger notice was written
    protocol_errors: list[str] = Field(default_factory=list)
    transferred_to: str | None = None  # extension the call was transferred to (it left the socket)
    # timings (time.monotonic(), comparable across processes of one machine), for latency reports
    started_at: float = 0.0  # the peer began the call (TCP connected)
    first_execute_at: float | None = None  # the first application started (CHANNEL_EXECUTE raised)
    # for each execute whose COMPLETE was followed by the application's next command: seconds from the
    # COMPLETE being raised to that command arriving (delivery to the flow + the flow's reaction)
    completion_gaps: list[float] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Constants

DTMF_DIGITS = "0123456789*#ABCDabcd"

# The commands mod_event_socket knows (matched by prefix, case-insensitively, spec 1.3).
KNOWN_COMMANDS = (
    "connect",
    "myevents",
    "linger",
    "nolinger",
    "event",
    "nixevent",
    "noevents",
    "api",
    "bgapi",
    "log",
    "nolog",
    "sendevent",
    "getvar",
    "resume",
    "filter",
    "divert_events",
    "sendmsg",
    "exit",
    "auth",
    "userauth",
)
# Not allowed on an outbound socket without ``full`` (spec 2.3).
GATED_COMMANDS = frozenset(
    {"linger", "nolinger", "event", "nixevent", "noevents", "api", "bgapi", "log", "nolog", "sendevent"}
)

# The fixed subscription of ``myevents`` (spec 2.5).
MYEVENTS = MYEVENTS_SUBSCRIPTION

# switch_event_types_t names, for ``event``/``nixevent``.
EVENT_NAMES = frozenset(
    MYEVENTS
    | {
        "CUSTOM",
        "CLONE",
        "CHANNEL_CALLSTATE",
        "CHANNEL_HOLD",
        "CHANNEL_UNHOLD",
        "API",
        "LOG",
        "INBOUND_CHAN",
        "OUTBOUND_CHAN",
        "STARTUP",
        "SHUTDOWN",
        "PUBLISH",
        "UNPUBLISH",
        "SESSION_CRASH",
        "MODULE_LOAD",
        "MODULE_UNLOAD",
        "MESSAGE",
        "PRESENCE_IN",
        "NOTIFY_IN",
        "PRESENCE_OUT",
        "PRESENCE_PROBE",
        "MESSAGE_WAITING",
        "MESSAGE_QUERY",
        "ROSTER",
        "CODEC",
        "BACKGROUND_JOB",
        "DETECTED_TONE",
        "PRIVATE_COMMAND",
        "HEARTBEAT",
        "TRAP",
        "ADD_SCHEDULE",
        "DEL_SCHEDULE",
        "EXE_SCHEDULE",
        "RE_SCHEDULE",
        "RELOADXML",
        "NOTIFY",
        "PHONE_FEATURE",
        "PHONE_FEATURE_SUBSCRIBE",
        "SEND_MESSAGE",
        "RECV_MESSAGE",
        "REQUEST_PARAMS",
        "GENERAL",
        "COMMAND",
        "SESSION_HEARTBEAT",
        "CLIENT_DISCONNECTED",
        "SERVER_DISCONNECTED",
        "SEND_INFO",
        "RECV_INFO",
        "RECV_RTCP_MESSAGE",
        "SEND_RTCP_MESSAGE",
        "CALL_SECURE",
        "NAT",
        "RECORD_START",
        "RECORD_STOP",
        "PLAYBACK_START",
        "PLAYBACK_STOP",
        "CALL_UPDATE",
        "FAILURE",
        "SOCKET_DATA",
        "MEDIA_BUG_START",
        "MEDIA_BUG_STOP",
        "CONFERENCE_DATA_QUERY",
        "CONFERENCE_DATA",
        "CALL_SETUP_REQ",
        "CALL_SETUP_RESULT",
        "CALL_DETAIL",
        "DEVICE_STATE",
        "TEXT",
        "SHUTDOWN_REQUESTED",
        "ALL",
    }
)

LOG_LEVELS = {"console": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}

# ``respond`` with a final code before answer: the cause the channel is hung up with.
RESPOND_CAUSES = {
    403: "CALL_REJECTED",
    404: "UNALLOCATED_NUMBER",
    480: "NO_USER_RESPONSE",
    486: "USER_BUSY",
    503: "NORMAL_TEMPORARY_FAILURE",
}
# A failed originate hangs the A-leg up unless the cause is one of these (or continue_on_fail says so).
CONTINUE_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL"})

HANGUP_SEQUENCE_WAIT = 2.0  # how long the listener waits for the call thread to finish the hangup events
MIN_LOOP_PASS = 0.5  # ``loops`` stops as soon as one pass takes less than this (spec 3.2)
HARD_STOP_MARGIN = 15.0  # run() ends at the latest this long after safety_timeout, whatever blocks


class TimingModel(BaseModel):
    """FreeSWITCH 1.10.12's two fixed waits (spec section 9), for latency measurements.

    ``listener_poll``: an idle listener waits for input in a poll of this length before it writes
    queued events; client bytes (a command, or a bare LF, which is discarded without a reply) end the
    poll at once. ``park_tick``: an async socket's park loop (and an application's media loop) picks
    queued ``sendmsg`` commands up on this tick; a static socket runs them at once, inline.
    Off by default in tests (``timing=None``); ``esl-app bench`` turns it on.
    """

    model_config = ConfigDict(frozen=True)

    listener_poll: float = Field(0.020, gt=0)
    park_tick: float = Field(0.020, gt=0)


def next_boundary(origin: float, period: float, now: float) -> float:
    """The first instant ``origin + k * period`` (k >= 1) that is not before ``now``."""
    steps = max(1, math.ceil((now - origin) / period - 1e-9))
    return origin + steps * period


# ---------------------------------------------------------------------------------------------
# Internal structures


@dataclass
class _Message:
    """A private event queued to the channel (``sendmsg`` on an async socket)."""

    kind: Literal["execute", "hangup"]
    app: str = ""
    arg: str = ""
    loops: int = 1
    lock: bool = False
    app_uuid: str = ""
    app_uuid_name: str | None = None
    index: int = 0  # 1-based number of the execute command (for hangup_at / dtmf_events)
    cause: str = "NORMAL_CLEARING"


@dataclass
class _Frame:
    """An application running on the channel (innermost last in the stack)."""

    message: _Message
    app: str
    arg: str
    breakable: bool
    broken: bool = False
    cut: bool = False  # stopped because the application server went away
    arg_b_leg: str = ""  # bridge: the B-leg's uuid while bridged


@dataclass
class _Outgoing:
    name: str
    headers: Pairs
    body: str | None = None
    in_hangup: bool = False  # fired after the hangup started (counts against hangup_event_limit)


@dataclass
class _AppSpec:
    handler: str
    breakable: bool = False  # stopped by uuid_break


APPLICATIONS: dict[str, _AppSpec] = {
    "answer": _AppSpec("_app_answer"),
    "pre_answer": _AppSpec("_app_pre_answer"),
    "ring_ready": _AppSpec("_app_ring_ready"),
    "playback": _AppSpec("_app_playback", breakable=True),
    "play_and_get_digits": _AppSpec("_app_play_and_get_digits", breakable=True),
    "read": _AppSpec("_app_read", breakable=True),
    "say": _AppSpec("_app_media", breakable=True),
    "speak": _AppSpec("_app_media", breakable=True),
    "gentones": _AppSpec("_app_media", breakable=True),
    "record": _AppSpec("_app_record", breakable=True),
    "bridge": _AppSpec("_app_bridge"),
    "transfer": _AppSpec("_app_transfer"),
    "respond": _AppSpec("_app_respond"),
    "set": _AppSpec("_app_set"),
    "export": _AppSpec("_app_export"),
    "multiset": _AppSpec("_app_multiset"),
    "unset": _AppSpec("_app_unset"),
    "sleep": _AppSpec("_app_sleep", breakable=True),
    "hangup": _AppSpec("_app_hangup"),
    "park": _AppSpec("_app_forever"),
    "conference": _AppSpec("_app_forever"),
    "echo": _AppSpec("_app_forever"),
    "log": _AppSpec("_app_nothing"),
    "info": _AppSpec("_app_nothing"),
    "event": _AppSpec("_app_event"),
    "sched_hangup": _AppSpec("_app_sched_hangup"),
}


C_WHITESPACE = " \t\r\n\x0b"  # what switch_strip_whitespace removes around an api argument


def _command_word(line: str) -> str:
    """The command FreeSWITCH sees: exact known words first, then a case-insensitive prefix match."""
    first = line.split(" ", 1)[0].lower()
    if first in KNOWN_COMMANDS:
        return first
    if line.startswith("..."):
        return "exit"
    lower = line.lower()
    matches = [word for word in KNOWN_COMMANDS if lower.startswith(word)]
    return max(matches, key=len) if matches else first


def _dial_target(dialstring: str) -> str:
    """The number a dialstring calls: ``{vars}[vars]user/1002@domain`` -> ``1002``."""
    text = re.sub(r"^(\{[^}]*\}|\[[^\]]*\]|<[^>]*>)+", "", dialstring.split(",")[0].split("|")[0])
    return text.rsplit("/", 1)[-1].split("@", 1)[0] or text


_CLOSERS = {"{": "}", "[": "]", "<": ">"}


def _split_dial(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside ``{...}``, ``[...]``, ``<...>``; ``\\,`` is no separator
    (switch_ivr_originate.c splits legs this way, the variable blocks keeping their own commas)."""
    pieces, start, closer, i = [], 0, "", 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if closer:
            closer = "" if char == closer else closer
        elif char in _CLOSERS:
            closer = _CLOSERS[char]
        elif char == separator:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    return pieces


@dataclass(frozen=True, slots=True)
class _DialLeg:
    text: str  # the endpoint without its variables: user/1002@domain
    variables: dict[str, str]  # {...} of the whole dial string, then this leg's [...]

    @property
    def target(self) -> str:
        return _dial_target(self.text)


def _dial_groups(dialstring: str) -> list[list[_DialLeg]]:
    """``{g=1}[l=2]user/a,[l=3]user/b|user/c``: groups tried in turn (``|``), the legs of a group
    rung at once (``,``), the first to answer winning. ``{...}`` applies to every leg, ``[...]`` to
    its own; ``origination_uuid`` names the leg's channel."""

    def block(text: str, opener: str) -> tuple[dict[str, str], str]:
        found: dict[str, str] = {}
        while text.startswith(opener):
            end = text.find(_CLOSERS[opener])
            if end < 0:
                break
            for item in _split_dial(text[1:end], ","):
                name, _, value = item.partition("=")
                if name.strip():
                    found[name.strip()] = value.strip().strip("'")
            text = text[end + 1 :]
        return found, text

    common, rest = block(dialstring.strip(), "{")
    groups = []
    for group in _split_dial(rest, "|"):
        legs = []
        for leg in _split_dial(group, ","):
            own, text = block(re.sub(r"^<[^>]*>", "", leg.strip()), "[")
            legs.append(_DialLeg(text.strip(), {**common, **own}))
        groups.append(legs)
    return groups


def _bridge_cause(outcome: str) -> str | None:
    """The cause a leg fails with by itself (``busy``, ``fail:<CAUSE>``); None for one that rings."""
    if outcome == "busy":
        return "USER_BUSY"
    return outcome.partition(":")[2] if outcome.startswith("fail:") else None


def _array(values: list[str]) -> str:
    """A variable pushed once per leg: one value as is, several as ``ARRAY::v1|:v2`` (switch_event.c)."""
    return values[0] if len(values) == 1 else "ARRAY::" + "|:".join(values)


# ---------------------------------------------------------------------------------------------
# The peer


class EventSubscriptions:
    """What FreeSWITCH does with ``nixevent``, ``noevents`` and ``filter`` (mod_event_socket.c), for both
    fakes: the per-call outbound socket here and a node's inbound socket (node_session). The class
    using it keeps ``_all``, ``_names``, ``_subclasses``, ``_events`` (queued) and ``_filters``."""

    _all: bool
    _names: set[str]
    _subclasses: set[str]
    _events: Any
    _filters: list[tuple[str, str]]

    def _cmd_nixevent(self, command: Command) -> bytes:
        keys = 0
        for token in command.arg.split():
            name = token.upper()
            if name not in EVENT_NAMES:
                self._subclasses.discard(token)
                continue
            keys += 1
            if name == "ALL":
                self._all = False
                self._names.clear()
            else:
                if self._all:
                    self._all = False
                    self._names = set(EVENT_NAMES - {"ALL"})
                self._names.discard(name)
        if not keys:
            return switch.reply("-ERR no keywords supplied")
        return switch.reply("+OK events nixed")

    def _cmd_noevents(self, command: Command) -> bytes:
        if not (self._all or self._names):
            return switch.reply("-ERR not listening for events")
        self._all = False
        self._names.clear()
        self._subclasses.clear()
        self._events.clear()
        return switch.reply("+OK no longer listening for events")

    def _cmd_filter(self, command: Command) -> bytes:
        arg = command.arg.strip()
        if not arg:
            return switch.reply("-ERR command not found")
        header, _, value = arg.partition(" ")
        if header.lower() == "delete":
            target, _, target_value = value.strip().partition(" ")
            if target.lower() == "all" or not target:
                self._filters.clear()
                return switch.reply("+OK filter deleted. [all][]")
            self._filters = [
                (h, v)
                for h, v in self._filters
                if not (h.lower() == target.lower() and (not target_value or v == target_value))
            ]
            return switch.reply(f"+OK filter deleted. [{target}][{target_value}]")
        if not value:
            return switch.reply("-ERR invalid syntax")
        self._filters.append((header, value))
        return switch.reply(f"+OK filter added. [{header}]=[{value}]")


class FakeFreeSWITCH(EventSubscriptions):
    """FreeSWITCH's side of one outbound-socket call, on ``sock`` (TCP or in-memory).

    ``run()`` blocks until the socket is closed (by either side) and returns the ``CallRecord``;
    run it in a greenlet. ``hangup()`` and ``press()`` act from another greenlet, like ``uuid_kill``
    and a caller's keypad.

    ``notice_linger_after_seconds``: when set, the final notice follows the linger notice after this
    many seconds instead of the ``Linger-Time`` the application asked for (keeps tests fast; the notice
    still shows the requested ``Linger-Time``). ``first_command_timeout``: FreeSWITCH's 25 s wait for
    the first command. ``safety_timeout``: the longest the whole call may take; then the caller hangs
    up and, if still lingering, the socket is closed, so no test can hang on the peer.
    """

    def __init__(
        self,
        script: CallScript | None = None,
        sock: Any = None,
        *,
        chunker: Callable[[bytes], list[bytes]] | None = None,
        notice_linger_after_seconds: float | None = None,
        first_command_timeout: float = 25.0,
        safety_timeout: float = 120.0,
        timing: TimingModel | None = None,
    ) -> None:
        self.script = script if script is not None else CallScript()
        self.timing = timing
        self.sock = sock
        self.chunker = chunker
        self.notice_linger_after_seconds = notice_linger_after_seconds
        self.first_command_timeout = first_command_timeout
        self.safety_timeout = safety_timeout
        self.uuid = self.script.uuid or str(uuidlib.uuid4())
        self.async_mode = self.script.mode == "async"
        self.channel = Channel(
            unique_id=self.uuid,
            caller_id_name=self.script.caller_id_name,
            caller_id_number=self.script.caller_id_number,
            destination=self.script.destination,
            context=self.script.context,
            variables=self.script.variables,
            socket_data=socket_application_data(self.script.mode, self.script.full),
        )
        self.record = CallRecord(uuid=self.uuid)
        # called as each application starts (after its CHANNEL_EXECUTE), e.g. to kill the server then
        self.on_execute: Callable[[str, str], None] | None = None
        self.record.variables = self.channel.variables  # live view
        self.channel.api_runner = self._expansion_api

        # connection
        self._reader = CommandReader()
        self._commands: deque[Command] = deque()
        self._eof = False
        self._write_broken = False
        self._sock_closed = False
        self._lsig = Signal()  # wakes the listener (command read, event fired, hangup)
        self._csig = Signal()  # wakes the channel (private message, hangup, digits, break)
        self._events: deque[_Outgoing] = deque()
        self._hangup_written = 0
        self._first_done = False
        self._connected = False
        self._exit_requested = False
        self._phase: Literal["open", "lingering"] = "open"
        self._linger: int | None = None  # None: no linger; -1: no limit; n: seconds
        self._linger_deadline = math.inf
        self._started = time.monotonic()
        self._safety_reported = False
        self._greenlets: list[Greenlet] = []
        self._reader_greenlet: Greenlet | None = None
        self._internal_error: BaseException | None = None
        # timing model: when the listener's current poll began, and whether the client wrote since
        self._poll_origin = time.monotonic()
        self._client_wrote = False
        self._events_since = 0.0  # when the oldest queued event was queued
        self._complete_raised_at: float | None = None
        self._park_origin = 0.0
        self.bytes_received = 0
        self.wake_bytes = 0  # bare LF/CR bytes that carried no command (the client's wakers)

        # subscriptions
        self._names: set[str] = set()
        self._all = False
        self._subclasses: set[str] = set()
        self._uuid_rule = False  # set by myevents, never removed
        self._format = "plain"
        self._filters: list[tuple[str, str]] = []

        # channel
        self._down = False
        self._down_handled = False
        self._hangup_finished = False
        self._hangup_done = Signal()
        self._parked = False
        self._park_pending = False
        self._park_greenlet: Greenlet | None = None
        self._transferred = False
        self._private: deque[_Message] = deque()
        self._stack: list[_Frame] = []
        self._bridge_frame: _Frame | None = None  # an answered bridge in progress
        self._b_leg_variables: dict[str, str] = {}  # the bridged B-leg's own variables (its dial string's)
        self._far_cause: str | None = None  # why its B-leg hung up (uuid_kill of the B-leg)
        self._executes_received = 0
        dtmf = self.script.dtmf
        self._attempt_inputs: deque[str] = deque([dtmf] if isinstance(dtmf, str) else dtmf)
        self._typeahead = ""
        self._live_digits = ""
        self._readers = 0  # digit-reading applications running
        self._logging = False
        self._last_app: tuple[str, str] | None = None

    # -- public API --------------------------------------------------------------------------

    def run(self) -> CallRecord:
        """Speak FreeSWITCH's side on the socket until it is closed; return the record."""
        if self.sock is None:
            raise ValueError("FakeFreeSWITCH needs a socket: pass sock= or use connect_tcp()")
        self._started = time.monotonic()
        self.record.started_at = self._started
        self._reader_greenlet = gevent.spawn(self._read_loop)
        # a hard bound even for a write blocked on an application that stopped reading
        hard_stop = self.safety_timeout + HARD_STOP_MARGIN
        timer = gevent.Timeout(hard_stop if math.isfinite(hard_stop) else None)
        timer.start()
        try:
            self._serve()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self.record.protocol_errors.append("the call was stopped: the socket was blocked past safety_timeout")
        finally:
            timer.close()
            self._shutdown()
        if self._internal_error is not None:
            raise RuntimeError("the fake FreeSWITCH failed while running the call") from self._internal_error
        return self.record

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up now (like ``uuid_kill`` from another connection)."""
        if self._sock_closed:
            return
        self._hangup(cause, "caller")

    def press(self, digits: str) -> None:
        """The caller presses ``digits`` now (DTMF events on an async socket, type-ahead on a static one)."""
        if self._down or self._sock_closed:
            return
        if self._readers:
            self._live_digits += digits
            self._csig.set()
            return
        self._caller_digits(digits)

    # -- connection: reading, writing, closing -----------------------------------------------

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (OSError, ValueError):
                data = b""
            if not data:
                self._eof = True
                self._lsig.set()
                self._csig.set()  # an inline (static) application stops waiting: nobody listens any more
                return
            self.bytes_received += len(data)
            if not data.strip(b"\r\n"):
                self.wake_bytes += len(data)
            self._client_wrote = True  # any byte ends the listener's poll (spec 9)
            try:
                commands = self._reader.feed(data)
            except Exception as exc:  # never let the reader die silently: the listener would wait forever
                self.record.protocol_errors.append(f"unreadable command bytes: {exc!r}")
                self._eof = True
                self._lsig.set()
                self._csig.set()
                return
            if commands:
                self._commands.extend(commands)
            self._lsig.set()

    def _write(self, data: bytes) -> None:
        if self._sock_closed or self._write_broken:
            return
        pieces = self.chunker(data) if self.chunker else [data]
        try:
            for piece in pieces:
                if piece:
                    self.sock.sendall(piece)
        except OSError:
            # the application is gone; FreeSWITCH notices on the failed write
            self._write_broken = True
            self._eof = True
            self._lsig.set()

    def _close_socket(self) -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        with contextlib.suppress(OSError, ValueError):
            self.sock.shutdown(socket.SHUT_WR)  # FIN after everything written
        if self._reader_greenlet is not None and not self._reader_greenlet.dead:
            self._reader_greenlet.kill(block=False)
        with contextlib.suppress(OSError, ValueError):
            self.sock.close()

    def _final_and_close(self) -> None:
        """Write the final disconnect notice and close (FreeSWITCH ends the socket)."""
        if self._sock_closed:
            return
        self._write(switch.final_notice(self.uuid))
        if self.record.closed_by is None:
            self.record.closed_by = "app" if self._write_broken else "switch"
        self._socket_ended()

    def _on_app_closed(self) -> None:
        """EOF from the application: write nothing; the call goes on in the dialplan (once the
        application running now has ended, with ``apps_outlive_socket``)."""
        if self.record.closed_by is None:
            self.record.closed_by = "app"
        if self.script.apps_outlive_socket:
            # the park loop ends: what it had not started yet is not run; what runs, runs to its end
            self._private.clear()
            limit = self._started + self.safety_timeout
            while self._stack and not self._down and time.monotonic() < limit:
                gevent.sleep(0.01)
        self._socket_ended()

    def _socket_ended(self) -> None:
        if not self._down:
            self.record.continued_in_dialplan = True
        self._stop_channel()
        self._close_socket()

    def _stop_channel(self) -> None:
        current = gevent.getcurrent()
        for greenlet in [self._park_greenlet, *self._greenlets]:
            if greenlet is not None and greenlet is not current and not greenlet.dead:
                greenlet.kill(block=True, timeout=1.0)
        self._parked = False

    def _shutdown(self) -> None:
        self._stop_channel()
        if not self._sock_closed:
            if self.record.closed_by is None:
                self.record.closed_by = "switch"
            self._close_socket()
        if self._reader_greenlet is not None and not self._reader_greenlet.dead:
            self._reader_greenlet.kill(block=True, timeout=1.0)

    # -- the listener loop --------------------------------------------------------------------

    def _serve(self) -> None:
        if self.script.hangup_before_connect:
            self._hangup(self.script.hangup_cause, "caller")
        static = not self.async_mode
        while not self._sock_closed:
            if self._down and not self._down_handled:
                self._handle_down()
                continue
            if self._commands:
                self._dispatch(self._commands.popleft())
                if self._sock_closed:
                    break
                if self._down and not self._down_handled:
                    continue
                if static and self._commands:
                    continue  # static: pipelined replies come before the events (spec 2.4)
                self._flush()
                self._new_poll()
                continue
            poll_ends = self._poll_ends()
            if time.monotonic() >= poll_ends:
                self._flush()
                self._new_poll()
            if self._eof:
                self._flush()
                self._on_app_closed()
                break
            now = time.monotonic()
            deadline = self._next_deadline()
            if now >= deadline:
                self._on_deadline(now)
                continue
            self._lsig.clear()
            if self._commands or self._eof or (self._down and not self._down_handled):
                continue
            if self._events:
                if self._poll_ends() <= now:
                    continue
                wait = min(deadline, self._poll_ends()) - now
            else:
                wait = deadline - now
            self._lsig.wait(min(wait, 5.0))

    def _new_poll(self) -> None:
        self._poll_origin = time.monotonic()
        self._client_wrote = False

    def _poll_ends(self) -> float:
        """When the listener writes the queued events: at once without the timing model or after
        client bytes, else at the end of the poll during which the oldest of them was queued."""
        if self.timing is None or self._client_wrote:
            return -math.inf
        return next_boundary(self._poll_origin, self.timing.listener_poll, self._events_since)

    def _next_deadline(self) -> float:
        deadline = self._started + self.safety_timeout
        if not self._first_done:
            deadline = min(deadline, self._started + self.first_command_timeout)
        if self._phase == "lingering":
            deadline = min(deadline, self._linger_deadline)
        return deadline

    def _on_deadline(self, now: float) -> None:
        safety = now >= self._started + self.safety_timeout
        if self._phase == "lingering" and (safety or now >= self._linger_deadline):
            self._final_and_close()
            return
        if not self._first_done and not safety:
            self.record.protocol_errors.append(
                f"no command within {self.first_command_timeout:g} s of the connection: "
                "FreeSWITCH wrote the final notice and closed"
            )
            self._final_and_close()
            return
        if not self._safety_reported:
            self._safety_reported = True
            self.record.protocol_errors.append(
                f"call still running after safety_timeout={self.safety_timeout:g} s: caller hung up"
            )
        if not self._down:
            self._hangup("NORMAL_CLEARING", "caller")
        else:
            self._final_and_close()

    def _handle_down(self) -> None:
        """The listener notices the channel is down (spec 2.6)."""
        self._down_handled = True
        if not self._connected:
            # the call ended before connect: the only frame is the final notice
            self._events.clear()
            self._final_and_close()
            return
        if self.async_mode:
            self._hangup_done.wait(HANGUP_SEQUENCE_WAIT)
        if self._linger is None:
            self._flush()
            self._final_and_close()
            return
        self.record.lingered = True
        notice = switch.linger_notice(self.uuid, self.channel.name, self._linger)
        if not self.async_mode and self.record.hung_up_by != "caller":
            # static, hung up on the listener's own thread (the app's sendmsg hangup, uuid_kill, an
            # inline application): the listener checks the channel before the CHANNEL_HANGUP has
            # reached its queue (transcript 01b). A caller hangup comes from another thread, so
            # CHANNEL_HANGUP is queued first (transcript 12, call 17).
            self._write(notice)
            self._flush()
        else:
            self._flush()
            self._write(notice)
        self._phase = "lingering"
        if self.notice_linger_after_seconds is not None:
            wait = self.notice_linger_after_seconds
        elif self._linger > 0:
            wait = float(self._linger)
        else:
            wait = math.inf  # no limit: until exit, close, or the safety timeout
        self._linger_deadline = time.monotonic() + wait

    # -- events -----------------------------------------------------------------------------

    def _emit(self, name: str, headers: Pairs, body: str | None = None) -> None:
        """Fire an event: queued for this socket if its subscription and filters pass it."""
        if self._sock_closed or not self._passes(name, headers):
            return
        if not self._events:
            self._events_since = time.monotonic()
        self._events.append(_Outgoing(name, headers, body, self._down))
        self._lsig.set()

    def _emit_channel(
        self,
        name: str,
        *,
        with_variables: bool = True,
        first: Pairs | tuple[()] = (),
        extra: Pairs | tuple[()] = (),
    ) -> None:
        self._emit(name, self.channel.event(name, with_variables=with_variables, first=first, extra=extra))

    def _subscribed(self, name: str) -> bool:
        return self._all or name in self._names

    def _passes(self, name: str, headers: Pairs) -> bool:
        if not self._subscribed(name):
            return False
        first: dict[str, str] = {}
        for header, value in headers:
            first.setdefault(header.lower(), value)
        if name == "CUSTOM" and not self._all:
            subclass = first.get("event-subclass")
            if subclass and subclass not in self._subclasses:
                return False
        if self._filters and not self._filters_pass(first):
            return False
        if self._uuid_rule:
            if name == "BACKGROUND_JOB":
                return first.get("job-owner-uuid") == self.uuid
            return first.get("unique-id") == self.uuid
        return True

    def _filters_pass(self, headers: dict[str, str]) -> bool:
        """Positive filters are OR-ed, a negative match vetoes, only-negative passes nothing (5.2)."""
        positive = False
        for name, value in self._filters:
            actual = headers.get(name.lower())
            if actual is None:
                continue
            negative = value.startswith("-")
            wanted = value[1:] if value[:1] in ("+", "-") else value
            if wanted.startswith("/") and not negative:
                pattern = wanted[1:-1] if wanted.endswith("/") and len(wanted) > 1 else wanted[1:]
                try:
                    matched = re.search(pattern, actual) is not None
                except re.error:
                    matched = False
            else:
                matched = actual.lower() == wanted.lower()
            if matched and negative:
                return False
            if matched:
                positive = True
        return positive

    def _flush(self) -> None:
        """Write every queued event, applying ``hangup_event_limit`` when not lingering."""
        limit = self.script.hangup_event_limit if self._linger is None else None
        while self._events and not self._sock_closed:
            out = self._events.popleft()
            if out.in_hangup and limit is not None:
                if self._hangup_written >= limit:
                    continue
                self._hangup_written += 1
            self._write(self._serialize(out))

    def _serialize(self, out: _Outgoing) -> bytes:
        if self._format == "json":
            return switch.event_json(out.headers, out.body)
        if self._format == "xml":
            return switch.event_xml(out.headers, out.body)
        return switch.event_plain(out.headers, out.body)

    # -- commands ---------------------------------------------------------------------------

    def _dispatch(self, command: Command) -> None:
        self.record.commands.append(command.line)
        if self._complete_raised_at is not None:
            self.record.completion_gaps.append(time.monotonic() - self._complete_raised_at)
            self._complete_raised_at = None
        first = not self._first_done
        self._first_done = True
        word = _command_word(command.line)
        if not self.script.full and word in GATED_COMMANDS:
            self.record.protocol_errors.append(
                f"{command.line!r} is not allowed on a socket without full: -ERR command not found"
            )
            reply: bytes | None = switch.reply("-ERR command not found")
        else:
            handler = getattr(self, f"_cmd_{word}", None)
            if handler is None:
                self.record.protocol_errors.append(f"unknown command {command.line!r}: -ERR command not found")
                reply = switch.reply("-ERR command not found")
            else:
                reply = handler(command)
        if first and word != "connect":
            self.record.protocol_errors.append(
                f"first command was {command.line!r}, not connect: FreeSWITCH runs it but writes no reply"
            )
        elif reply is not None:
            self._write(reply)
        if self._exit_requested:
            self._final_and_close()

    def _cmd_connect(self, command: Command) -> bytes:
        first_connect = not self._connected
        self._connected = True
        reply = switch.connect_reply(self.channel.channel_data(), mode=self.script.mode, full=self.script.full)
        if first_connect and self.async_mode and not self._down:
            # the socket application parks the channel once connect is processed (spec 2.2)
            self._park_pending = True
            self._parked = True
            self._park_greenlet = gevent.spawn(self._park_loop)
        return reply

    def _cmd_exit(self, command: Command) -> bytes:
        self._exit_requested = True
        return switch.reply("+OK bye")

    def _cmd_auth(self, command: Command) -> bytes:
        return switch.reply("-ERR command not found")

    _cmd_userauth = _cmd_auth

    def _cmd_myevents(self, command: Command) -> bytes:
        if self._uuid_rule:
            return switch.reply("-ERR aready enabled.")
        self._uuid_rule = True
        self._names |= MYEVENTS
        for word in command.arg.split():
            if word.lower() in ("plain", "json", "xml"):
                self._format = word.lower()
        self._maybe_emit_park()
        return switch.reply("+OK Events Enabled")

    def _cmd_event(self, command: Command) -> bytes:
        tokens = command.arg.split()
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            self._format = tokens.pop(0).lower()
        keys = 0
        custom = False
        for token in tokens:
            if custom:
                self._subclasses.add(token)
                continue
            name = token.upper()
            if name not in EVENT_NAMES:
                continue
            keys += 1
            if name == "ALL":
                self._all = True
            else:
                self._names.add(name)
            if name == "CUSTOM":
                custom = True
        if not keys:
            return switch.reply("-ERR no keywords supplied")
        self._maybe_emit_park()
        return switch.reply(f"+OK event listener enabled {self._format}")

    def _cmd_divert_events(self, command: Command) -> bytes:
        value = command.arg.strip().lower()
        if value == "on":
            return switch.reply("+OK events diverted")
        if value == "off":
            return switch.reply("+OK events not diverted")
        return switch.reply("-ERR missing value.")

    def _cmd_getvar(self, command: Command) -> bytes:
        value = self.channel.get_var(command.arg.strip())
        if not value:
            return switch.reply("-ERR command not found")
        # Reply-Text goes through a 512-byte buffer (spec 1.2)
        raw = value.encode("utf-8", "surrogateescape")[:511]
        return switch.reply(raw.decode("utf-8", "surrogateescape"))

    def _cmd_resume(self, command: Command) -> bytes:
        self.channel.set_var("socket_resume", "true")
        return switch.reply("+OK")

    def _cmd_linger(self, command: Command) -> bytes:
        try:
            seconds = int(command.arg.strip() or "0")
        except ValueError:
            seconds = 0
        if self._phase == "open":
            self._linger = seconds if seconds > 0 else -1
        if seconds > 0:
            return switch.reply(f"+OK will linger {seconds} seconds")
        return switch.reply("+OK will linger")

    def _cmd_nolinger(self, command: Command) -> bytes:
        if self._phase == "open":  # during linger it does not shorten the wait (spec 2.6)
            self._linger = None
        return switch.reply("+OK will not linger")

    def _cmd_log(self, command: Command) -> bytes:
        level = command.arg.strip() or "debug"
        number = int(level) if level.isdigit() else LOG_LEVELS.get(level.lower())
        if number is None or number > 7:
            return switch.reply("-ERR invalid log level")
        self._logging = True
        return switch.reply(f"+OK log level {level} [{number}]")

    def _cmd_nolog(self, command: Command) -> bytes:
        if self._logging:
            self._logging = False
            return switch.reply("+OK no longer logging")
        return switch.reply("-ERR not loging")

    def _cmd_sendevent(self, command: Command) -> bytes:
        name = (command.arg.strip().split() or ["CUSTOM"])[0].upper()
        event_uuid = str(uuidlib.uuid4())
        client = [(h, v) for h, v in command.headers.items() if h.lower() != "content-length"]
        subclass = [(h, v) for h, v in client if h.lower() == "event-subclass"]
        others = [(h, v) for h, v in client if h.lower() != "event-subclass"]
        headers: Pairs = [*subclass, ("Command", command.line), *others]
        if command.body:
            headers.append(("content-length", str(len(command.body))))
        headers.append(("Event-UUID", event_uuid))
        headers += common_headers(name if name in EVENT_NAMES else "CUSTOM", self.channel.next_sequence())
        body = command.body.decode("utf-8", "surrogateescape") if command.body else None
        self._emit(name, headers, body)
        return switch.reply(f"+OK {event_uuid}")

    def _cmd_api(self, command: Command) -> bytes:
        text = command.arg.strip(C_WHITESPACE)  # switch_strip_whitespace: ASCII blanks only
        self.record.api_commands.append(text)
        return switch.api_response(self._api(text))

    def _cmd_bgapi(self, command: Command) -> bytes:
        text = command.arg.strip(C_WHITESPACE)
        self.record.api_commands.append(text)
        job = (command.headers.get("Job-UUID") or "").strip()[:36] or str(uuidlib.uuid4())
        output = self._api(text)
        name, _, args = text.partition(" ")
        headers = self.channel.background_job(job, name, args.strip(), self.uuid)
        # fired after the reply is written: the listener flushes events after the reply
        self._emit("BACKGROUND_JOB", headers, output or None)
        return switch.reply(f"+OK Job-UUID: {job}", ("Job-UUID", job))

    def _cmd_sendmsg(self, command: Command) -> bytes:
        target = command.arg.strip() or (command.headers.get("session-id") or "").strip()
        if target and target != self.uuid:
            return switch.reply(f"-ERR invalid session id [{target}]")
        headers = command.headers
        call_command = (headers.get("call-command") or "").strip().lower()
        queue = self.async_mode or switch.is_true(headers.get("async"))
        if call_command == "execute":
            app = (headers.get("execute-app-name") or "").strip()
            arg = headers.get("execute-app-arg")
            if arg is None and (headers.get("content-type") or "").strip().lower() == "text/plain":
                arg = command.body.decode("utf-8", "surrogateescape")
            try:
                loops = int(headers.get("loops") or "1")
            except ValueError:
                loops = 1
            self._executes_received += 1
            message = _Message(
                "execute",
                app=app,
                arg=arg or "",
                loops=loops,
                lock=switch.is_true(headers.get("event-lock")),
                app_uuid=(headers.get("Event-UUID") or "").strip() or str(uuidlib.uuid4()),
                app_uuid_name=headers.get("Event-UUID-Name"),
                index=self._executes_received,
            )
            if not app:
                self.record.protocol_errors.append("sendmsg execute without execute-app-name")
                return switch.reply("+OK")
        elif call_command == "hangup":
            message = _Message("hangup", cause=(headers.get("hangup-cause") or "NORMAL_CLEARING").strip())
        else:
            if call_command not in ("unicast", "nomedia", "xferext"):
                self.record.protocol_errors.append(
                    f"sendmsg with call-command {call_command!r}: FreeSWITCH answers +OK and does nothing"
                )
            return switch.reply("+OK")
        if self._down:
            return switch.reply("+OK")  # the channel is gone: no effect, no events (spec 2.6)
        if queue:
            self._private.append(message)
            self._csig.set()
        else:
            self._run_message(message)  # static: inline, the reply comes when it has finished
        return switch.reply("+OK")

    @property
    def api_expansions(self) -> list[str]:
        """What ``${api(args)}`` expansions ran (see ``CallRecord.api_expansions``)."""
        return self.record.api_expansions

    # -- api --------------------------------------------------------------------------------

    def _expansion_api(self, name: str, args: str) -> str | None:
        """``${name(args)}`` met during expansion: recorded, then answered like ``api name args``
        (SCF_API_EXPANSION is on by default, as in a stock switch.conf)."""
        self.record.api_expansions.append(f"{name} {args}".strip())
        return self._api(f"{name} {args}".strip())

    def _api(self, text: str) -> str:
        name, _, rest = text.partition(" ")
        command = name.lower()
        args = rest.split()
        alive = not self._down

        def own(uuid: str | None) -> bool:
            return uuid == self.uuid and alive

        if command == "uuid_getvar":
            if len(args) < 2:
                return "-USAGE: <uuid> <var>\n"
            if self._bridge_frame is not None and args[0] == self._bridge_frame.arg_b_leg:
                return self._b_leg_variables.get(args[1]) or "_undef_"
            if not own(args[0]):
                return "-ERR No such channel!\n"
            return self.channel.get_var(args[1]) or "_undef_"
        if command == "uuid_setvar":
            if len(args) < 2:
                return "-USAGE: <uuid> <var> [value]\n"
            if not own(args[0]):
                return "-ERR No such channel!\n"
            # mod_commands: switch_separate_string(cmd, ' ', argv, 3), the value stored with no expansion
            pieces = split_arguments(rest, 3)
            if len(pieces) not in (2, 3) or not pieces[0]:
                return "-USAGE: <uuid> <var> [value]\n"
            if not pieces[1]:
                return "-ERR No variable specified\n"
            self.channel.set_var(pieces[1], pieces[2] if len(pieces) == 3 else None)
            return "+OK\n"
        if command == "uuid_setvar_multi":
            uuid, _, assignments = rest.partition(" ")
            if not assignments or not own(uuid):
                return "-ERR No such channel!\n" if assignments else "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n"
            count = 0
            for item in expansion.separate_string(assignments, ";", 64):
                name, sep, value = item.partition("=")
                if not name:
                    continue
                count += 1
                if sep and value and expansion.var_check(value):
                    # switch_channel_set_variable checks: "Invalid data (${name} contains a variable)"
                    self.record.protocol_errors.append(
                        f"uuid_setvar_multi refused {name}={value!r}: contains a variable"
                    )
                    continue
                self.channel.set_var(name, value if sep else None)
            return "+OK\n" if count else "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n"
        if command == "uuid_exists":
            return "true" if args and own(args[0]) else "false"
        if command == "uuid_break":
            if not args or not own(args[0]):
                return "-ERR No such channel!\n"
            self._break(all_apps=len(args) > 1 and args[1].lower() == "all")
            return "+OK\n"
        if command == "uuid_kill":
            cause = args[1] if len(args) > 1 else "NORMAL_CLEARING"
            if args and self._bridge_frame is not None and args[0] == self._bridge_frame.arg_b_leg:
                # the bridged B-leg hangs up: the bridge ends, the A-leg goes on (hangup_after_bridge)
                self._far_cause = cause
                self._bridge_frame.broken = True
                self._csig.set()
                return "+OK\n"
            if not args or not own(args[0]):
                return "-ERR No such channel!\n"
            self._hangup(cause, "app")
            return "+OK\n"
        if command == "uuid_answer":
            if not args or not own(args[0]):
                return "-ERR No such channel!\n"
            self._answer()
            return "+OK\n"
        if command == "uuid_transfer":
            if len(args) < 2 or not own(args[0]):
                return "-ERR No such channel!\n"
            target = [a for a in args[1:] if not a.startswith("-")]
            self._transfer(" ".join(target))
            return "+OK\n"
        if command in ("uuid_recv_dtmf", "uuid_send_dtmf"):
            if len(args) < 2 or not own(args[0]):
                return "-ERR No such channel!\n"
            if command == "uuid_recv_dtmf":
                self.press("".join(c for c in args[1] if c in DTMF_DIGITS))
            return "+OK\n"
        if command == "uuid_dump":
            if not args or not own(args[0]):
                return "-ERR No such channel!\n"
            pairs = self.channel.dump()
            if len(args) > 1 and args[1].lower() == "json":
                return json.dumps(dict(pairs), ensure_ascii=False, separators=(",", ":"))
            return "".join(f"{h}: {v}\n" for h, v in pairs)
        if command == "status":
            return self._status_text()
        if command == "version":
            return f"FreeSWITCH Version {VERSION} (git a88d069 2024-08-02 21:02:27Z 64bit)\n"
        if command == "hostname":
            return HOSTNAME
        if command == "show" and args and args[-1].lower() == "count":
            return f"\n{1 if alive else 0} total.\n"
        if command == "echo":
            return rest
        if command == "eval":
            return self.channel.expand(rest)
        return f"-ERR {name} Command not found!\n"

    def _status_text(self) -> str:
        up = time.monotonic() - self._started
        return (
            f"UP 0 years, 0 days, 0 hours, 0 minutes, {int(up)} seconds, {int(up * 1000) % 1000} milliseconds,"
            " 0 microseconds\n"
            "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready\n"
            "1 session(s) since startup\n"
            f"{1 if not self._down else 0} session(s) - peak 1, last 5min 1 \n"
            "0 session(s) per Sec out of max 30, peak 1, last 5min 1 \n"
            "1000 session(s) max\n"
            "min idle cpu 0.00/99.00\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    # -- the channel: park loop, executes, hangup ----------------------------------------------

    def _maybe_emit_park(self) -> None:
        """CHANNEL_PARK, once, as soon as the channel is parked and the socket is subscribed to it."""
        if not self._park_pending or self._down or self._transferred:
            return
        if not self._subscribed("CHANNEL_PARK"):
            return
        self._park_pending = False
        self._emit_channel("CHANNEL_PARK")

    def _park_loop(self) -> None:
        """The async ``socket`` application: parked, running queued messages in FIFO order."""
        try:
            self._maybe_emit_park()
            self._park_origin = time.monotonic()
            while not self._down and not self._transferred and not self._sock_closed:
                if self._private:
                    self._await_tick(self._park_origin)
                    # one tick drains the whole queue (switch_ivr_parse_all_events)
                    while self._private and not (self._down or self._transferred or self._sock_closed):
                        self._run_message(self._private.popleft())
                    continue
                self._csig.clear()
                if self._private or self._down or self._transferred:
                    continue
                self._csig.wait(1.0)
        except Exception as exc:  # a bug in the fake: end the call visibly instead of hanging the test
            self._internal_error = exc
            self.record.protocol_errors.append(f"fake FreeSWITCH internal error: {exc!r}")
            self._parked = False
            self._hangup("NORMAL_TEMPORARY_FAILURE", "switch")
        finally:
            self._parked = False
        if self._sock_closed:
            return
        if self._transferred and not self._down:
            self._socket_app_done()
        if self._down:
            self._finish_hangup(unpark=not self._transferred)

    def _await_tick(self, origin: float) -> None:
        """Timing model: a queued command waits for the park loop's (or media loop's) next tick."""
        if self.timing is None:
            return
        now = time.monotonic()
        boundary = next_boundary(origin, self.timing.park_tick, now)
        while now < boundary and not self._down and not self._sock_closed:
            self._csig.clear()
            self._csig.wait(boundary - now)
            now = time.monotonic()

    def _socket_app_done(self) -> None:
        """CHANNEL_UNPARK and the COMPLETE of the ``socket`` application itself."""
        self._emit_channel("CHANNEL_UNPARK")
        response = self.channel.variables.get("current_application_response", "_none_")
        self._emit_channel(
            "CHANNEL_EXECUTE_COMPLETE",
            extra=[
                ("Application", "socket"),
                ("Application-Data", self.channel.socket_data),
                ("Application-Response", response),
                ("Application-UUID", str(uuidlib.uuid4())),
            ],
        )

    def _run_message(self, message: _Message) -> None:
        if message.kind == "hangup":
            self._hangup(message.cause, "app")
        else:
            self._execute(message)

    def _runtime(self, app: str) -> float:
        return max(0.0, float(self.script.app_seconds.get(app, 0.0)))

    def _execute(self, message: _Message) -> None:
        if self._down:
            return  # executes on a dead channel do nothing (spec 3.3)
        app = message.app.lower()
        spec = APPLICATIONS.get(app)
        if spec is None:
            self.record.protocol_errors.append(
                f"unknown application {message.app!r}: FreeSWITCH hangs up with DESTINATION_OUT_OF_ORDER"
            )
            self._hangup("DESTINATION_OUT_OF_ORDER", "switch")
            return
        ch = self.channel
        # switch_core_session_exec expands every argument unless app_disable_expand_variables is true
        expands = not switch.is_true(ch.get_var("app_disable_expand_variables"))
        arg = ch.expand(message.arg) if expands else message.arg
        scoped = scoped_variables(arg) if expands else None
        if scoped is not None:  # %[name=value,...]: variables for this application only
            ch.scopes.append(scoped[0])
            arg = scoped[1]
        frame = _Frame(message, app, arg, spec.breakable)
        handler = getattr(self, spec.handler)
        total = str(message.loops) if message.loops > 0 else ("-1" if message.loops < 0 else "1")
        app_headers: Pairs = [("Application", app)]
        if arg:
            app_headers.append(("Application-Data", arg))
        uuid_headers: Pairs = [("Application-UUID", message.app_uuid)]
        if message.app_uuid_name:
            uuid_headers.append(("Application-UUID-Name", message.app_uuid_name))
        self._stack.append(frame)
        try:
            pass_number = 0
            while True:
                pass_number += 1
                ch.set_var("current_application_response", None)
                ch.set_var("current_loop", str(pass_number))
                ch.set_var("total_loops", total)
                ch.set_var("current_application", app)
                ch.set_var("current_application_data", arg)
                self._emit_channel("CHANNEL_EXECUTE", extra=[*app_headers, *uuid_headers])
                if self.record.first_execute_at is None:
                    self.record.first_execute_at = time.monotonic()
                self.record.executed.append((app, arg))
                self.record.verbs.append(app)
                if self.on_execute is not None:
                    self.on_execute(app, arg)
                self._last_app = (app, arg)
                if pass_number == 1 and message.index and message.index == self.script.hangup_at:
                    self._hangup(self.script.hangup_cause, "caller")
                started = time.monotonic()
                handler(frame)
                if not (self._down or frame.broken or frame.cut):
                    self.record.completed.append((app, arg))
                response = ch.variables.get("current_application_response", "_none_")
                self._emit_channel(
                    "CHANNEL_EXECUTE_COMPLETE",
                    extra=[*app_headers, ("Application-Response", response), *uuid_headers],
                )
                if not self._stack[:-1]:  # an outermost application: the flow waits for this one
                    self._complete_raised_at = time.monotonic()
                if (
                    self._down
                    or frame.broken
                    or (message.loops >= 0 and pass_number >= max(1, message.loops))
                    or time.monotonic() - started < MIN_LOOP_PASS
                ):
                    break
        finally:
            self._stack.remove(frame)
            if scoped is not None:
                ch.scopes.remove(scoped[0])
        digits = self.script.dtmf_events.get(message.index) if message.index else None
        if digits and not self._down:
            self._caller_digits(digits)

    def _wait_app(self, frame: _Frame, seconds: float, *, poll: bool = True, digits: bool = False) -> str:
        """Let an application run for ``seconds`` of its own time.

        While it runs it drains the private queue (nested executes, spec 2.4) unless it was sent with
        ``event-lock``; time spent in nested applications does not count. Returns ``"done"``,
        ``"hangup"``, ``"break"`` or ``"digit"`` (digits pressed while a reader waits).
        """
        remaining = seconds
        origin = time.monotonic()
        while True:
            self._csig.clear()
            if self._down:
                return "hangup"
            if frame.broken:
                return "break"
            if digits and self._live_digits:
                return "digit"
            if remaining <= 0:
                return "done"
            if poll and not frame.message.lock and self._private:
                self._await_tick(origin)  # the media loop drains the queue once per frame
                if self._private and not self._down:
                    self._run_message(self._private.popleft())
                continue
            if (self._eof or self._sock_closed) and not self.script.apps_outlive_socket:
                frame.cut = True
                return "break"  # the socket is gone: nothing observable depends on the rest
            started = time.monotonic()
            self._csig.wait(min(remaining, 1.0))
            remaining -= time.monotonic() - started

    def _hangup(self, cause: str, by: Literal["caller", "app", "switch"]) -> None:
        """Hang the channel up: CHANNEL_HANGUP now, the rest of the sequence from the call's thread."""
        if self._down:
            return
        self._down = True
        cause = cause.strip() or "NORMAL_CLEARING"
        self.channel.mark_hangup(cause)
        self.record.hangup_cause = cause
        self.record.hung_up_by = by
        self._emit_channel("CHANNEL_HANGUP")
        self._csig.set()
        self._lsig.set()
        if not self._parked:
            self._finish_hangup(unpark=False)

    def _finish_hangup(self, *, unpark: bool) -> None:
        """The rest of the hangup sequence (async): UNPARK, COMPLETE(socket), CS_HANGUP, CS_REPORTING,
        CHANNEL_HANGUP_COMPLETE. Static sockets never get them (spec 2.6)."""
        if self._hangup_finished:
            return
        self._hangup_finished = True
        ch = self.channel
        last_app, last_arg = self._last_app or (None, None)
        if self.async_mode and self._connected:
            if unpark:
                self._socket_app_done()
            ch.set_running_state("CS_HANGUP")
            self._emit_channel("CHANNEL_STATE", with_variables=False)
            ch.set_running_state("CS_REPORTING")
            self._emit_channel("CHANNEL_STATE", with_variables=False)
            ch.cdr_variables(last_app, last_arg)
            self._emit_channel("CHANNEL_HANGUP_COMPLETE", first=[("Hangup-Cause", ch.hangup_cause or "")])
        else:
            ch.cdr_variables(last_app, last_arg)
        self._hangup_done.set()
        self._lsig.set()

    def _break(self, *, all_apps: bool) -> None:
        """``uuid_break``: stop the running media application (all of them, and flush the queue, with all)."""
        if all_apps:
            self._private.clear()
        for frame in reversed(self._stack):
            if frame.breakable:
                frame.broken = True
                if not all_apps:
                    break
        self._csig.set()

    # -- channel state helpers ------------------------------------------------------------------

    def _answer(self) -> None:
        ch = self.channel
        if self._down or ch.answer_state == "answered":
            return
        ch.mark_answered()
        self.record.answered = True
        self._emit_channel("CHANNEL_ANSWER")
        ch.call_state = "ACTIVE"

    def _pre_answer(self) -> None:
        ch = self.channel
        if self._down or ch.answer_state != "ringing":
            return
        ch.mark_pre_answered()
        self._emit_channel("CHANNEL_PROGRESS_MEDIA")
        ch.call_state = "EARLY"

    def _ring_ready(self) -> None:
        ch = self.channel
        if self._down or ch.answer_state != "ringing" or ch.profile.progress_time:
            return
        ch.mark_ring_ready()
        self._emit_channel("CHANNEL_PROGRESS")

    def _transfer(self, target: str) -> None:
        """The call leaves the socket for another extension (it stays up there)."""
        if self._down:
            return
        words = split_arguments(target, 4)
        self.record.transferred_to = target
        self._transferred = True
        p = self.channel.profile
        if words:
            p.destination_number = words[0]
        if len(words) > 2:
            p.context = words[2]
        p.profile_index += 1
        p.transfer_time = now_us()
        self._park_pending = False
        for frame in self._stack:  # the transfer ends whatever runs on the channel
            frame.broken = True
        self._csig.set()

    # -- DTMF -------------------------------------------------------------------------------

    def _emit_dtmf(self, digit: str) -> None:
        self._emit_channel(
            "DTMF",
            with_variables=False,
            extra=[("DTMF-Digit", digit), ("DTMF-Duration", "2000"), ("DTMF-Source", "RTP")],
        )

    def _caller_digits(self, digits: str) -> None:
        """Digits pressed while no application reads them: the async park loop dequeues them at once
        (DTMF events, digits gone); a static socket keeps them queued as type-ahead (no events)."""
        if self.async_mode and self._connected and not self._transferred:
            for digit in digits:
                self._emit_dtmf(digit)
        else:
            self._typeahead += digits

    def _collect(self, frame: _Frame, max_digits: int, terminators: str, budget: list[float]) -> tuple[str, str | None]:
        """One attempt of a digit-reading application. Returns (digits, terminator used)."""
        entry = self._attempt_inputs.popleft() if self._attempt_inputs else ""
        pending = self._typeahead + entry
        self._typeahead = ""
        collected = ""
        terminator: str | None = None
        while True:
            index = 0
            complete = False
            while index < len(pending):
                digit = pending[index]
                index += 1
                self._emit_dtmf(digit)
                if digit in terminators:
                    terminator, complete = digit, True
                    break
                collected += digit
                if len(collected) >= max_digits:
                    complete = True
                    break
            self._typeahead = pending[index:] + self._typeahead
            if complete or budget[0] <= 0:
                return collected, terminator
            started = time.monotonic()
            outcome = self._wait_app(frame, budget[0], digits=True)
            budget[0] -= time.monotonic() - started
            if outcome != "digit":
                return collected, terminator
            pending, self._live_digits = self._typeahead + self._live_digits, ""
            self._typeahead = ""

    def _start_reading(self) -> None:
        self._readers += 1

    def _stop_reading(self) -> None:
        self._readers -= 1
        if not self._readers and self._live_digits:
            self._typeahead += self._live_digits
            self._live_digits = ""

    # -- applications ---------------------------------------------------------------------------

    def _app_nothing(self, frame: _Frame) -> None:
        self._wait_app(frame, self._runtime(frame.app), poll=False)

    def _app_answer(self, frame: _Frame) -> None:
        self._answer()
        self._wait_app(frame, self._runtime("answer"), poll=False)

    def _app_pre_answer(self, frame: _Frame) -> None:
        self._pre_answer()
        self._wait_app(frame, self._runtime("pre_answer"), poll=False)

    def _app_ring_ready(self, frame: _Frame) -> None:
        self._ring_ready()

    def _app_media(self, frame: _Frame) -> None:
        self._pre_answer()
        self._wait_app(frame, self._runtime(frame.app))

    def _app_sleep(self, frame: _Frame) -> None:
        self._wait_app(frame, self._runtime("sleep"))

    def _app_forever(self, frame: _Frame) -> None:
        """park, conference, echo: they end only when the call does (or the socket is gone)."""
        if frame.app != "park":
            self._answer()
            self._wait_app(frame, math.inf)
            return
        self._emit_channel("CHANNEL_PARK")
        self._wait_app(frame, math.inf)
        self._emit_channel("CHANNEL_UNPARK")

    def _app_playback(self, frame: _Frame) -> None:
        ch = self.channel
        self._pre_answer()
        seconds = self._runtime("playback")
        # switch_ivr_play_file: playback_timeout_sec (whole seconds, above 1) ends it early, a
        # PLAYBACK ERROR unless playback_timeout_as_success
        limit = ch.get_var("playback_timeout_sec") or ""
        timed_out = limit.isdigit() and int(limit) > 1 and int(limit) < seconds
        if timed_out:
            seconds = float(limit)
        started = time.monotonic()
        outcome = "hangup" if self._down else self._wait_app(frame, seconds)
        played_ms = int(seconds * 1000) if outcome == "done" else int((time.monotonic() - started) * 1000)
        samples = played_ms * 8
        ch.set_var("playback_last_offset_pos", str(samples))
        ch.set_var("playback_seconds", str(played_ms // 1000))
        ch.set_var("playback_ms", str(played_ms))
        ch.set_var("playback_samples", str(samples))
        failed = outcome == "hangup" or (
            outcome == "done" and timed_out and not switch.is_true(ch.get_var("playback_timeout_as_success"))
        )
        ch.set_var("current_application_response", "PLAYBACK ERROR" if failed else "FILE PLAYED")

    def _app_play_and_get_digits(self, frame: _Frame) -> None:
        args = split_arguments(frame.arg)
        if len(args) < 7:
            self.record.protocol_errors.append(f"play_and_get_digits with too few arguments: {frame.arg!r}")
            return
        try:
            min_digits, max_digits, tries = int(args[0]), int(args[1]), int(args[2])
            int(args[3])
        except ValueError:
            self.record.protocol_errors.append(f"play_and_get_digits with non-numeric arguments: {frame.arg!r}")
            return
        terminators = "" if args[4].lower() == "none" else args[4]
        var = args[7] if len(args) > 7 else None
        regex = args[8] if len(args) > 8 else None
        transfer_on_failure = args[10] if len(args) > 10 else None
        ch = self.channel
        self._pre_answer()
        budget = [self._runtime("play_and_get_digits")]
        result: str | None = None
        terminator: str | None = None
        self._start_reading()
        try:
            for _attempt in range(max(1, tries)):
                if self._down or frame.broken:
                    break
                digits, used = self._collect(frame, max(1, max_digits), terminators, budget)
                if used:
                    terminator = used
                if digits and len(digits) >= min_digits and self._regex_ok(regex, digits):
                    result = digits
                    break
        finally:
            self._stop_reading()
        if terminator:
            ch.set_var("read_terminator_used", terminator)
        if result is not None:
            ch.set_var("read_result", "success")
            if var:
                ch.set_var(var, result)
        else:
            ch.set_var("read_result", "failure")
            if var:
                ch.set_var(var, None)
            if transfer_on_failure and not self._down:
                self._transfer(transfer_on_failure)

    def _regex_ok(self, regex: str | None, digits: str) -> bool:
        if not regex:
            return True
        try:
            return re.fullmatch(regex, digits) is not None
        except re.error:
            self.record.protocol_errors.append(f"invalid digits regex {regex!r}")
            return False

    def _app_read(self, frame: _Frame) -> None:
        # read <min> <max> <sound_file> <variable_name> <timeout> <terminators>
        args = split_arguments(frame.arg)
        if len(args) < 4:
            self.record.protocol_errors.append(f"read with too few arguments: {frame.arg!r}")
            return
        try:
            min_digits, max_digits = int(args[0]), int(args[1])
        except ValueError:
            self.record.protocol_errors.append(f"read with non-numeric arguments: {frame.arg!r}")
            return
        var = args[3]
        terminators = args[5] if len(args) > 5 else "#"
        if terminators.lower() == "none":
            terminators = ""
        ch = self.channel
        self._pre_answer()
        budget = [self._runtime("read")]
        self._start_reading()
        try:
            digits, used = ("", None) if self._down else self._collect(frame, max(1, max_digits), terminators, budget)
        finally:
            self._stop_reading()
        if used:
            ch.set_var("read_terminator_used", used)
        ch.set_var(var, digits or None)
        if not digits:
            ch.set_var("read_result", "timeout")
        elif len(digits) >= min_digits:
            ch.set_var("read_result", "success")
        else:
            ch.set_var("read_result", "failure")

    def _app_record(self, frame: _Frame) -> None:
        args = split_arguments(frame.arg, 4)
        ch = self.channel
        self._pre_answer()
        self._wait_app(frame, self._runtime("record"))
        seconds = self.script.record_seconds
        if len(args) > 1:
            try:
                limit = float(args[1])
                if limit > 0:
                    seconds = min(seconds, limit)
            except ValueError:
                pass
        ms = int(seconds * 1000)
        ch.set_var("record_seconds", str(int(seconds)))
        ch.set_var("record_ms", str(ms))
        ch.set_var("record_samples", str(ms * 8))

    def _app_bridge(self, frame: _Frame) -> None:
        ch = self.channel
        dialstring = frame.arg
        whole = self.script.bridge.get(dialstring)
        runtime = self._runtime("bridge")
        causes: list[str] = []  # originate_causes: "uuid;CAUSE" per leg placed (switch_ivr_originate.c)
        placed: list[str] = []  # originated_legs: "uuid;callee name;callee number"
        winner: tuple[_DialLeg, str] | None = None
        cause = "NO_ANSWER"
        for group in _dial_groups(dialstring):
            legs = []
            for leg in group:
                outcome = whole or self.script.bridge.get(leg.text, self.script.bridge.get("*", "answer"))
                legs.append((leg, outcome, leg.variables.get("origination_uuid") or str(uuidlib.uuid4())))
            answered = [
                (leg, uuid if outcome == "answer" else str(uuidlib.uuid4()))
                for leg, outcome, uuid in legs
                if outcome in ("answer", "answer_fork")
            ]
            if answered:
                # the first to answer wins; legs still ringing are hung up with LOSE_RACE
                winner = answered[0]
                for leg, outcome, uuid in legs:
                    if leg is winner[0]:  # its channel: the one with origination_uuid, or the fork's
                        uuid, leg_cause = winner[1], "NONE"
                    else:
                        leg_cause = _bridge_cause(outcome) or "LOSE_RACE"
                    causes.append(f"{uuid};{leg_cause}")
                    placed.append(f"{uuid};Outbound Call;{leg.target}")
                break
            # nobody answers: a leg that rings lasts until the timeout (NO_ANSWER), else the first cause
            group_causes = [_bridge_cause(outcome) or "NO_ANSWER" for _, outcome, _ in legs]
            causes += [f"{uuid};{c}" for (_, _, uuid), c in zip(legs, group_causes, strict=True)]
            placed += [f"{uuid};Outbound Call;{leg.target}" for leg, _, uuid in legs]
            cause = "NO_ANSWER" if "NO_ANSWER" in group_causes else group_causes[0]
            if self._wait_app(frame, runtime) == "hangup":
                return
        if winner is None:
            ch.set_var("originate_disposition", cause)
            ch.set_var("DIALSTATUS", {"USER_BUSY": "BUSY", "NO_ANSWER": "NOANSWER"}.get(cause, cause))
            ch.set_var("originate_failed_cause", cause)
            ch.set_var("originate_causes", _array(causes))
            continue_on_fail = ch.get_var("continue_on_fail") or ""
            keep = (
                cause in CONTINUE_CAUSES
                or switch.is_true(continue_on_fail)
                or cause in {c.strip().upper() for c in continue_on_fail.split(",")}
            )
            if not keep:
                self._hangup(cause, "switch")
            return
        if self._down:
            return
        leg, b_uuid = winner
        target = leg.target
        self._pre_answer()
        other = Profile(
            unique_id=b_uuid,
            channel_name=f"sofia/internal/{target}@{ch.profile.network_addr or '192.0.2.20'}",
            caller_id_name=ch.profile.caller_id_name,
            caller_id_number=ch.profile.caller_id_number,
            destination_number=target,
            context=ch.profile.context,
            direction="outbound",
            logical_direction="inbound",
            callee_id_name="Outbound Call",
            callee_id_number=target,
            ani=ch.profile.caller_id_number,
            created_time=now_us(),
        )
        ch.set_var("originated_legs", _array(placed))
        self._answer()
        other.answered_time = now_us()
        ch.other_leg = other
        ch.profile.bridged_time = now_us()
        ch.set_var("originate_disposition", "SUCCESS")
        ch.set_var("DIALSTATUS", "SUCCESS")
        ch.set_var("originate_causes", _array(causes))
        ch.set_var("signal_bond", b_uuid)
        bridge_ids: Pairs = [("Bridge-A-Unique-ID", self.uuid), ("Bridge-B-Unique-ID", b_uuid)]
        self._emit_channel("CHANNEL_BRIDGE", first=bridge_ids)
        frame.arg_b_leg, self._bridge_frame, self._far_cause = b_uuid, frame, None
        self._b_leg_variables = dict(leg.variables)
        try:
            outcome_wait = self._wait_app(frame, runtime)
        finally:
            self._bridge_frame = None
        far_cause = self._far_cause or "NORMAL_CLEARING"
        ch.set_var("last_bridge_to", b_uuid)
        ch.set_var("bridge_channel", other.channel_name)
        ch.set_var("bridge_uuid", b_uuid)
        ch.set_var("last_bridge_hangup_cause", far_cause)
        ch.set_var("bridge_hangup_cause", ch.hangup_cause if outcome_wait == "hangup" else far_cause)
        self._emit_channel("CHANNEL_UNBRIDGE", first=bridge_ids)
        if not self._down and switch.is_true(ch.get_var("hangup_after_bridge")):
            self._hangup("NORMAL_CLEARING", "switch")

    def _app_transfer(self, frame: _Frame) -> None:
        self._transfer(frame.arg)

    def _app_respond(self, frame: _Frame) -> None:
        words = frame.arg.split(None, 1)
        try:
            code = int(words[0]) if words else 0
        except ValueError:
            self.record.protocol_errors.append(f"respond with a non-numeric code: {frame.arg!r}")
            return
        ch = self.channel
        if code >= 300:
            if ch.answer_state != "answered":
                self._hangup(RESPOND_CAUSES.get(code, "NORMAL_UNSPECIFIED"), "app")
        elif code == 180:
            self._ring_ready()
        elif code == 183:
            self._pre_answer()

    def _app_set(self, frame: _Frame) -> None:
        # base_set: name up to '=' (else ','), and the value is expanded a second time
        separator = "=" if "=" in frame.arg else ","
        name, sep, value = frame.arg.partition(separator)
        self.channel.set_var(name, self.channel.expand(value) if sep and value else None)

    def _app_export(self, frame: _Frame) -> None:
        name, sep, value = frame.arg.partition("=")
        name = name.strip()
        local = True
        if name.startswith("nolocal:"):
            name, local = name[len("nolocal:") :], False
        if local:
            self.channel.set_var(name, value if sep else None)
        exported = [v for v in (self.channel.variables.get("export_vars") or "").split(",") if v]
        if name and name not in exported:
            self.channel.set_var("export_vars", ",".join([*exported, name]))

    def _app_multiset(self, frame: _Frame) -> None:
        text = frame.arg
        separator = " "
        if text.startswith("^^") and len(text) > 2:
            separator, text = text[2], text[3:]
        for item in text.split(separator):
            if item:
                name, sep, value = item.partition("=")
                self.channel.set_var(name, self.channel.expand(value) if sep and value else None)

    def _app_unset(self, frame: _Frame) -> None:
        self.channel.set_var(frame.arg.strip(), None)

    def _app_hangup(self, frame: _Frame) -> None:
        self._hangup(frame.arg.strip() or "NORMAL_CLEARING", "app")

    def _app_event(self, frame: _Frame) -> None:
        pairs: Pairs = []
        name = "CHANNEL_APPLICATION"
        for item in frame.arg.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                continue
            if key.strip().lower() == "event-name":
                name = value.strip().upper()
            else:
                pairs.append((key.strip(), value))
        self._emit(name, self.channel.event(name, first=pairs))

    def _app_sched_hangup(self, frame: _Frame) -> None:
        words = frame.arg.split()
        if not words:
            return
        when = words[0]
        cause = words[1] if len(words) > 1 else "ALLOTTED_TIMEOUT"
        try:
            delay = float(when[1:]) if when.startswith("+") else float(when) - time.time()
        except ValueError:
            self.record.protocol_errors.append(f"sched_hangup with a bad time: {frame.arg!r}")
            return

        def later() -> None:
            gevent.sleep(max(0.0, min(delay, self.safety_timeout)))
            self._hangup(cause, "app")

        self._greenlets.append(gevent.spawn(later))


def connect_tcp(
    address: tuple[str, int],
    script: CallScript | None = None,
    *,
    timeout: float = 10.0,
    chunker: Callable[[bytes], list[bytes]] | None = None,
    notice_linger_after_seconds: float | None = None,
    timing: TimingModel | None = None,
) -> FakeFreeSWITCH:
    """Open a TCP connection to an app server, as FreeSWITCH's ``socket`` application does; call ``.run()``."""
    sock = gevent.socket.create_connection(address, timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # FreeSWITCH sets it (spec 2.1)
    return FakeFreeSWITCH(
        script, sock, chunker=chunker, notice_linger_after_seconds=notice_linger_after_seconds, timing=timing
    )
