"""``App``: decorator routing, guards and the life of one call from ``connect`` to the last byte.

```python
app = App()

@app.guard
def not_blocked(call):
    if call.caller_id_number in BLOCKED:
        return Reject(403)

@app.route(destination=regex(r"9(?P<number>\\d+)"))
def dial_out(call, number):
    call.bridge(f"sofia/gateway/carrier/{number}")
```
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, Field

from .call import HANDOFF_CONTEXT, HANDOFF_DESTINATION, Call
from .errors import CallEnded, CommandError, EslAppError, RouteError
from .handoff import MARKER as HANDOFF_MARKER
from .handoff import HandoffSigner
from .protocol import commands
from .protocol.expansion import setvar_value
from .recovery import VARIABLE as CHECKPOINT_VARIABLE
from .recovery import CheckpointCodec, Journal
from .routing import Matcher, Route, RouteMatch, RouteTable, SocketMode, build_route
from .session import Session, SessionObserver, SessionSettings

log = logging.getLogger("esl_app.app")

# the call this greenlet is handling, for structured logs (esl_app.pools.logs); gevent gives every
# greenlet its own context, so these never leak from one call to another
CALL_UUID: ContextVar[str] = ContextVar("esl_app_call_uuid", default="")
CALL_POOL: ContextVar[str] = ContextVar("esl_app_call_pool", default="")


def current_pool() -> str:
    """The worker pool the current call arrived on ("" outside a pool)."""
    return CALL_POOL.get()

Flow = Callable[..., Any]
Guard = Callable[[Call], "Reject | None"]
# the pool door's word once the connect reply is in (``handle(admit=)``): given whether the call is a
# hand-off's second leg, None to go on or the reason to refuse it (esl_app.pools.worker)
AdmitAfterConnect = Callable[[bool], "str | None"]
HangupHook = Callable[[Call, str | None], None]
Condition = str | Matcher | re.Pattern[str]

# Q.850 causes FreeSWITCH maps these SIP codes to (so the channel's cause matches the response)
_SIP_TO_CAUSE = {
    403: "CALL_REJECTED", 404: "UNALLOCATED_NUMBER", 480: "NO_USER_RESPONSE", 486: "USER_BUSY",
    487: "ORIGINATOR_CANCEL", 503: "NORMAL_TEMPORARY_FAILURE", 603: "CALL_REJECTED",
}  # fmt: skip


class Reject(BaseModel):
    """What a guard returns to refuse a call before answer: a SIP response and/or a hangup cause."""

    code: int | None = Field(None, ge=300, le=699)
    reason: str | None = None
    cause: str | None = None

    def hangup_cause(self) -> str:
        if self.cause:
            return self.cause
        return _SIP_TO_CAUSE.get(self.code or 0, "CALL_REJECTED" if self.code else "NORMAL_CLEARING")


class App:
    def __init__(
        self, name: str = "esl-app", settings: SessionSettings | None = None, *, max_calls: int | None = None
    ) -> None:
        self.name = name
        self.session_settings = settings or SessionSettings()
        self.max_calls = max_calls  # over it, calls are refused with 503 (not connect+exit: greenswitch G17)
        self.active_calls = 0
        self.refused_calls = 0
        self.observer: SessionObserver | None = None  # metrics hook (esl_app.metrics)
        self._routes: list[Route] = []
        self._guards: list[Guard] = []
        self._hangup_hooks: list[HangupHook] = []
        self._default: Flow | None = None
        self._table: RouteTable | None = None
        self._pool_tables: dict[str, RouteTable] = {}
        # where a static call goes when its route needs an async socket: "EXTENSION [DIALPLAN [CONTEXT]]"
        self.handoff_extension = "esl_app_async XML esl_app"
        # signs the marker that lets the async leg be recognised (esl_app.handoff); servers give it
        # the deployment's secret, so that any worker (or host) sharing it recognises the second leg
        self.handoff = HandoffSigner()
        self.before_hand_off: Callable[[], None] | None = None  # the pool door's note (esl_app.pools)
        self._resume_hooks: list[Guard] = []
        self._resumable: set[str] = set()  # names of the routes declared resumable=True
        self._codec: tuple[HandoffSigner, CheckpointCodec] | None = None
        self.calls_resumed = 0
        self.calls_restarted = 0
        self._startup_hooks: list[Callable[[], None]] = []
        self._shutdown_hooks: list[Callable[[], None]] = []
        self.started = False
        self._mode_warned = False
        self.calls_handled = 0

    # -- decorators ------------------------------------------------------------------------------
    def route(
        self,
        destination: Condition | None = None,
        *,
        caller: Condition | None = None,
        context: Condition | None = None,
        variables: Mapping[str, Condition] | None = None,
        name: str | None = None,
        pool: str | Iterable[str] | None = None,
        mode: SocketMode | None = None,
        resumable: bool = False,
    ) -> Callable[[Flow], Flow]:
        """Register a flow. A plain string matches exactly; use ``prefix()`` or ``regex()`` otherwise.

        ``pool``: the worker pool(s) whose calls may run this route (``"inbound"``, ``"outbound"``...);
        a call arriving on a pool's port only runs that pool's routes and the routes without a pool.

        ``mode="async"``: the flow is interactive (menus, queues, waiting for events) and needs an
        async socket. A call that arrives on a static socket (the fast way to decide, spec 9) is handed
        off first: its destination and context are saved in channel variables and it is transferred
        to ``handoff_extension``, whose dialplan connects again with ``socket ... async full``.

        ``resumable=True``: the call survives the death of the worker running it (esl_app.recovery).
        Every application the flow runs is checkpointed on the channel; when the dialplan's next
        ``socket`` brings the call back, the flow is replayed to where it was and goes on from there
        (no prompt played twice, no bridge placed twice). The route needs a stable ``name``.
        """

        def register(flow: Flow) -> Flow:
            route = build_route(
                flow,
                destination=destination,
                caller=caller,
                context=context,
                variables=variables,
                name=name,
                order=len(self._routes),
                pool=pool,
                mode=mode,
            )
            if resumable:
                self._resumable.add(route.name)
            self._routes.append(route)
            self._table = None
            self._pool_tables = {}
            return flow

        return register

    def guard(self, check: Guard) -> Guard:
        """Run ``check(call)`` before routing, in declaration order; a ``Reject`` refuses the call."""
        self._guards.append(check)
        return check

    def on_resume(self, hook: Guard) -> Guard:
        """Run ``hook(call)`` on the async leg of a handed-off call, instead of the guards (which ran
        on its first leg and are not run again): where a guard's per-call state is attached again,
        e.g. the routing decision a flow reads. It may return a ``Reject``, like a guard."""
        self._resume_hooks.append(hook)
        return hook

    def default(self, flow: Flow) -> Flow:
        """The flow for calls no route matches (without one they get 404 / UNALLOCATED_NUMBER)."""
        if self._default is not None:
            raise RouteError(f"a default flow is already set ({self._default.__qualname__})")
        self._default = flow
        return flow

    def on_hangup(self, hook: HangupHook) -> HangupHook:
        """Run ``hook(call, cause)`` after every call (cause None when the call was transferred)."""
        self._hangup_hooks.append(hook)
        return hook

    def on_startup(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook()`` once before the first call (e.g. load routing data so the first call hits)."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: Callable[[], None]) -> Callable[[], None]:
        self._shutdown_hooks.append(hook)
        return hook

    def startup(self) -> None:
        """Compile the routes and run the startup hooks; servers call it before accepting calls."""
        if self.started:
            return
        self.compile()
        for hook in self._startup_hooks:
            hook()
        self.started = True

    def shutdown(self) -> None:
        if not self.started:
            return
        self.started = False
        for hook in reversed(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                log.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))

    # -- routing ---------------------------------------------------------------------------------
    def compile(self) -> RouteTable:
        """Build the route table (once); conflicting or invalid routes raise ``RouteError`` here."""
        if self._table is None:
            table = RouteTable(self._routes)
            pool_tables = {pool: self._build_pool_table(pool) for pool in self.declared_pools()}
            self._table, self._pool_tables = table, pool_tables
        return self._table

    def declared_pools(self) -> set[str]:
        """The pool names routes declare."""
        return {pool for route in self._routes if route.pools for pool in route.pools}

    def table_for(self, pool: str | None) -> RouteTable:
        """The routes a call arriving on ``pool`` may run (every route when ``pool`` is None)."""
        table = self.compile()
        if pool is None:
            return table
        found = self._pool_tables.get(pool)
        if found is None:
            found = self._pool_tables[pool] = self._build_pool_table(pool)
        return found

    def _build_pool_table(self, pool: str) -> RouteTable:
        return RouteTable([route for route in self._routes if route.runs_in(pool)])

    def resolve(self, call: Call) -> RouteMatch | None:
        return self.compile().match(call.destination, call.caller_id_number, call.context, call.variable)

    # -- one call --------------------------------------------------------------------------------
    def handle(
        self,
        sock: Any,
        address: tuple[str, int] | None = None,
        *,
        pool: str | None = None,
        expected_mode: SocketMode | None = None,
        admit: AdmitAfterConnect | None = None,
    ) -> Call | None:
        """Drive one outbound-socket connection from ``connect`` to close. Returns the call.

        ``pool``: the worker pool the connection arrived on; only its routes (and routes without a
        pool) can match. ``expected_mode``: the socket mode the pool's dialplan should use; a call in
        the other mode still runs (the Call API is the same) but the mismatch is logged.
        ``admit``: the pool door, told once the connect reply shows whether this is a hand-off's
        second leg; it returns the reason to refuse the call, or None.
        """
        if not self.started:
            self.startup()
        table = self.table_for(pool)
        if pool is not None:
            CALL_POOL.set(pool)
        session = Session(
            sock,
            self.session_settings,
            name=f"{address[0]}:{address[1]}" if address else "call",
            observer=self.observer,
        )
        try:
            session.connect()
        except CallEnded:
            log.info("%s: the call ended before it could be connected", session.name)
            session.finish()
            return None
        except EslAppError as exc:
            log.error("%s: handshake failed: %s", session.name, exc)
            session.connection.close()
            return None
        CALL_UUID.set(session.uuid)
        if expected_mode is not None and session.mode != expected_mode and not self._mode_warned:
            self._mode_warned = True
            log.warning(
                "%s: pool %s expects %s sockets but this call came on a %s one: check the dialplan's socket line",
                session.uuid, pool, expected_mode, session.mode,
            )  # fmt: skip
        call = Call(session)
        call.resumed = self._recognise_second_leg(call) or self._recognise_checkpoint(call, table)
        if admit is not None:
            refused = admit(call.resumed)
            if refused is not None:
                self._refuse_at_door(call, refused)
                return call
        # a second leg was admitted on its first: refusing it now would drop an accepted call
        if not call.resumed and self.max_calls is not None and self.active_calls >= self.max_calls:
            self._refuse_over_capacity(call)
            return call
        self.calls_handled += 1
        self.active_calls += 1
        try:
            self.drive(call, table)
        finally:
            session.finish()
            self.active_calls -= 1
            self.run_hangup_hooks(call)
        return call

    def drive(self, call: Call, table: RouteTable) -> None:
        """Guards, routing and the flow for a connected call, whatever its transport (the socket
        here, ``esl_app.modpython`` inside FreeSWITCH); a call still up at the end is hung up."""
        try:
            self._run(call, table)
        except CallEnded:
            pass  # the caller hung up or the call was handed off: the normal end of many calls
        except Exception:
            log.exception("%s: flow failed", call.uuid)
            self._end_after_error(call)
        finally:
            if call.is_up:
                try:
                    call.hangup("NORMAL_CLEARING")
                except EslAppError as exc:
                    log.warning("%s: final hangup failed: %s", call.uuid, exc)

    def _recognise_second_leg(self, call: Call) -> bool:
        """Whether this connection is the async leg of a call this deployment handed off (its signed
        marker verifies: esl_app.handoff). The marker is cleared either way: it is good once."""
        marker = call.header("variable_" + HANDOFF_MARKER)
        if not marker:
            return False
        try:
            call.session.execute("unset", HANDOFF_MARKER, wait="none")
        except EslAppError as exc:
            log.warning("%s: could not clear the hand-off marker: %s", call.uuid, exc)
        if self.handoff.verify(marker, call.uuid, call.destination, call.context):
            return True
        log.warning(
            "%s: hand-off marker not valid here (forged, stale, another deployment's, or for another "
            "destination): the call is decided as a new one", call.uuid,
        )  # fmt: skip
        return False

    def checkpoint_codec(self) -> CheckpointCodec:
        """Checkpoints are signed with a key derived from the deployment's hand-off secret (which
        servers set, and which every worker of a deployment shares)."""
        signer = self.handoff
        if self._codec is None or self._codec[0] is not signer:
            self._codec = (signer, CheckpointCodec(signer.derive("checkpoint")))
        return self._codec[1]

    def _recognise_checkpoint(self, call: Call, table: RouteTable) -> bool:
        """Whether this connection brings back a call whose worker died in a resumable flow (its
        channel shows a checkpoint signed here, for this channel and the route it matches now). Such
        a call already passed the door and the guards: only the resume hooks run, then the replay."""
        value = call.header("variable_" + CHECKPOINT_VARIABLE)
        if not value:
            return False
        checkpoint = self.checkpoint_codec().decode(call.uuid, value)
        reason = None
        if checkpoint is None:
            reason = "invalid"  # forged, another deployment's or another channel's
        else:
            if checkpoint.destination and call.header("variable_" + HANDOFF_DESTINATION) is None:
                # a handed-off call (its hand-off variables were used on the async leg): route it as then
                call.restore_destination(checkpoint.destination, checkpoint.context)
            match = table.match(call.destination, call.caller_id_number, call.context, call.variable)
            if match is None or match.route.name != checkpoint.route or checkpoint.route not in self._resumable:
                reason = "route"  # the route changed (a new version), or the call came back elsewhere
            elif checkpoint.issued == 0:
                reason = "empty"
        if reason is not None:
            self.calls_restarted += 1
            log.warning("%s: came back with a checkpoint esl-app cannot resume from (%s): starting over",
                        call.uuid, reason)  # fmt: skip
            self._notify("call_restarted", reason)
            return False
        assert checkpoint is not None
        call.recovered = checkpoint
        self.calls_resumed += 1
        log.info("%s: resuming %s after %d entries (checkpoint %s)", call.uuid, checkpoint.route,
                 checkpoint.issued, checkpoint.label)  # fmt: skip
        self._notify("call_resumed", checkpoint.label)
        return True

    def _notify(self, what: str, label: str) -> None:
        hook = getattr(self.observer, what, None)
        if hook is not None:
            try:
                hook(label)
            except Exception:
                log.exception("metrics hook %s failed", what)

    def _refuse_at_door(self, call: Call, reason: str) -> None:
        """The pool door's refusal, after the connect reply (see esl_app.pools.admission.refuse)."""
        log.info("%s: refused at the door (%s)", call.uuid, reason)
        try:
            call.session.execute("set", f"esl_app_refused={reason}", wait="none")
            call.session.execute("respond", "503 Service Unavailable", wait="none")
            call.session.hangup("NORMAL_TEMPORARY_FAILURE")
        except EslAppError as exc:
            log.warning("%s: refusing failed: %s", call.uuid, exc)
        call.session.finish()

    def _refuse_over_capacity(self, call: Call) -> None:
        """Refuse explicitly: a 503 the proxy can act on. Closing the socket instead would let the
        dialplan go on, or hang the call up with NORMAL_CLEARING (spec 2.7)."""
        self.refused_calls += 1
        log.warning("%s: over capacity (%d calls), refusing with 503", call.uuid, self.active_calls)
        try:
            call.session.execute("respond", "503 Service Unavailable", wait="none")
            call.session.hangup("NORMAL_TEMPORARY_FAILURE")
        except EslAppError as exc:
            log.warning("%s: refusing failed: %s", call.uuid, exc)
        call.session.finish()

    def _run(self, call: Call, table: RouteTable) -> None:
        self._consume_handoff(call)
        # a hand-off's second leg passed the guards on its first leg: only the resume hooks run
        for check in self._resume_hooks if call.resumed else self._guards:
            verdict = check(call)
            if verdict is not None:
                log.info("%s: refused by %s: %s", call.uuid, getattr(check, "__name__", check), verdict)
                self.reject(call, verdict)
                return
        match = table.match(call.destination, call.caller_id_number, call.context, call.variable)
        if match is None:
            if self._default is None:
                log.info("%s: no route for %r", call.uuid, call.destination)
                self.reject(call, Reject(code=404))
                return
            call.match = None
            self._default(call)
            return
        call.match = match
        if match.route.mode == "async" and call.mode == "static":
            if not call.resumed:
                self.hand_off_to_async(call)
                return
            # the hand-off extension connected static again: handing off once more would loop
            log.error("%s: the hand-off extension's socket is not async (dialplan/esl_app.xml); running the "
                      "async route on a static socket", call.uuid)  # fmt: skip
        # in process (mod_python3) the flow runs on the call's own thread: no worker can die apart from
        # the switch, so there is nothing to journal
        if match.route.name in self._resumable and not call.session.in_process:
            name = match.route.name
            recovered = call.recovered if call.recovered is not None and call.recovered.route == name else None
            writer = self.checkpoint_codec().writer(call.uuid, name, call.destination, call.context)
            call.journal = Journal(writer, recovered)
        kwargs = match.kwargs()
        # a call through ** adds an interpreter frame on the C stack, which the flow's greenlet keeps
        # (copied to the heap) for as long as the call is held
        if kwargs:
            match.route.flow(call, **kwargs)
        else:
            match.route.flow(call)

    def hand_off_to_async(self, call: Call) -> None:
        """Move a call from a static socket to an async one: save where it was going, then transfer it
        to the hand-off extension (dialplan/esl_app.xml), which runs ``socket ... async full``. The
        async connection routes it again with the saved destination and context."""
        log.info("%s: route needs an async socket: handing off via %s", call.uuid, self.handoff_extension)
        # the destination is caller text: stored as data (uuid_setvar, or set escaped), never expanded;
        # the signed marker by which the async leg is recognised: it skips the door's count and the guards
        marker = self.handoff.issue(call.uuid, call.destination, call.context)
        variables = {HANDOFF_DESTINATION: call.destination, HANDOFF_CONTEXT: call.context, HANDOFF_MARKER: marker}
        session = call.session
        if session.full and not session.in_process:
            # no round trip of their own: the uuid_setvar commands go out in the transfer's write and
            # FreeSWITCH runs them, in order, before the transfer (spec 4.3); their replies are read
            # later (a refusal is logged: only a channel already gone refuses, and then so does the transfer)
            for name, value in variables.items():
                args = ("uuid_setvar", call.uuid, name, *((setvar_value(value),) if value else ()))
                session.ride_along(commands.api(*args), functools.partial(_log_refused_variable, call.uuid, name))
        else:
            call.set_variables(variables)
        if self.before_hand_off is not None:
            self.before_hand_off()
        call.handed_off = True
        extension, _, rest = self.handoff_extension.partition(" ")
        dialplan, _, context = rest.partition(" ")
        call.transfer(extension, dialplan or "XML", context or None)

    @staticmethod
    def _consume_handoff(call: Call) -> None:
        """The hand-off variables are used once: this connection keeps them (``call.destination`` reads
        its connect data), the channel drops them, so a later transfer that comes back to esl-app is
        routed by its own destination instead of handed off to the old one again (a loop)."""
        names = [n for n in (HANDOFF_DESTINATION, HANDOFF_CONTEXT) if call.header("variable_" + n) is not None]
        if not names:
            return
        try:
            if call.session.full:
                # names without '=' unset (mod_commands uuid_setvar_multi); nothing here is expanded
                output = call.session.api("uuid_setvar_multi", call.uuid, ";".join(names))
                if not output.startswith("+OK"):
                    raise CommandError("api uuid_setvar_multi", output)
            else:
                for name in names:
                    call.session.execute("unset", name, wait="none")
        except CommandError as exc:
            log.warning("%s: could not clear the hand-off variables: %s", call.uuid, exc)

    @staticmethod
    def reject(call: Call, verdict: Reject) -> None:
        if verdict.code is not None and not call.answered:
            call.respond(verdict.code, verdict.reason)
        call.hangup(verdict.hangup_cause())

    @staticmethod
    def _end_after_error(call: Call) -> None:
        """A flow raised: end the call cleanly (503 before answer, so a proxy can try elsewhere)."""
        if not call.is_up:
            return
        try:
            if not call.answered:
                # bounded: an error path must not wait an execute_timeout for its own cleanup
                call.respond(503, timeout=call.session.settings.cleanup_timeout)
            call.hangup("NORMAL_TEMPORARY_FAILURE")
        except EslAppError as exc:
            log.warning("%s: could not end the call after the error: %s", call.uuid, exc)

    def run_hangup_hooks(self, call: Call) -> None:
        """The call's and the app's ``on_hangup`` hooks (each one's failure logged, not raised)."""
        cause = None if call.session.transferred and not call.session.hung_up.is_set() else call.hangup_cause
        for hook in [*call._hangup_hooks, *self._hangup_hooks]:
            try:
                hook(call, cause)
            except Exception:
                log.exception("%s: on_hangup hook %s failed", call.uuid, getattr(hook, "__name__", hook))


def _log_refused_variable(uuid: str, name: str, result: Any) -> None:
    frame = result.value if result.successful() else None
    if frame is not None and not frame.reply_text.startswith("+OK"):
        log.error("%s: hand-off variable %s not set (%s): the async leg will not find it", uuid, name,
                  frame.reply_text.strip())  # fmt: skip
