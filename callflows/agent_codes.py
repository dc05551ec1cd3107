"""Agent feature codes: an agent dials ``*50`` to log in to the queues, ``*51`` to log out, ``*52``
for a break. The agent is the caller's own number (``Caller-Caller-ID-Number``), which must be an
agent id in ``acd_agents``; a QueueService must be running in the process (``QueueService.start``)."""

from __future__ import annotations

from esl_app.app import App
from esl_app.call import Call
from esl_app.queue import QueueError, current_service

app = App("agent-codes")

ACTIONS = {"*50": "Available", "*51": "Logged Out", "*52": "On Break"}


def set_status(call: Call) -> None:
    call.answer()
    try:
        current_service().set_agent_status(call.caller_id_number, ACTIONS[call.destination])  # type: ignore[arg-type]
    except QueueError:
        call.playback("ivr/ivr-you_have_dialed_an_invalid_extension.wav")
        return
    call.playback("ivr/ivr-thank_you.wav")


for code in ACTIONS:
    app.route(code)(set_status)
