"""Calls on a fake FreeSWITCH node: originate parsing, outcomes, and the small dialplan each call runs.

``FakeNode`` (``esl_app.testing.fake_node``) creates a ``NodeCall`` for every leg an ``originate``
places. What the far end does is an ``Outcome`` per destination (answer, busy, no answer, ...).
Once answered, the call runs its actions in order, like a dialplan extension: ``socket`` connects to
an application server through the per-call fake (``esl_app.testing.peer``), and when that socket
ends with the call still up, the call goes on with the next action, as the real switch does
(captures 05a-05i); with no action left it is hung up with NORMAL_CLEARING.
"""

from __future__ import annotations

import contextlib
import re
import socket
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import gevent
from gevent.event import Event as Signal
from pydantic import BaseModel, ConfigDict

from .channel import Channel, Pairs
from .peer import CallScript, FakeFreeSWITCH, connect_tcp

if TYPE_CHECKING:
    from .fake_node import FakeNode

__all__ = [
    "Action",
    "NodeCall",
    "OriginateRequest",
    "Outcome",
    "parse_actions",
    "parse_originate",
    "parse_outcome",
]

ORIGINATE_SYNTAX = (
    "<call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>]"
    " [<timeout_sec>]"
)
# the endpoints a dial string may name; anything else is CHAN_NOT_IMPLEMENTED (switch_core_session.c)
ENDPOINTS = frozenset({"sofia", "user", "loopback", "verto.rtc", "freetdm", "skinny", "rtmp", "null", "error", "group"})
# applications that keep the call up until it is hung up from elsewhere
HOLDING_APPS = frozenset({"park", "echo", "conference", "playback", "endless_playback", "fifo", "valet_park"})

OutcomeKind = Literal["answer", "busy", "no_answer", "reject", "unroutable", "fail"]
_CAUSES = {
    "busy": "USER_BUSY",
    "no_answer": "NO_ANSWER",
    "reject": "CALL_REJECTED",
    "unroutable": "NO_ROUTE_DESTINATION",
}


class Outcome(BaseModel):
    """What the far end does with a call to one destination.

    ``answer``; ``busy`` (USER_BUSY); ``no_answer`` (NO_ANSWER once the ring time, capped by the
    originate timeout, is over); ``reject`` (CALL_REJECTED); ``unroutable`` (NO_ROUTE_DESTINATION);
    ``fail`` with any ``cause``. ``ring_seconds``: time before the outcome (None: the node's
    default). ``hangup_after``: an answered call is hung up by the far end after this many seconds.
    """

    model_config = ConfigDict(extra="forbid")

    kind: OutcomeKind = "answer"
    cause: str | None = None
    ring_seconds: float | None = None
    hangup_after: float | None = None

    @property
    def failure_cause(self) -> str | None:
        if self.kind == "answer":
            return None
        if self.kind == "fail":
            return self.cause or "NORMAL_TEMPORARY_FAILURE"
        return _CAUSES[self.kind]


def parse_outcome(spec: str | Outcome) -> Outcome:
    """``answer``, ``busy``, ``no_answer``, ``reject``, ``unroutable`` (alias ``unknown``) or ``fail:CAUSE``."""
    if isinstance(spec, Outcome):
        return spec
    kind, _, cause = spec.partition(":")
    if kind == "fail":
        if not re.fullmatch(r"[A-Z_]+", cause):
            raise ValueError(f"fail:<CAUSE> needs an upper-case cause, not {spec!r}")
        return Outcome(kind="fail", cause=cause)
    if cause:
        raise ValueError(f"only fail:<CAUSE> takes a cause, not {spec!r}")
    if kind == "unknown":
        kind = "unroutable"  # a destination the far end does not know: NO_ROUTE_DESTINATION
    return Outcome(kind=kind)  # type: ignore[arg-type]  # pydantic checks the literal


@dataclass(frozen=True)
class Action:
    """One dialplan action: an application and its argument."""

    app: str
    data: str = ""


