"""Exactly-once originate with failover: a call is placed on one node, or the result says why not.

1. esl-app chooses the call's ``origination_uuid`` and each attempt's ``Job-UUID`` before anything is
   sent, and hands them to ``on_attempt`` first (the dialer writes its attempt row there: write it
   down before you do it).
2. ``bgapi originate`` goes to the least-loaded eligible node (``ClusterRegistry.pick``).
3. The BACKGROUND_JOB decides:
   - ``+OK <uuid>``: placed on that node;
   - ``-ERR <cause>`` where the cause means the node could not start the call (paused, full, over
     its rate: ``failover_causes``): ask the node ``uuid_exists <uuid>``; "false" moves the call to
     the next node, "true" means it is placed after all;
   - any other ``-ERR <cause>`` (USER_BUSY, NO_ANSWER, ...): the callee was reached; failed, no retry.
4. The connection drops (or the job outlives ``job_timeout``) before the result: the node is asked
   ``uuid_exists`` once it is reachable again (within ``reconcile_timeout``). "true": placed. A node
   that does not come back, or says "false", gives ``unknown``: "false" cannot tell "never created"
   from "created and already over", so no second call is ever made (``failover_on_lost_connection``
   opts into the retry on "false").

The same ``origination_uuid`` is used on every node: a node is only left once it said the UUID does
not exist there, so the UUID names one call in the whole cluster.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

import gevent
from pydantic import BaseModel, Field

from .dialstring import OriginateTarget, originate_command
from .registry import ClusterRegistry
from .settings import Role

log = logging.getLogger("esl_app.cluster.originate")

NO_NODE = "NO_NODE_AVAILABLE"
AttemptOutcome = Literal["placed", "exists", "refused", "failed", "not_sent", "lost", "unknown"]


class OriginateAttempt(BaseModel):
    """One node tried: what it answered."""

    node: str
    origination_uuid: str
    job_uuid: str
    outcome: AttemptOutcome | None = None
    cause: str | None = None
    detail: str = ""


class OriginateResult(BaseModel):
    """``placed``: the call exists on ``node``. ``failed``: it is not up anywhere; ``cause`` is the final
    hangup cause (from ``node``, or NO_NODE_AVAILABLE), ``attempts`` says why each node failed.
    ``unknown``: ``node`` may have placed it and cannot say; it was not tried anywhere else."""

    status: Literal["placed", "failed", "unknown"]
    node: str | None = None
    origination_uuid: str
    job_uuid: str | None = None
    cause: str | None = None
    detail: str = ""
    attempts: list[OriginateAttempt] = Field(default_factory=list)

    @property
    def placed(self) -> bool:
        return self.status == "placed"


def _inbound_errors() -> tuple[type[BaseException], ...]:
    from ..transport import inbound

    return (inbound.InboundError,)


def _cause(body: str) -> str:
    words = body[4:].split() if body.startswith("-ERR") else body.split()
    return words[0] if words else "UNKNOWN"


class Originator:
    """Places calls on the cluster of ``registry``; one instance serves a whole process."""

    def __init__(self, registry: ClusterRegistry) -> None:
        self.registry = registry
        self.settings = registry.settings

    def originate(
        self,
        destination: str,
        target: OriginateTarget,
        *,
        role: Role | str = Role.OUTBOUND,
        variables: Mapping[str, object] | None = None,
        timeout: int | None = None,
        origination_uuid: str | None = None,
        on_attempt: Callable[[OriginateAttempt], None] | None = None,
    ) -> OriginateResult:
        call_uuid = origination_uuid or str(uuidlib.uuid4())
        ring = int(timeout if timeout is not None else self.settings.originate_timeout)
        # refused here, before any node is asked, when a value cannot be passed safely
        command = originate_command(destination, target, origination_uuid=call_uuid, timeout=ring, variables=variables)
        attempts: list[OriginateAttempt] = []
        tried: set[str] = set()
        while True:
            node = self.registry.pick(role, exclude=tried)
            if node is None:
                detail = "no eligible node" if not attempts else "every eligible node refused"
                return self._finish(
                    OriginateResult(status="failed", origination_uuid=call_uuid, cause=NO_NODE, detail=detail,
                                    attempts=attempts),
                    destination,
                )  # fmt: skip
            tried.add(node.name)
            attempt = OriginateAttempt(node=node.name, origination_uuid=call_uuid, job_uuid=str(uuidlib.uuid4()))
            attempts.append(attempt)
            if on_attempt is not None:
                on_attempt(attempt)
            token = self.registry.begin_originate(node.name)
            placed = False
            try:
                self._attempt(node.name, command, attempt, ring)
                placed = attempt.outcome in ("placed", "exists")
            finally:
                self.registry.end_originate(node.name, token, placed=placed)
            if attempt.outcome in ("placed", "exists"):
                return self._finish(
                    OriginateResult(status="placed", node=node.name, origination_uuid=call_uuid,
                                    job_uuid=attempt.job_uuid, detail=attempt.detail, attempts=attempts),
                    destination,
                )  # fmt: skip
            if attempt.outcome in ("refused", "not_sent"):
                continue  # the node could not start the call and says it does not exist: next node
            status = "failed" if attempt.outcome == "failed" else "unknown"
            return self._finish(
                OriginateResult(status=status, node=node.name,
                                origination_uuid=call_uuid, job_uuid=attempt.job_uuid, cause=attempt.cause,
                                detail=attempt.detail, attempts=attempts),
                destination,
            )  # fmt: skip

    # -- one node --------------------------------------------------------------------------------
    def _attempt(self, name: str, command: str, attempt: OriginateAttempt, ring: int) -> None:
        from ..transport.inbound import CommandFailed, InboundError, NotConnected

        client = self.registry.client(name)
        job_timeout = max(self.settings.job_timeout, ring + 10.0)
        try:
            job = client.bgapi(command, job_uuid=attempt.job_uuid, timeout=self.settings.command_timeout)
        except NotConnected as exc:
            # raised before anything was written: the node never saw the command
            attempt.outcome, attempt.detail = "not_sent", f"not connected: {exc}"
            return
        except InboundError as exc:
            # a write that timed out: part of the command, or all of it, may have reached the node
            attempt.detail = f"bgapi not written: {type(exc).__name__}: {exc}"
            self._reconcile(name, attempt, after=attempt.detail, lost=True)
            return
        try:
            body = job.wait(job_timeout)
        except CommandFailed as exc:
            # the bgapi itself was answered -ERR (e.g. permission denied): nothing ran, but ask anyway
            attempt.outcome, attempt.cause = "refused", _cause(exc.reply.strip())
            attempt.detail = f"bgapi refused: {exc}"
            self._reconcile(name, attempt, after=attempt.detail)
            return
        except InboundError as exc:
            # JobLost, a timeout, a disconnect notice: the command may have run, or may still be running
            attempt.detail = f"no job result: {type(exc).__name__}: {exc}"
            self._reconcile(name, attempt, after=attempt.detail, lost=True)
            return
        body = (body or "").strip()
        if body.startswith("+OK"):
            attempt.outcome, attempt.detail = "placed", body
            return
        cause = _cause(body)
        attempt.cause = cause
        if body.startswith("-ERR") and cause in self.settings.failover_causes:
            attempt.outcome, attempt.detail = "refused", body
            self._reconcile(name, attempt, after=f"node refused: {body}")
            return
        if body.startswith("-ERR"):
            attempt.outcome, attempt.detail = "failed", body
            return
        attempt.detail = f"unexpected job result {body[:200]!r}"
        self._reconcile(name, attempt, after=attempt.detail, lost=True)

    def _reconcile(self, name: str, attempt: OriginateAttempt, *, after: str, lost: bool = False) -> None:
        """Ask the node whether the call exists; sets ``attempt.outcome``.

        ``refused``/``not_sent`` (safe to try the next node) only when the node says the UUID does
        not exist and either it refused the call or ``failover_on_lost_connection`` is set.
        """
        client = self.registry.client(name)
        deadline = self.registry.clock() + self.settings.reconcile_timeout
        answer: str | None = None
        error: Any = None
        while answer is None:
            remaining = deadline - self.registry.clock()
            if remaining <= 0:
                break
            if not client.connected:
                client.wait_connected(min(remaining, 0.5))
                continue
            try:
                answer = client.api(f"uuid_exists {attempt.origination_uuid}", timeout=min(remaining, 2.0)).strip()
            except _inbound_errors() as exc:
                error = exc
                gevent.sleep(min(0.05, max(0.0, deadline - self.registry.clock())))
        if answer == "true":
            attempt.outcome = "exists"
            attempt.detail = f"{after}; uuid_exists: true"
        elif answer == "false" and (not lost or self.settings.failover_on_lost_connection):
            attempt.outcome = "refused" if attempt.outcome == "refused" or not lost else "not_sent"
            attempt.detail = f"{after}; uuid_exists: false"
        elif answer == "false":
            attempt.outcome = "unknown"
            attempt.detail = f"{after}; uuid_exists: false, but the call may have been placed and ended meanwhile"
        else:
            attempt.outcome = "unknown"
            why = f"unreadable answer {answer!r}" if answer is not None else f"node unreachable ({error or 'timeout'})"
            attempt.detail = f"{after}; uuid_exists not answered: {why}"

    def _finish(self, result: OriginateResult, destination: str) -> OriginateResult:
        level = logging.INFO if result.status == "placed" else logging.WARNING
        log.log(
            level, "originate %s to %s: %s%s%s (%d attempt(s))", result.origination_uuid, destination, result.status,
            f" on {result.node}" if result.node else "", f" cause {result.cause}" if result.cause else "",
            len(result.attempts),
        )  # fmt: skip
        return result


def originate(registry: ClusterRegistry, destination: str, target: OriginateTarget, **kwargs: Any) -> OriginateResult:
    """``Originator(registry).originate(...)``."""
    return Originator(registry).originate(destination, target, **kwargs)
