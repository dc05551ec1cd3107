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

The value is ``<head>.<entry>...<entry>.<issued>.<mac>``: the route, destination and context, then one
field per entry (compact JSON in base64url), the number of entries issued, and a keyed BLAKE2b MAC
under a key derived from the deployment's secret (the hand-off secret, ``esl_app.handoff``) over the
channel UUID and all the rest. It grows append-only: each field is encoded once and the MAC state over
the prefix is kept (``JournalWriter``), so a write costs the same at the tenth application as at the
first. Callers cannot set channel variables (SIP headers land in ``sip_h_*``), and a value copied
from another call, another route, or another deployment fails the MAC: it is ignored and the call
starts from the top.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .errors import EslAppError
from .protocol import Event, Headers

VARIABLE = "esl_app_checkpoint"
MAX_CHARS = 3000  # of the encoded value: a channel variable, sent in every connect reply and event
_MAC_CHARS = 32
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

# what a flow may read from the completion of an application run with ``call.execute`` (a verb keeps
# only the headers it reads); also the short names of these headers in a journal entry
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


@dataclass(slots=True)
class Entry:
    """One journal entry: an application run (``app``, its result headers) or an explicit checkpoint.

    A dataclass, not a model: one is made per application of every resumable call (the hot path);
    ``Checkpoint`` still validates them when a value is read back."""

    app: str | None = None
    result: dict[str, str] = field(default_factory=dict)
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


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # made once: json.dumps(...,
# separators=...) builds an encoder per call, which costs more than the encoding


def _fragment(item: list[Any]) -> bytes:
    """One field of a checkpoint value: compact JSON in base64url (no padding, so no ``=``)."""
    return base64.urlsafe_b64encode(_JSON(item).encode()).rstrip(b"=")


def _unfragment(field: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(field + "=" * (-len(field) % 4)))


# result header names by their position in RESULT_HEADERS: an entry stores "2" for DIALSTATUS
_SHORT = {name: str(number) for number, name in enumerate(RESULT_HEADERS)}
_LONG = {short: name for name, short in _SHORT.items()}


# most fields repeat from call to call (a route's head, an answer, a prompt played to its end, a
# checkpoint without state): each is made once per process (JSON encoding is what a field costs)
_FIELDS: dict[tuple[Any, ...], bytes] = {}
_FIELDS_MAX = 4096


def _cached(key: tuple[Any, ...], item: list[Any]) -> bytes:
    field = _FIELDS.get(key)
    if field is None:
        field = _fragment(item)
        if len(_FIELDS) >= _FIELDS_MAX:
            _FIELDS.clear()  # caller-dependent values (digits, destinations) would grow it without end
        _FIELDS[key] = field
    return field


def _entry_fragment(entry: Entry) -> bytes:
    if entry.app is None:
        if entry.state:
            return _fragment(["c", entry.name, entry.state])
        return _cached(("c", entry.name), ["c", entry.name, {}])
    result = entry.result
    key = ("a", entry.app, *result.items())
    return _cached(key, ["a", entry.app, {_SHORT.get(k, k): v for k, v in result.items()}])


def _entry_of(item: Any) -> Entry:
    kind, word, data = item
    if kind == "a":
        return Entry(app=word, result={_LONG.get(k, k): v for k, v in data.items()})
    if kind == "c":
        return Entry(name=word, state=data)
    raise ValueError(f"unknown entry kind {kind!r}")


