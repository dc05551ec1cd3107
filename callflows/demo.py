"""The demo app: a small company's main line.

One guard asks the routing data (``esl_app.data``) about every call before answer, and exits early:
- a blocked caller is refused (403, so the proxy stops there);
- an unknown number gets an SIT tone and UNALLOCATED_NUMBER;
- a tenant over its concurrent-call or call-rate limit is refused (503, with the limit as the reason);
- outside the tenant's business hours the caller hears a closed message.
Otherwise: a welcome prompt and a menu, 1 for sales, 2 for support, bridged with the outcome handled;
1100-1999 dial an extension directly (its dial string comes from the data).

The data comes from Postgres through Redis and each process's cache when ``ESL_APP_DATA_POSTGRES_DSN``
(and ``ESL_APP_DATA_REDIS_URL``) are set, else from the demo data shipped with esl-app
(``esl_app/data/demo_data.json``): no server needed.

Run it: ``esl-app serve callflows.demo:app``; see it: ``esl-app demo``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from esl_app import App, BridgeResult, Call, Reject, regex
from esl_app.data import Decision, RoutingData

log = logging.getLogger("callflows.demo")

app = App("demo")
data = RoutingData()  # ESL_APP_DATA_*; nothing configured: the shipped esl_app/data/demo_data.json
app.on_startup(lambda: data.start())
app.on_shutdown(lambda: data.stop())

TENANT = "demo"  # the main line's tenant: its hours and time zone are in the data
TIMEZONE = ZoneInfo("Europe/London")
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
    """Whether the main line's tenant is open at ``moment`` (business hours from the routing data)."""
    return data.is_open(TENANT, moment)


def decision_of(call: Call) -> Decision | None:
    return call.state.get("decision")


@app.guard
def early_exit(call: Call) -> Reject | None:
    """Decide from the routing data before answer; never waits longer than the data budget."""
    decision = data.decide(call.destination, call.caller_id_number, call_id=call.uuid, at=clock())
    call.state["decision"] = decision
    if decision.lease is not None:  # a concurrency slot for this tenant: give it back at the end
        call.on_hangup(lambda call, _cause: _end_of_leg(call, decision))
    if decision.outcome == "route":
        return None
    if decision.outcome == "unknown":
        unknown_number(call)
        return Reject(cause="UNALLOCATED_NUMBER")
    if decision.outcome == "closed":
        after_hours(call)
        return Reject(cause="NORMAL_CLEARING")
    if decision.outcome == "blocked":
        return Reject(code=403, cause="CALL_REJECTED")
    # over a limit, or no routing data within the budget: 503 so the proxy can try elsewhere
    return Reject(code=decision.sip_code or 503, reason=decision.reason[:100], cause=decision.cause)


def _end_of_leg(call: Call, decision: Decision) -> None:
    if call.handed_off:  # the call goes on on an async socket: that leg keeps the slot (``resume``)
        data.hand_over(decision)
    else:
        data.release(decision)


@app.on_resume
def resume(call: Call) -> None:
    """The async leg of a call handed off by a route with ``mode="async"``: the guard ran on its first
    leg and is not run again. Look the decision up again for the flows (from memory, counting
    nothing) and take over the tenant's concurrency slot the first leg kept."""
    decision = data.decide(call.destination, call.caller_id_number, at=clock())
    data.adopt(decision, call.uuid)
    call.state["decision"] = decision
    if decision.lease is not None:
        call.on_hangup(lambda _call, _cause: data.release(decision))


@app.route("1000", name="main line", resumable=True)
def main_line(call: Call) -> None:
    """Resumable: if the worker running it dies, the dialplan's next ``socket`` brings the call to
    another worker, which replays the flow to where it was (README "When a worker dies")."""
    call.checkpoint("welcome")
    call.answer()
    call.playback(WELCOME)
    call.checkpoint("menu")
    choice = call.gather(MENU, max_digits=1, tries=3, timeout=5, invalid_prompt=INVALID, regex="[12]")
    if choice is None:
        call.playback(FAILED)
        call.hangup("NORMAL_CLEARING")
        return
    team, dialstring = TEAMS[choice]
    call.checkpoint("bridge", team=team)
    call.set("demo_team", team)
    result = call.bridge(dialstring, timeout=30)
    call.checkpoint("after_bridge", outcome=result.outcome)
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
    decision = decision_of(call)
    dialstring = decision.target if decision is not None and decision.target else f"user/{extension}"
    result = call.bridge(dialstring, timeout=20)
    if not result.answered:
        call.answer()
        after_bridge(call, result)


@app.default
def unknown_number(call: Call) -> None:
    decision = decision_of(call)
    if decision is not None and decision.outcome == "route" and decision.target and "/" in decision.target:
        # a number the data routes to a dial string, with no flow of its own here (e.g. 3000)
        result = call.bridge(decision.target, timeout=20)
        if not result.answered:
            call.answer()
            after_bridge(call, result)
        return
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
    (
        "the pilot tenant's only call slot is taken: refused before answer",
        {"destination": "3000"},
        lambda: _hold_slot("pilot", "3000"),
    ),
]


def _hold_slot(tenant: str, destination: str) -> None:
    """Scenario set-up: another call of ``tenant`` is up (it holds the slot until the process ends)."""
    data.decide(destination, "scenario", call_id=f"{tenant}-held-by-another-call")
