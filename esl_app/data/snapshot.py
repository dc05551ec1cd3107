"""The routing-data file: the embedded default (package data ``esl_app/data/demo_data.json``), the seed for Postgres.

```json
{"tenants": [{"id": "demo", "name": "Demo Ltd", "timezone": "Europe/London",
              "hours": {"mon": ["08:00-18:00"], "sat": ["10:00-12:00", "13:00-16:00"]},
              "holidays": [{"day": "2026-12-25", "name": "Christmas"}, {"day": "2026-12-24", "hours": "08:00-12:00"}],
              "limits": {"max_concurrent": 100, "calls_per_second": 20},
              "blocklist": {"exact": ["+442079460999"], "prefixes": ["+4490"]}}],
 "numbers": [{"did": "1000", "tenant": "demo", "target": "menu"}],
 "number_ranges": [{"first": "1100", "last": "1999", "tenant": "demo", "target": "user/{did}", "respect_hours": false}],
 "global_blocklist": {"exact": ["666"], "prefixes": ["900"]}}
```
Days without hours are closed; a tenant without ``hours`` is open around the clock.
"""

from __future__ import annotations

import json
from datetime import date
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .models import WEEKDAYS, BlockList, BusinessHours, Holiday, Limits, Number, Snapshot, Span, Tenant, parse_clock


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HolidayEntry(_File):
    day: date
    name: str = ""
    hours: str | None = None  # "HH:MM-HH:MM": open only then; None: closed all day


class BlockEntry(_File):
    exact: list[str] = []
    prefixes: list[str] = []


class TenantEntry(_File):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    timezone: str = "UTC"
    enabled: bool = True
    hours: dict[str, list[str]] | None = None
    holidays: list[HolidayEntry] = []
    limits: Limits = Limits()
    blocklist: BlockEntry = BlockEntry()


class NumberEntry(_File):
    did: str
    tenant: str
    target: str
    enabled: bool = True
    respect_hours: bool = True


class RangeEntry(_File):
    first: str
    last: str
    tenant: str
    target: str  # "{did}" is replaced by each number
    enabled: bool = True
    respect_hours: bool = True


class DataFile(_File):
    tenants: list[TenantEntry] = []
    numbers: list[NumberEntry] = []
    number_ranges: list[RangeEntry] = []
    global_blocklist: BlockEntry = BlockEntry()


def span(text: str) -> Span:
    opens, sep, closes = text.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    return Span(opens=parse_clock(opens.strip()), closes=parse_clock(closes.strip()))


def blocklist(entry: BlockEntry) -> BlockList:
    return BlockList(exact=frozenset(entry.exact), prefixes=frozenset(entry.prefixes))


def tenant(entry: TenantEntry) -> Tenant:
    weekly: tuple[tuple[Span, ...], ...] = ()
    if entry.hours is not None:
        unknown = set(entry.hours) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"tenant {entry.id}: unknown weekdays {sorted(unknown)} (use {', '.join(WEEKDAYS)})")
        weekly = tuple(tuple(sorted((span(t) for t in entry.hours.get(day, [])), key=lambda s: s.opens))
                       for day in WEEKDAYS)  # fmt: skip
    holidays = tuple(
        Holiday(day=h.day, name=h.name, span=span(h.hours) if h.hours else None) for h in entry.holidays
    )
    return Tenant(
        id=entry.id,
        name=entry.name,
        enabled=entry.enabled,
        hours=BusinessHours(timezone=entry.timezone, weekly=weekly, holidays=holidays),
        limits=entry.limits,
        blocklist=blocklist(entry.blocklist),
    )


def expand_range(entry: RangeEntry) -> list[Number]:
    if len(entry.first) != len(entry.last) or not (entry.first.isdigit() and entry.last.isdigit()):
        raise ValueError(f"a number range needs two numbers of the same length, got {entry.first}-{entry.last}")
    width = len(entry.first)
    return [
        Number(did=did, tenant_id=entry.tenant, target=entry.target.replace("{did}", did),
               enabled=entry.enabled, respect_hours=entry.respect_hours)
        for did in (f"{value:0{width}d}" for value in range(int(entry.first), int(entry.last) + 1))
    ]  # fmt: skip


def snapshot_from_dict(raw: dict[str, Any]) -> Snapshot:
    data = DataFile.model_validate(raw)
    tenants = tuple(tenant(entry) for entry in data.tenants)
    ids = {t.id for t in tenants}
    numbers = [
        Number(did=n.did, tenant_id=n.tenant, target=n.target, enabled=n.enabled, respect_hours=n.respect_hours)
        for n in data.numbers
    ]
    for entry in data.number_ranges:
        numbers.extend(expand_range(entry))
    orphans = sorted({n.tenant_id for n in numbers} - ids)
    if orphans:
        raise ValueError(f"numbers refer to unknown tenants: {orphans}")
    dids = [n.did for n in numbers]
    if len(dids) != len(set(dids)):
        raise ValueError("a number appears twice")
    return Snapshot(tenants=tenants, numbers=tuple(numbers), global_blocklist=blocklist(data.global_blocklist))


def load_snapshot(path: str | Path | Traversable) -> Snapshot:
    """Load a data file: a path, or package data (``esl_app.data.DEFAULT_DATA_FILE``, read in place)."""
    source = Path(path) if isinstance(path, str) else path
    return snapshot_from_dict(json.loads(source.read_text(encoding="utf-8")))
