"""The demo app: a small company's main line.

- a guard refuses blocked callers before answer (403, so the proxy stops there);
- outside opening hours the caller hears a closed message;
- otherwise a welcome prompt and a menu: 1 for sales, 2 for support, bridged with the outcome handled;
- 1xxx dials an extension directly; anything else gets an SIT tone and UNALLOCATED_NUMBER.

Run it: ``esl-app serve callflows.demo:app``; see it: ``esl-app demo``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from esl_app import App, BridgeResult, Call, Reject, regex

log = logging.getLogger("callflows.demo")

app = App("demo")

BLOCKED_CALLERS = {"666", "+15555550100"}
BLOCKED_PREFIXES = ("900",)
TIMEZONE = ZoneInfo("Europe/London")
OPENING_HOURS = {day: (time(8, 0), time(18, 0)) for day in range(5)}  # Monday..Friday
HOLIDAYS = {date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1)}
TEAMS = {"1": ("sales", "user/2001"), "2": ("support", "user/2002")}

SOUNDS = "ivr"
WELCOME = f"{SOUNDS}/ivr-welcome_to_freeswitch.wav"
MENU = f"{SOUNDS}/ivr-please_choose.wav"
INVALID = f"{SOUNDS}/ivr-that_was_an_invalid_entry.wav"
CLOSED = f"{SOUNDS}/ivr-office_hours.wav"
BUSY = f"{SOUNDS}/ivr-all_agents_busy.wav"
NO_ANSWER = f"{SOUNDS}/ivr-no_one_available.wav"
FAILED = f"{SOUNDS}/ivr-call_cannot_be_completed_as_dialed.wav"
SIT_TONE = "tone_stream://%(274,0,913.8);%(274,0,1370.6);%(380,0,1776.7)"


def now() -> datetime:
    return datetime.now(TIMEZONE)


clock: Callable[[], datetime] = now  # replaced in tests and demo scenarios


def is_open(moment: datetime) -> bool:
    local = moment.astimezone(TIMEZONE)
    if local.date() in HOLIDAYS:
        return False
    hours = OPENING_HOURS.get(local.weekday())
    return hours is not None and hours[0] <= local.time() < hours[1]


@app.guard
def blocked_caller(call: Call) -> Reject | None:
    number = call.caller_id_number
    if number in BLOCKED_CALLERS or number.startswith(BLOCKED_PREFIXES):
        return Reject(code=403, cause="CALL_REJECTED")
    return None


@app.route("1000", name="main line")
def main_line(call: Call) -> None:
    if not is_open(clock()):
        after_hours(call)
        return
    call.answer()
    call.playback(WELCOME)
    choice = call.gather(MENU, max_digits=1, tries=3, timeout=5, invalid_prompt=INVALID, regex="[12]")
    if choice is None:
        call.playback(FAILED)
        call.hangup("NORMAL_CLEARING")
        return
    team, dialstring = TEAMS[choice]
    call.set("demo_team", team)
    result = call.bridge(dialstring, timeout=30)
    after_bridge(call, result)


def after_hours(call: Call) -> None:
    call.answer()
    call.playback(CLOSED)
    call.hangup("NORMAL_CLEARING")


def after_bridge(call: Call, result: BridgeResult) -> None:
    if result.answered:
        call.hangup("NORMAL_CLEARING")
        return
    message = {"busy": BUSY, "no_answer": NO_ANSWER}.get(result.outcome, FAILED)
    call.playback(message)
    call.hangup("NORMAL_CLEARING")


@app.route(regex(r"(?P<extension>1[1-9]\d{2})"), name="direct extension")  # 1100-1999; 1000 is the main line
def direct_extension(call: Call, extension: str) -> None:
    result = call.bridge(f"user/{extension}", timeout=20)
    if not result.answered:
        call.answer()
        after_bridge(call, result)


@app.default
def unknown_number(call: Call) -> None:
    call.pre_answer()
    call.playback(SIT_TONE)
    call.hangup("UNALLOCATED_NUMBER")


@app.on_hangup
def log_call(call: Call, cause: str | None) -> None:
    log.info("call %s from %s to %s ended: %s", call.uuid, call.caller_id_number, call.destination, cause)


def _at(hour: int) -> Callable[[], None]:
    def set_clock() -> None:
        global clock
        moment = datetime(2026, 11, 25, hour, 30, tzinfo=TIMEZONE)  # a Wednesday
        clock = lambda: moment  # noqa: E731

    return set_clock


# What `esl-app demo` sends through the server: (title, CallScript fields, set-up before the call)
SCENARIOS: list[tuple[str, dict[str, Any], Callable[[], None] | None]] = [
    ("during opening hours a caller picks 1 (sales); sales answers", {"destination": "1000", "dtmf": "1"}, _at(10)),
    (
        "a caller picks 2 (support); support is busy",
        {"destination": "1000", "dtmf": "2", "bridge": {"*": "busy"}},
        _at(10),
    ),
    ("a call after hours hears the closed message", {"destination": "1000"}, _at(21)),
    ("a blocked caller is refused before answer", {"destination": "1000", "caller_id_number": "666"}, None),
    ("the caller hangs up during the welcome prompt", {"destination": "1000", "hangup_at": 2}, _at(10)),
    ("an unknown number gets an SIT tone", {"destination": "4242"}, None),
]
