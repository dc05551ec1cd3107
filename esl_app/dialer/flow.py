"""What a flow answering a dialer call knows: its campaign, contact and attempt (channel variables).

```python
@app.route(variables={"esl_app_flow": "survey"}, pool="outbound")
def survey(call):
    who = campaign_call(call)          # CampaignCall(campaign_id=3, contact_id=41, attempt_id=97, ...)
    call.say(f"Hello {who.variable(call, 'name')}")
```
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel


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
