"""Typed routing data: what a guard needs to decide a call before answer.

Every model is frozen: cached objects are shared by every greenlet of the process and are replaced,
never mutated, when Postgres says they changed.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAY = 86400
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_clock(text: str) -> int:
    """``"08:30"`` / ``"08:30:15"`` / ``"24:00"`` → seconds since midnight."""
    parts = [int(part) for part in text.split(":")]
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"expected HH:MM or HH:MM:SS, got {text!r}")
    hours, minutes, seconds = [*parts, 0][:3]
    value = hours * 3600 + minutes * 60 + seconds
    if not (0 <= minutes < 60 and 0 <= seconds < 60 and 0 <= value <= DAY):
        raise ValueError(f"not a time of day: {text!r}")
    return value


def format_clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}" + (f":{seconds % 60:02d}" if seconds % 60 else "")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Span(_Frozen):
    """Open from ``opens`` to ``closes`` (seconds since local midnight, closes excluded; 86400 = 24:00)."""

    opens: int = Field(ge=0, le=DAY)
    closes: int = Field(ge=0, le=DAY)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.opens >= self.closes:
            raise ValueError(f"a span must open before it closes ({self.opens} >= {self.closes})")
        return self

    def contains(self, second: int) -> bool:
        return self.opens <= second < self.closes


class Holiday(_Frozen):
    day: date
    name: str = ""
    span: Span | None = None  # None: closed all day; else open only then


class BusinessHours(_Frozen):
    """A weekly schedule in a time zone with holiday exceptions. No weekly spans at all = always open."""

    timezone: str = "UTC"
    weekly: tuple[tuple[Span, ...], ...] = ()  # 7 entries, Monday first, or () for 24/7
    holidays: tuple[Holiday, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("weekly")
    @classmethod
    def _seven_days(cls, value: tuple[tuple[Span, ...], ...]) -> tuple[tuple[Span, ...], ...]:
        if value and len(value) != 7:
            raise ValueError("weekly needs 7 days (Monday first) or none")
        return value

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _holidays(self) -> dict[date, Holiday]:
        return {holiday.day: holiday for holiday in self.holidays}

    def is_open(self, at: datetime) -> bool:
        """Whether the tenant is open at ``at`` (aware; converted to the tenant's zone, date included)."""
        if at.tzinfo is None:
            raise ValueError("is_open needs a timezone-aware datetime")
        local = at.astimezone(self._zone)
        second = local.hour * 3600 + local.minute * 60 + local.second
        holiday = self._holidays.get(local.date())
        if holiday is not None:
            return holiday.span is not None and holiday.span.contains(second)
        if not self.weekly:
            return True
        return any(span.contains(second) for span in self.weekly[local.weekday()])


class BlockList(_Frozen):
    """Blocked callers: exact numbers and prefixes. A match costs one set lookup per prefix length."""

    exact: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()

    @cached_property
    def _lengths(self) -> tuple[int, ...]:
        return tuple(sorted({len(prefix) for prefix in self.prefixes}))

    def match(self, caller: str) -> str | None:
        """The rule that blocks ``caller`` (``"exact:666"``, ``"prefix:900"``), or None."""
        if caller in self.exact:
            return f"exact:{caller}"
        for length in self._lengths:
            if length > len(caller):
                break
            if caller[:length] in self.prefixes:
                return f"prefix:{caller[:length]}"
        return None

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)


class Limits(_Frozen):
    """Per-tenant limits, enforced across processes and hosts in Redis. None = no limit."""

    max_concurrent: int | None = Field(None, ge=0)
    calls_per_second: int | None = Field(None, ge=0)

    @property
    def unlimited(self) -> bool:
        return self.max_concurrent is None and self.calls_per_second is None


class Tenant(_Frozen):
    """A tenant with everything a decision needs about it (one cached object, one revision)."""

    id: str
    name: str = ""
    enabled: bool = True
    hours: BusinessHours = BusinessHours()
    limits: Limits = Limits()
    blocklist: BlockList = BlockList()

    @property
    def timezone(self) -> str:
        return self.hours.timezone

    def is_open(self, at: datetime) -> bool:
        return self.hours.is_open(at)


class Number(_Frozen):
    """A DID: which tenant owns it and where its calls go."""

    did: str
    tenant_id: str
    target: str
    enabled: bool = True
    respect_hours: bool = True  # False: the tenant's business hours don't apply (e.g. direct extensions)


Outcome = Literal["route", "unknown", "blocked", "closed", "over_limit", "fallback"]
Source = Literal["local", "redis", "postgres", "stale", "embedded", "fallback"]


class Decision(BaseModel):
    """What to do with a call, decided before answer from the routing data.

    ``route``: go on (``number``/``tenant`` set, a concurrency slot held when ``lease`` is set: release it
    with ``RoutingData.release``). Early exits: ``unknown`` (no such enabled number or tenant),
    ``blocked`` (``rule`` says which), ``closed`` (outside business hours), ``over_limit`` (``reason``
    says which limit), ``fallback`` (no data could be had within the budget: ``sip_code``/``target``
    come from the configured fallback).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    outcome: Outcome
    number: Number | None = None
    tenant: Tenant | None = None
    is_open: bool | None = None
    rule: str | None = None
    reason: str = ""
    sip_code: int | None = None
    cause: str | None = None
    target: str | None = None
    source: Source = "local"
    stale: bool = False
    lease: str | None = None  # call id holding a concurrency slot
    lease_where: Literal["redis", "local"] | None = None
    elapsed_us: float = 0.0

    @property
    def early_exit(self) -> bool:
        return self.outcome != "route"


class Snapshot(_Frozen):
    """All routing data at once: the embedded default (a file) and what a bulk load returns."""

    tenants: tuple[Tenant, ...] = ()
    numbers: tuple[Number, ...] = ()
    global_blocklist: BlockList = BlockList()


__all__ = [
    "DAY",
    "WEEKDAYS",
    "BlockList",
    "BusinessHours",
    "Decision",
    "Holiday",
    "Limits",
    "Number",
    "Outcome",
    "Snapshot",
    "Source",
    "Span",
    "Tenant",
    "format_clock",
    "parse_clock",
]
