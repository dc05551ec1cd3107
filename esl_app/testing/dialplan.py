"""One call through a dialplan's ``socket`` actions, as ``dialplan/esl_app.xml`` runs it.

FreeSWITCH runs ``socket`` to the first server; when that socket ends with the call still up (the
application server died or closed, spec 2.7 and captures 05a-05i) it goes on with the next action,
the second ``socket``, for the same channel: same UUID, the variables set so far (a checkpoint among
them), the answer state, and the caller still on the line with whatever digits they have not typed
yet. When every ``socket`` has returned, the dialplan answers 503 and hangs up: the call is lost.

``run_dialplan`` plays that with one per-call fake (``esl_app.testing.peer``) per ``socket``, with
``apps_outlive_socket``: an application running when the server went away runs to its end first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from .peer import CallRecord, CallScript, FakeFreeSWITCH, connect_tcp

PROMPTS = frozenset({"playback", "play_and_get_digits", "say", "speak"})
# variables the per-call fake makes for every channel: not carried over, each socket makes its own
_OWN = frozenset({"uuid", "call_uuid", "current_application", "current_application_data"})


class DialplanRecord(BaseModel):
    """What happened to the call across its ``socket`` actions."""

    uuid: str
    sockets: list[CallRecord] = Field(default_factory=list)  # one per socket that connected
    lost: bool = False  # every socket returned with the call up: the dialplan's 503 ran

    @property
    def executed(self) -> list[tuple[str, str]]:
        return [item for record in self.sockets for item in record.executed]

    @property
    def completed(self) -> list[tuple[str, str]]:
        return [item for record in self.sockets for item in record.completed]

    @property
    def hangup_cause(self) -> str | None:
        return self.sockets[-1].hangup_cause if self.sockets else None

    @property
    def repeated_prompts(self) -> list[tuple[str, str]]:
        """Prompts that a later socket played again although an earlier one had played them to the end."""
        heard: Counter[tuple[str, str]] = Counter()
        repeated = []
        for record in self.sockets:
            played = [item for item in record.executed if item[0] in PROMPTS]
            for item in played:
                if heard[item] > 0:
                    repeated.append(item)
            heard.update(item for item in record.completed if item[0] in PROMPTS)
        return repeated

    def count(self, app: str) -> int:
        return sum(1 for name, _ in self.executed if name == app)


def run_dialplan(
    targets: Sequence[tuple[str, int]],
    script: CallScript,
    *,
    kill_when: Callable[[list[tuple[str, str]]], bool] | None = None,
    kill: Callable[[FakeFreeSWITCH], None] | None = None,
    safety_timeout: float = 60.0,
    connect_timeout: float = 5.0,
) -> DialplanRecord:
    """Run the call's ``socket`` actions in order (``targets``). ``kill_when(executed)``: checked as the
    applications start (executed across all sockets so far); when it is true, ``kill(peer)`` runs with
    the per-call fake of that socket (e.g. to SIGKILL the worker at its other end), at most once per
    socket (``once()`` makes a predicate true only once per call)."""
    script = script if script.uuid else script.model_copy(update={"uuid": _new_uuid()})
    assert script.uuid is not None
    record = DialplanRecord(uuid=script.uuid)
    current = script.model_copy(update={"apps_outlive_socket": True})
    answered = False
    done: list[tuple[str, str]] = []
    for number, target in enumerate(targets):
        try:
            peer = connect_tcp(target, current, timeout=connect_timeout)
        except OSError:
            continue  # nothing listening: the dialplan goes on with the next action (05e)
        peer.safety_timeout = safety_timeout
        if answered:
            peer._answer()  # the channel was answered on an earlier socket
        if kill_when is not None:
            peer.on_execute = _killer(peer, done, kill_when, kill)
        result = peer.run()
        record.sockets.append(result)
        done = done + result.executed
        if result.hangup_cause is not None or result.transferred_to:
            return record
        answered = answered or result.answered
        current = _next_socket(current, peer, number)
    record.lost = True
    return record


def _killer(
    peer: FakeFreeSWITCH,
    before: list[tuple[str, str]],
    kill_when: Callable[[list[tuple[str, str]]], bool],
    kill: Callable[[FakeFreeSWITCH], None] | None,
) -> Callable[[str, str], None]:
    fired = False

    def check(_app: str, _arg: str) -> None:
        nonlocal fired
        if not fired and kill_when(before + peer.record.executed):
            fired = True
            if kill is not None:
                kill(peer)  # synchronously, as the application starts: it runs on with nobody listening

    return check


def once(predicate: Callable[[list[tuple[str, str]]], bool]) -> Callable[[list[tuple[str, str]]], bool]:
    """``predicate``, true at most once."""
    fired = False

    def check(executed: list[tuple[str, str]]) -> bool:
        nonlocal fired
        if fired or not predicate(executed):
            return False
        fired = True
        return True

    return check


def _next_socket(script: CallScript, peer: FakeFreeSWITCH, number: int) -> CallScript:
    """The same channel for the next ``socket``: its variables, the caller's remaining input."""
    variables = {name: value for name, value in peer.channel.variables.items() if name not in _OWN}
    return script.model_copy(
        update={
            "variables": variables,
            "dtmf": list(peer._attempt_inputs),
            "hangup_at": None,  # the caller's hangup was scripted against the first socket's executes
            "dtmf_events": {},
        }
    )


def _new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


__all__ = ["DialplanRecord", "once", "run_dialplan"]
