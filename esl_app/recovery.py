"""Session recovery: a call outlives the worker that was running its flow.

When a worker dies mid-call (SIGKILL, out of memory, a lost host), FreeSWITCH finishes the application
it was running (a prompt, a bridge), the ``socket`` application returns, and the dialplan goes on with
its next action: the second ``socket`` of ``dialplan/esl_app.xml`` (captures 05a-05i, spec 2.7). That
connection carries the channel's variables, and with them the flow's last **checkpoint**.

A resumable flow (``@app.route(..., resumable=True)``) keeps a journal: every application it runs is
one entry, and so is every explicit ``call.checkpoint(name, **state)``. Before each application
esl-app records the journal on the channel (``esl_app_checkpoint``, through ``api uuid_setvar``, which
never expands, or ``set`` on a socket without ``full``), in the same write as the application's own
command: no round trip of its own. The journal says "N entries were issued; here are the results of
the earlier ones" (digits read, how a bridge ended, explicit states).

On the next connection the flow runs again from its top, but *replays* the journal: the first N-1
applications are not sent, they return their recorded results; the N-th, which FreeSWITCH ran to its
end while nobody listened, returns what the channel shows now (its variables in the connect reply:
``read_result``, ``DIALSTATUS``...). From entry N+1 on the flow runs for real. So a prompt that was
played is never played again, and a bridge is never placed twice, as long as the flow takes the same
path given the same results (its decisions come from verb results and ``call.checkpoint`` states;
a decision from elsewhere, such as the clock or a database, goes through ``call.checkpoint`` to be
replayed as it was made).

The value is ``<base64url(JSON)>.<mac>``: an HMAC-SHA256 under the deployment's secret (the hand-off
secret, ``esl_app.handoff``) over the channel UUID, the route name and the JSON. Callers cannot set
channel variables (SIP headers land in ``sip_h_*``), and a value copied from another call, another
route, or another deployment fails the MAC: it is ignored and the call starts from the top.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .errors import EslAppError
from .protocol import Event, Headers

VARIABLE = "esl_app_checkpoint"
MAX_CHARS = 3000  # of the encoded value: a channel variable, sent in every connect reply and event
_MAC_CHARS = 32
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

# what verbs read from an application's CHANNEL_EXECUTE_COMPLETE (esl_app.call): kept per entry
RESULT_HEADERS = (
    "Application-Response",
    "variable_read_result",
    "variable_DIALSTATUS",
    "variable_originate_disposition",
    "variable_originate_failed_cause",
    "variable_last_bridge_hangup_cause",
    "variable_bridge_hangup_cause",
    "variable_bridge_uuid",
    "variable_record_seconds",
)


class CheckpointError(EslAppError):
    """A checkpoint that cannot be recorded: a bad name, a state that is not small JSON."""


class Entry(BaseModel):
    """One journal entry: an application run (``app``, its result headers) or an explicit checkpoint."""

    app: str | None = None
    result: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    state: dict[str, Any] | None = None


class Checkpoint(BaseModel):
    """What a flow recorded: how many entries it had issued, and the earlier entries' results."""

    route: str
    # where the call was going when the flow started: a handed-off call's connect data no longer
    # says it (the hand-off variables are used once), so the journal keeps it for routing again
    destination: str = ""
    context: str = ""
    issued: int = 0  # entries issued; the last one may have been running when the worker died
    entries: list[Entry] = Field(default_factory=list)  # the first issued-1 entries

    @property
    def label(self) -> str:
        """For metrics and logs: the last explicit checkpoint's name."""
        for entry in reversed(self.entries):
            if entry.name:
                return entry.name
        return "unnamed" if self.issued else "start"  # a label per entry number would be unbounded


class CheckpointCodec:
    """Signs and reads checkpoint values with one deployment's secret."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, uuid: str, payload: str) -> str:
        return hmac.new(self._key, f"checkpoint\n{uuid}\n{payload}".encode(), hashlib.sha256).hexdigest()[:_MAC_CHARS]

    def encode(self, uuid: str, checkpoint: Checkpoint) -> str:
        text = checkpoint.model_dump_json(exclude_defaults=True)
        payload = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(uuid, payload)}"

    def decode(self, uuid: str, value: str) -> Checkpoint | None:
        """The checkpoint in ``value`` when it was signed here for this channel, else None."""
        payload, dot, mac = value.rpartition(".")
        if not dot or len(mac) != _MAC_CHARS or len(value) > MAX_CHARS * 2:
            return None
        if not hmac.compare_digest(mac, self._mac(uuid, payload)):
            return None
        try:
            text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            return Checkpoint.model_validate_json(text)
        except (binascii.Error, ValueError, ValidationError):
            return None


def check_state(name: str, state: dict[str, Any]) -> dict[str, Any]:
    """An explicit checkpoint's name and state, validated: a short word and JSON-able values."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise CheckpointError(f"a checkpoint name is 1-64 letters, digits or _.:- , not {name!r}")
    try:
        round_trip = json.loads(json.dumps(state))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {name!r}: its state must be JSON (str, int, list, dict...): {exc}") from None
    return round_trip


def keep_result(event: Event, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The headers of a completion that verbs read (the rest is not needed to replay them)."""
    kept = {}
    for name in (*RESULT_HEADERS, *extra):
        value = event.get(name)
        if value:
            kept[name] = value
    return kept


class Journal:
    """A resumable flow's entries on this connection; ``replaying`` while it repeats recorded ones."""

    __slots__ = ("active", "context", "destination", "disabled", "entries", "recovered", "route")

    def __init__(
        self, route: str, recovered: Checkpoint | None = None, *, destination: str = "", context: str = ""
    ) -> None:
        self.route = route
        self.destination = destination
        self.context = context
        self.recovered = recovered
        self.entries: list[Entry] = []
        self.active = True
        self.disabled = False  # the journal outgrew MAX_CHARS: no more checkpoints for this call

    @property
    def replaying(self) -> bool:
        return self.recovered is not None and len(self.entries) < self.recovered.issued

    def next_recorded(self) -> tuple[Entry | None, bool]:
        """During replay: the recorded entry for the next position (None for the last issued one,
        whose result is on the channel now), and whether this is that last one."""
        assert self.recovered is not None
        position = len(self.entries)
        last = position == self.recovered.issued - 1
        recorded = self.recovered.entries[position] if position < len(self.recovered.entries) else None
        return recorded, last

    def snapshot(self, issued: int) -> Checkpoint:
        return Checkpoint(
            route=self.route,
            destination=self.destination,
            context=self.context,
            issued=issued,
            entries=self.entries[: issued - 1],
        )


def replayed_event(recorded: Entry | None, channel: Headers) -> Event:
    """The completion a replayed application returns: its recorded result, or, for the application
    that was running when the worker died, what the channel's variables show now (connect reply)."""
    if recorded is None:
        return Event(channel)
    return Event(Headers(list(recorded.result.items())))
