"""Progressive dialing into a queue: the flow of a campaign created with ``--queue`` and
``--flow progressive``. The answered callee joins the campaign's queue; with no agent within the
campaign's abandon window (2 s) it hears the campaign's abandon message and the call ends (recorded
``abandoned`` by the dialer, docs/dialer.md). Run it on the outbound pool with a QueueService started
in the process (``QueueService(redis_url, prefix).start()``), the prefix the dialer's
``ESL_APP_DIALER_QUEUE_PREFIX``."""

from __future__ import annotations

from esl_app.app import App
from esl_app.call import Call
from esl_app.dialer.flow import into_queue

app = App("progressive")


@app.route(variables={"esl_app_flow": "progressive"}, pool="outbound")
def progressive(call: Call) -> None:
    into_queue(call)