def parse_actions(actions: Sequence[Action | tuple[str, str] | str]) -> list[Action]:
    """Actions as ``Action``, ``("app", "data")`` or ``"app data"``."""
    out: list[Action] = []
    for item in actions:
        if isinstance(item, Action):
            out.append(item)
        elif isinstance(item, tuple):
            out.append(Action(item[0], item[1] if len(item) > 1 else ""))
        else:
            app, _, data = item.strip().partition(" ")
            out.append(Action(app, data.strip()))
    return out


@dataclass
class OriginateRequest:
    """``originate <dial string> <exten>|&<app>(<args>) [dialplan] [context] [cid_name] [cid_num] [timeout]``."""

    dialstring: str
    variables: dict[str, str]
    endpoint: str
    destination: str
    app: Action | None  # &app(args)
    extension: str | None  # a dialplan extension instead of an application
    context: str = "default"
    caller_id_name: str = "FreeSWITCH"
    caller_id_number: str = "0000000000"
    timeout: float = 60.0


ESCAPE_META = "\\"
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(text: str, delim: str) -> str:
    """``cleanup_separated_string`` (switch_utils.c): drop quotes, undo escapes, trim spaces.

    ``\\'``, ``\\"``, ``\\\\`` and ``\\<delim>`` stand for the character itself; ``\\n``, ``\\r``,
    ``\\t``, ``\\s`` for newline, CR, tab and space. Single quotes group (only when a closing one
    follows) and are removed; trailing spaces outside quotes are dropped.
    """
    i, n = 0, len(text)
    while i < n and text[i] == " ":
        i += 1
    out: list[str] = []
    end: int | None = None
    inside = False
    while i < n:
        char = text[i]
        escaped = False
        if char == ESCAPE_META and i + 1 < n:
            nxt = text[i + 1]
            if nxt in ("'", '"', ESCAPE_META) or (delim and nxt == delim) or _UNESCAPE.get(nxt, nxt) != nxt:
                out.append(_UNESCAPE.get(nxt, nxt) if nxt not in ("'", '"', ESCAPE_META, delim) else nxt)
                end = len(out)
                escaped = True
                i += 1
        if not escaped:
            if char == "'" and (inside or "'" in text[i + 1 :]):
                inside = not inside
                if inside:
                    end = len(out)
            else:
                out.append(char)
                if char != " " or inside:
                    end = len(out)
        i += 1
    return "".join(out if end is None else out[:end])


def separate_string(text: str, delim: str, limit: int = 1024) -> list[str]:
    """``switch_separate_string`` (switch_utils.c): how FreeSWITCH splits api and dial-string arguments.

    ``^^<c>`` at the start changes the delimiter. A backslash protects the next character, single
    quotes group; with a space delimiter runs of spaces separate. At most ``limit`` pieces: the last
    one keeps the rest of the text. Each piece then goes through ``_cleanup``.
    """
    if text.startswith("^^") and len(text) > 3:
        delim, text = text[2], text[3:]
    n = len(text)
    pieces: list[tuple[int, int]] = []
    i = 0
    inside = False
    start = 0
    blank = delim == " "
    state = "start"
    while i < n and len(pieces) < limit:  # as in C: once the last piece started, it takes the rest
        char = text[i]
        if state == "start":
            start = i
            pieces.append((start, n))
            state = "skip_initial" if blank else "find"
            continue
        if state == "skip_initial":
            if char == " ":
                i += 1
            else:
                state = "find"
            continue
        if state == "skip_ending":
            if char == " ":
                i += 1
            else:
                state = "start"
            continue
        # find the delimiter
        if char == ESCAPE_META:
            i += 1
        elif char == "'" and (blank or inside or "'" in text[i + 1 :]):
            inside = not inside
        elif char == delim and not inside:
            pieces[-1] = (start, i)
            state = "skip_ending" if blank else "start"
        i += 1
    return [_cleanup(text[a:b], "" if blank else delim) for a, b in pieces]


