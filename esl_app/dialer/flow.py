"""What a flow answering a dialer call knows: its campaign, contact and attempt (channel variables).

```python
@app.route(variables={"esl_app_flow": "survey"}, pool="outbound")
def survey(call):
    who = campaign_call(call)          # CampaignCall(campaign_id=3, contact_id=41, attempt_id=97, ...)
    call.say(f"Hello {who.variable(call, 'name')}")
```

A campaign dialling into an ACD queue (``queue`` set) runs ``into_queue`` (``callflows/progressive.py``
routes ``esl_app_flow=progressive`` to it): the callee joins the queue at once; with no agent
within the campaign's ``abandon_after`` (2 s) the call is abandoned: marked in Redis for the dialer,
the abandon message is played, and the call hangs up.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from .pacing import abandoned_key

if TYPE_CHECKING:
    from ..call import Call
    from ..queue import QueueOutcome, QueueService

log = logging.getLogger("esl_app.dialer")


class HasVariables(Protocol):
    def variable(self, name: str, default: str | None = None) -> str | None: ...


class CampaignCall(BaseModel):
    campaign_id: int
    contact_id: int
    attempt_id: int
    flow: str

    model_config = {"arbitrary_types_allowed": True}

    def variable(self, call: HasVariables, name: str) -> str | None:
        """A contact variable (a CSV column), as the dialer passed it (``esl_app_var_<name>``)."""
        return call.variable(f"esl_app_var_{name}")


def campaign_call(call: HasVariables) -> CampaignCall | None:
    """The dialer's identifiers on this call, or None for a call the dialer did not place."""
    campaign, contact, attempt = (call.variable(f"esl_app_{k}") for k in ("campaign", "contact", "attempt"))
    if not (campaign and contact and attempt):
        return None
    try:
        return CampaignCall(campaign_id=int(campaign), contact_id=int(contact), attempt_id=int(attempt),
                            flow=call.variable("esl_app_flow") or "")  # fmt: skip
    except ValueError:
        return None


def _since_answer(call: Call) -> float:
    """Seconds since the callee answered (``Caller-Channel-Answered-Time``, microseconds), 0 if unknown."""
    try:
        answered = int(call.header("Caller-Channel-Answered-Time") or "0")
    except ValueError:
        return 0.0
    since = time.time() - answered / 1e6 if answered else 0.0
    # the switch's clock against this host's (NTP keeps them within milliseconds): a figure no flow
    # start could take is a skewed clock, not a late flow; it must not abandon every call at once
    return since if 0.0 < since < 10.0 else 0.0


def into_queue(call: Call, *, priority: int = 9, service: QueueService | None = None) -> QueueOutcome | None:
    """Put the answered callee into its campaign's queue; abandon it if no agent takes it in time.

    The window (``esl_app_abandon_after``) counts from the answer. Calls the dialer placed wait at
    ``priority`` 9 by default (served before inbound callers): they have a 2 s clock, inbound ones
    minutes. Returns the queue's outcome when an agent answered (or the callee hung up while
    waiting), None when the call was abandoned: then the abandon message has been played and the call
    hung up. The dialer records the attempt ``abandoned`` at its hangup, from the mark in Redis.
    """
    from ..queue import QueueError, current_service

    queue = call.variable("esl_app_queue") or ""
    message = call.variable("esl_app_abandon_message") or ""
    try:
        window = float(call.variable("esl_app_abandon_after") or "2")
    except ValueError:
        window = 2.0
    service = service or current_service()
    outcome = None
    if queue:
        try:
            outcome = call.enqueue(queue, priority=priority, max_wait=max(0.0, window - _since_answer(call)),
                                   service=service)  # fmt: skip
        except QueueError as exc:
            log.error("call %s: queue %r: %s: abandoned", call.uuid, queue, exc)
        if outcome is not None and outcome.outcome in ("answered", "abandoned"):
            return outcome  # an agent took it, or the callee hung up first (not an abandoned call)
    # no agent within the window: the rules' abandoned call. Marked before the message, so the mark is
    # there when the hangup reaches the dialer
    service.client.set(abandoned_key(service.prefix, call.uuid), "1", ex=3600)
    if message and call.is_up:
        call.playback(message)
    call.hangup()
    return None