def _mac(key: bytes, uuid: str) -> Any:
    """The MAC of a checkpoint of channel ``uuid``, to be fed its payload: keyed BLAKE2b, which, unlike
    a plain hash over key and text, cannot be extended past a value it signed (no length extension),
    and whose state copies cheaply, so a growing journal is signed without hashing it again."""
    mac = hashlib.blake2b(key=key, digest_size=_MAC_CHARS // 2, person=b"esl-app ckpt")
    mac.update(uuid.encode() + b"\n")
    return mac


class JournalWriter:
    """The checkpoint value of one call, kept encoded and signed as it grows (the hot path).

    The value is ``<head>.<entry>.<entry>...<issued>.<mac>``: each field is written once, when its
    entry is final, and the HMAC state over the prefix is kept, so a write costs one new entry's JSON
    and a ``copy()`` of the MAC, however long the journal. The MAC covers exactly what
    ``CheckpointCodec.decode`` checks: the channel UUID and everything before the last dot."""

    __slots__ = ("_mac", "_parts", "chars", "written")

    def __init__(self, key: bytes, uuid: str, route: str, destination: str, context: str) -> None:
        head = _cached(("h", route, destination, context), [route, destination, context])
        self._mac = _mac(key, uuid)
        self._mac.update(head)
        self._parts = [head]
        self.chars = len(head)
        self.written = 0  # entries encoded so far

    def append(self, entry: Entry) -> None:
        field = b"." + _entry_fragment(entry)
        self._mac.update(field)
        self._parts.append(field)
        self.chars += len(field)
        self.written += 1

    def value(self, issued: int) -> bytes:
        tail = b".%d" % issued
        mac = self._mac.copy()
        mac.update(tail)
        return b"".join(self._parts) + tail + b"." + mac.hexdigest().encode()


class CheckpointCodec:
    """Signs and reads checkpoint values with one deployment's secret."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def writer(self, uuid: str, route: str, destination: str = "", context: str = "") -> JournalWriter:
        return JournalWriter(self._key, uuid, route, destination, context)

    def encode(self, uuid: str, checkpoint: Checkpoint) -> str:
        """A whole checkpoint at once (what the writer builds entry by entry)."""
        writer = self.writer(uuid, checkpoint.route, checkpoint.destination, checkpoint.context)
        for entry in checkpoint.entries:
            writer.append(entry)
        return writer.value(checkpoint.issued).decode()

    def _mac(self, uuid: str, payload: str) -> str:
        mac = _mac(self._key, uuid)
        mac.update(payload.encode())
        return mac.hexdigest()

    def decode(self, uuid: str, value: str) -> Checkpoint | None:
        """The checkpoint in ``value`` when it was signed here for this channel, else None."""
        payload, dot, mac = value.rpartition(".")
        if not dot or len(mac) != _MAC_CHARS or len(value) > MAX_CHARS * 2 or not value.isascii():
            return None
        if not hmac.compare_digest(mac, self._mac(uuid, payload)):
            return None
        fields = payload.split(".")
        try:
            if len(fields) < 2 or not fields[-1].isdigit():
                return None
            route, destination, context = _unfragment(fields[0])
            entries = [_entry_of(_unfragment(field)) for field in fields[1:-1]]
            return Checkpoint(
                route=route, destination=destination, context=context, issued=int(fields[-1]), entries=entries
            )
        except (binascii.Error, ValueError, TypeError, AttributeError, ValidationError):
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


def keep_result(event: Event, names: tuple[str, ...]) -> dict[str, str]:
    """The headers of a completion that its verb reads (the rest is not needed to replay it)."""
    kept = {}
    for name in names:
        value = event.get(name)
        if value:
            kept[name] = value
    return kept


class Journal:
    """A resumable flow's entries on this connection; ``replaying`` while it repeats recorded ones."""

    __slots__ = ("active", "disabled", "entries", "recovered", "unset_command", "writer")

    def __init__(self, writer: JournalWriter, recovered: Checkpoint | None = None) -> None:
        self.writer = writer
        self.recovered = recovered
        self.entries: list[Entry] = []
        self.active = True
        self.disabled = False  # the journal outgrew MAX_CHARS: no more checkpoints for this call
        self.unset_command = b""  # ``api uuid_setvar <uuid> <VARIABLE>``, made on first use

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

    def value(self) -> bytes:
        """The signed checkpoint before the next entry is issued: every entry so far is final."""
        writer = self.writer
        entries = self.entries
        for entry in entries[writer.written :]:
            writer.append(entry)
        return writer.value(len(entries) + 1)


def replayed_event(recorded: Entry | None, channel: Headers) -> Event:
    """The completion a replayed application returns: its recorded result, or, for the application
    that was running when the worker died, what the channel's variables show now (connect reply)."""
    if recorded is None:
        return Event(channel)
    return Event(Headers(list(recorded.result.items())))