def _find_end(text: str, open_char: str, close_char: str) -> int:
    """``switch_find_end_paren``: the index of the bracket that closes the one at 0 (nesting counted)."""
    depth = 0
    for index, char in enumerate(text):
        if char == open_char:
            depth += 1
        elif char == close_char:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _split_vars(text: str) -> dict[str, str]:
    """``{a=1,b=2}`` content as ``switch_event_create_brackets`` reads it: split on ``,`` (or ``^^<c>``),
    then each item on the first ``=``; both passes undo escapes again."""
    out: dict[str, str] = {}
    for item in separate_string(text, ","):
        pair = separate_string(item, "=", 2)
        if len(pair) == 2:
            out[pair[0]] = pair[1]
    return out


def _strip_variables(dialstring: str) -> tuple[dict[str, str], str]:
    variables: dict[str, str] = {}
    text = dialstring
    while text and text[0] in "{[<":
        close = {"{": "}", "[": "]", "<": ">"}[text[0]]
        end = _find_end(text, text[0], close)
        if end < 0:
            break
        variables.update(_split_vars(text[1:end]))
        text = text[end + 1 :]
    return variables, text


def _destination(endpoint: str, rest: str) -> str:
    """The number a dial string calls: ``sofia/gateway/gw/1002`` and ``user/1002@dom`` -> ``1002``,
    ``loopback/1002/context`` -> ``1002``."""
    parts = rest.split("/")
    if endpoint == "loopback":
        target = parts[0]
    elif endpoint == "sofia" and len(parts) >= 3 and parts[0] == "gateway":
        target = parts[2]
    else:
        target = parts[-1]
    return target.split("@", 1)[0]


def parse_originate(arg: str) -> OriginateRequest | str:
    """The request, or the ``-USAGE``/``-ERR`` text FreeSWITCH answers when it cannot be parsed."""
    args = separate_string(arg, " ", 10)
    if len(args) < 2 or len(args) > 7:
        return f"-USAGE: {ORIGINATE_SYNTAX}\n"
    args = [None if a == "undef" else a for a in args]  # type: ignore[misc]
    dialstring = args[0] or ""
    variables, plain = _strip_variables(dialstring)
    # the first leg of a simultaneous (",") or sequential ("|") list is the one the fake places
    first = re.split(r"[,|]|:_:", plain, maxsplit=1)[0]
    _, first = _strip_variables(first)
    endpoint, _, rest = first.partition("/")
    target = args[1] or ""
    app: Action | None = None
    extension: str | None = None
    if target.startswith("&") and len(target) > 1:
        # originate_function: the name ends at "(", the argument at the first ")" if any. Unquoted,
        # "&socket(h:p async full)" arrives cut at the spaces: socket runs without async and full.
        name, _, rest_arg = target[1:].partition("(")
        app = Action(name, rest_arg.split(")", 1)[0])
    else:
        extension = target
    timeout = 60.0
    if len(args) > 6 and args[6]:
        try:
            timeout = float(int(args[6]))
        except ValueError:
            timeout = 60.0
    if "originate_timeout" in variables:
        with contextlib.suppress(ValueError):
            timeout = float(variables["originate_timeout"])
    return OriginateRequest(
        dialstring=dialstring,
        variables=variables,
        endpoint=endpoint.lower(),
        destination=_destination(endpoint.lower(), rest),
        app=app,
        extension=extension,
        context=_arg(args, 3, "default"),
        caller_id_name=variables.get("origination_caller_id_name") or _arg(args, 4, "FreeSWITCH"),
        caller_id_number=variables.get("origination_caller_id_number") or _arg(args, 5, "0000000000"),
        timeout=timeout,
    )


def _arg(args: list[str | None], index: int, default: str) -> str:
    value = args[index] if len(args) > index else None
    return value or default


