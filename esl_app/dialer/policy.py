"""What an attempt's hangup cause means, what happens next, and when a campaign may call. Pure.

Outcome classes (``attempts.outcome``):

- ``answered``: the callee picked up; the contact is done;
- ``busy`` (USER_BUSY), ``no_answer`` (NO_ANSWER, NO_USER_RESPONSE, ORIGINATOR_CANCEL,
  ALLOTTED_TIMEOUT), ``failed`` (CALL_REJECTED, NORMAL_TEMPORARY_FAILURE, network trouble, ...):
  retried after the campaign's delay for that class until ``max_attempts``;
- ``final``: the number cannot be reached however often it is tried (UNALLOCATED_NUMBER,
  INVALID_NUMBER_FORMAT, NO_ROUTE_DESTINATION, ...): no retry;
- ``lost``: the node died with the call on it before it was answered: retried like ``failed``;
- ``abandoned``: answered, but no agent of the campaign's queue took it within ``abandon_after``
  (it heard the abandon message): retried no sooner than ``retry_abandoned`` (72 h by default).

``progressive`` turns a campaign's abandon figures into its dial ratio and its allowance of calls
beyond one per idle agent (docs/dialer.md, "Progressive dialing").
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

Outcome = Literal["answered", "busy", "no_answer", "failed", "final", "lost", "abandoned"]

BUSY_CAUSES = frozenset({"USER_BUSY"})
NO_ANSWER_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT",
                              "PROGRESS_TIMEOUT"})  # fmt: skip
FINAL_CAUSES = frozenset({
    "UNALLOCATED_NUMBER", "NO_ROUTE_TRANSIT_NET", "NO_ROUTE_DESTINATION", "INVALID_NUMBER_FORMAT",
    "NUMBER_CHANGED", "INCOMPATIBLE_DESTINATION", "FACILITY_REJECTED", "BEARERCAPABILITY_NOTAUTH",
    "OUTGOING_CALL_BARRED", "INCOMING_CALL_BARRED", "CHAN_NOT_IMPLEMENTED",
})  # fmt: skip
LOST_CAUSE = "NODE_LOST"


def classify(cause: str | None, *, answered: bool = False) -> Outcome:
    """The outcome class of an attempt that ended with ``cause``."""
    if answered:
        return "answered"
    cause = (cause or "").upper()
    if cause in BUSY_CAUSES:
        return "busy"
    if cause in NO_ANSWER_CAUSES:
        return "no_answer"
    if cause in FINAL_CAUSES:
        return "final"
    if cause == LOST_CAUSE:
        return "lost"
    return "failed"


class RetryPolicy(BaseModel):
    max_attempts: int
    retry_busy: dt.timedelta
    retry_no_answer: dt.timedelta
    retry_failed: dt.timedelta
    retry_abandoned: dt.timedelta = dt.timedelta(hours=72)


class Next(BaseModel):
    """The contact's state after an attempt: ``pending`` again at ``at``, or finished."""

    state: Literal["pending", "done", "exhausted"]
    at: dt.datetime | None = None


def next_step(policy: RetryPolicy, outcome: Outcome, attempts_made: int, now: dt.datetime) -> Next:
    if outcome == "answered":
        return Next(state="done")
    if outcome == "final" or attempts_made >= policy.max_attempts:
        return Next(state="exhausted")
    delays = {"busy": policy.retry_busy, "no_answer": policy.retry_no_answer, "abandoned": policy.retry_abandoned}
    delay = delays.get(outcome, policy.retry_failed)
    return Next(state="pending", at=now + delay)


class Progressive(BaseModel):
    """How a queue-paced campaign dials now: ``ratio`` calls per idle agent, and at most ``extra`` calls
    beyond one per idle agent. ``at_cap``: pure progressive (one call per idle, unreserved agent)."""

    ratio: float
    extra: int
    rate: float  # abandoned / answered (abandoned included) over the window
    at_cap: bool


PURE_PROGRESSIVE = Progressive(ratio=1.0, extra=0, rate=0.0, at_cap=True)


def progressive(configured: float, answered: int, abandoned: int, cap: float = 0.03) -> Progressive:
    """The ratio and the allowance of extra calls for a campaign whose window counts ``answered``
    live calls (abandoned ones included) of which ``abandoned`` were abandoned. Pure.

    - the ratio: ``configured`` while the rate is at most half the cap, then lowered in proportion,
      down to 1.0 when the rate reaches the cap;
    - the allowance: as many extra calls as could ALL be answered and abandoned with the window's
      rate still within the cap: ``(cap x answered - abandoned) / (1 - cap)``. A campaign with no
      history has none: it dials progressively until enough answered calls give it headroom.
    """
    rate = abandoned / answered if answered else 0.0
    if rate >= cap:
        return Progressive(ratio=1.0, extra=0, rate=rate, at_cap=True)
    ratio = configured
    if rate > cap / 2:
        ratio = 1.0 + (configured - 1.0) * (cap - rate) / (cap / 2)
    extra = max(0, math.floor((cap * answered - abandoned) / (1.0 - cap) + 1e-9))
    return Progressive(ratio=ratio, extra=extra, rate=rate, at_cap=extra == 0 or ratio <= 1.0)


class Span(BaseModel):
    weekday: int  # 0 = Monday
    opens: dt.time
    closes: dt.time


def in_window(spans: Iterable[Span], timezone: str, now: dt.datetime) -> bool:
    """True when ``now`` (aware) falls in a span of its weekday in ``timezone``; no spans: always."""
    spans = list(spans)
    if not spans:
        return True
    local = now.astimezone(ZoneInfo(timezone))
    clock = local.time().replace(tzinfo=None)
    return any(s.weekday == local.weekday() and s.opens <= clock < s.closes for s in spans)


def parse_schedule(text: str) -> list[Span]:
    """``mon-fri 09:00-17:00; sat 10:00-12:00`` (days: mon..sun, ranges and commas) into spans."""
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    spans: list[Span] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            day_text, hours = part.split()
            opens_text, closes_text = hours.split("-")
            opens, closes = dt.time.fromisoformat(opens_text), dt.time.fromisoformat(closes_text)
        except ValueError as exc:
            raise ValueError(f"schedule {part!r}: expected 'mon-fri 09:00-17:00'") from exc
        if not opens < closes:
            raise ValueError(f"schedule {part!r}: opens must be before closes")
        for item in day_text.lower().split(","):
            first, _, last = item.partition("-")
            if first not in days or (last and last not in days):
                raise ValueError(f"schedule {part!r}: unknown day {item!r} (mon..sun)")
            lo, hi = days.index(first), days.index(last or first)
            for weekday in range(lo, hi + 1):
                spans.append(Span(weekday=weekday, opens=opens, closes=closes))
    return spans