class LegChannel(Channel):
    """The A-leg an originate creates: an outbound channel (``Call-Direction: outbound``)."""

    def __init__(self, request: OriginateRequest, unique_id: str, first_sequence: int) -> None:
        super().__init__(
            unique_id=unique_id,
            caller_id_name=request.caller_id_name,
            caller_id_number=request.caller_id_number,
            destination=request.destination,
            context=request.context,
            variables=None,
            first_sequence=first_sequence,
        )
        if request.endpoint == "loopback":
            name = f"loopback/{request.destination}-a"
        else:
            name = f"{request.endpoint}/{request.dialstring.rsplit('}', 1)[-1].split('/', 1)[-1]}"
        self.name = name
        p = self.profile
        p.channel_name = name
        p.direction = p.logical_direction = "outbound"
        p.callee_id_name, p.callee_id_number = "Outbound Call", request.destination
        p.username = ""
        p.network_addr = ""
        p.source = "mod_loopback" if request.endpoint == "loopback" else "mod_sofia"
        self.running_state = "CS_INIT"
        self.state_number = 2
        self.call_state = "DOWN"
        # an originated leg has none of the inbound SIP call's variables, nor a socket application
        self.variables = {
            "direction": "outbound",
            "is_outbound": "true",
            "uuid": unique_id,
            "call_uuid": unique_id,
            "session_id": "1",
            "channel_name": name,
            "read_codec": "PCMU",
            "read_rate": "8000",
            "write_codec": "PCMU",
            "write_rate": "8000",
            "originate_endpoint": request.endpoint,
        }
        for key, value in request.variables.items():
            self.set_var(key, value)

    def block(self) -> Pairs:
        replace = {"Call-Direction": "outbound", "Presence-Call-Direction": "outbound", "Channel-HIT-Dialplan": "false"}
        return [(name, replace.get(name, value)) for name, value in super().block()]


@dataclass
class NodeCall:
    """One leg on the node, from CHANNEL_CREATE to CHANNEL_HANGUP_COMPLETE."""

    node: FakeNode
    uuid: str
    request: OriginateRequest
    outcome: Outcome
    channel: LegChannel
    actions: list[Action] = field(default_factory=list)
    answered: bool = False
    hangup_cause: str | None = None
    ended: Signal = field(default_factory=Signal)
    peer: FakeFreeSWITCH | None = None  # the per-call fake while ``socket`` runs
    socket_records: list[object] = field(default_factory=list)  # CallRecord of every socket run
    executed: list[Action] = field(default_factory=list)  # dialplan actions run, in order
    _wake: Signal = field(default_factory=Signal)
    _greenlet: gevent.Greenlet | None = None
    _pending_cause: str | None = None

    @property
    def destination(self) -> str:
        return self.request.destination

    @property
    def alive(self) -> bool:
        return self.hangup_cause is None

    # -- lifecycle, driven by the node -------------------------------------------------------

    def answer(self) -> None:
        ch = self.channel
        ch.mark_answered()
        ch.call_state = "ACTIVE"
        ch.running_state, ch.state_number = "CS_EXECUTE", 4
        self.answered = True
        self.node._fire_channel(self, "CHANNEL_ANSWER")

    def hangup(self, cause: str) -> None:
        """Hang the leg up now (uuid_kill, the far end, hupall): ends whatever it runs."""
        if not self.alive or self._pending_cause is not None:
            return
        self._pending_cause = cause
        peer = self.peer
        if peer is not None:
            peer.hangup(cause)  # the socket's call ends; run_actions then finishes the hangup
        self._wake.set()
        if self._greenlet is None or self._greenlet.dead:
            self.finish(cause)

    def finish(self, cause: str) -> None:
        """CHANNEL_HANGUP then CHANNEL_HANGUP_COMPLETE; the leg no longer counts as a session."""
        if not self.alive:
            return
        ch = self.channel
        self.hangup_cause = cause
        ch.mark_hangup(cause)
        self.node._fire_channel(self, "CHANNEL_HANGUP")
        ch.set_running_state("CS_HANGUP")
        ch.set_running_state("CS_REPORTING")
        last = self.executed[-1] if self.executed else None
        ch.cdr_variables(last.app if last else None, last.data if last else None)
        self.node._fire_channel(self, "CHANNEL_HANGUP_COMPLETE", first=[("Hangup-Cause", cause)])
        self.node._call_ended(self)
        self.ended.set()

    def vanish(self) -> None:
        """The node crashed: no events, the socket to the application server is reset."""
        self.hangup_cause = self.hangup_cause or "CRASH"
        self._wake.set()
        peer = self.peer
        if peer is not None and peer.sock is not None:
            with contextlib.suppress(OSError):
                peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                peer.sock.close()
        greenlet = self._greenlet
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)
        self.ended.set()

    # -- the dialplan ---------------------------------------------------------------------------

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run_actions)

    def _run_actions(self) -> None:
        outcome = self.outcome
        if outcome.hangup_after is not None:
            gevent.spawn_later(outcome.hangup_after, self.hangup, "NORMAL_CLEARING")
        index = 0
        while index < len(self.actions) and self._pending_cause is None:
            action = self.actions[index]
            index += 1
            self.executed.append(action)
            if not self._run(action):
                break
        cause = self._pending_cause or self.node._call_end_cause(self)
        self.finish(cause)

    def _run(self, action: Action) -> bool:
        """Run one action; False when the call must end (hung up, or an application ended it)."""
        app = action.app.lower()
        if app == "socket":
            return self._socket(action.data)
        if app == "hangup":
            self._pending_cause = self._pending_cause or (action.data.strip() or "NORMAL_CLEARING")
            return False
        if app == "respond":
            self._pending_cause = self._pending_cause or "NORMAL_TEMPORARY_FAILURE"
            return False
        if app in ("set", "export"):
            name, sep, value = action.data.partition("=")
            self.channel.set_var(name.strip(), value if sep else None)
            return True
        if app in ("log", "info", "answer", "pre_answer", "ring_ready"):
            return True
        if app == "sleep":
            try:
                seconds = int(action.data.strip() or "0") / 1000
            except ValueError:
                seconds = 0.0
            self._wake.clear()
            self._wake.wait(seconds)
            return self._pending_cause is None
        if app in HOLDING_APPS:
            while self._pending_cause is None:
                self._wake.clear()
                if self._pending_cause is None:
                    self._wake.wait(1.0)
            return False
        # an unknown application hangs the call up (spec 2.5 / 6.15)
        self._pending_cause = self._pending_cause or "DESTINATION_OUT_OF_ORDER"
        return False

    def _socket(self, data: str) -> bool:
        words = data.split()
        if not words:
            return True
        host, _, port_text = words[0].rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            return True
        mode = "async" if "async" in words[1:] else "static"
        full = "full" in words[1:]
        script = CallScript(
            destination=self.destination,
            caller_id_number=self.request.caller_id_number,
            caller_id_name=self.request.caller_id_name,
            context=self.request.context,
            uuid=self.uuid,
            variables={k: v for k, v in self.channel.variables.items() if k not in ("uuid", "call_uuid")},
            mode=mode,
            full=full,
        )
        try:
            peer = connect_tcp((host or "127.0.0.1", port), script, timeout=self.node.socket_connect_timeout)
        except OSError:
            return True  # nothing listening: the dialplan goes on with the next action (05e)
        self.peer = peer
        peer.safety_timeout = self.node.call_safety_timeout
        if self.answered:
            peer._answer()  # the leg was answered before socket ran: the per-call fake knows it
        try:
            record = peer.run()
        finally:
            self.peer = None
        self.socket_records.append(record)
        if record.hangup_cause is not None:
            self._pending_cause = self._pending_cause or record.hangup_cause
            return False
        if record.transferred_to:
            extension = record.transferred_to.split()[0]
            actions = self.node.dialplan.get(extension)
            if actions is None:
                self._pending_cause = "NO_ROUTE_DESTINATION"
                return False
            self.actions[len(self.executed) :] = list(actions)
        return self._pending_cause is None


def new_uuid() -> str:
    return str(uuidlib.uuid4())
