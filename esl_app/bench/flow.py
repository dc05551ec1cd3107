"""The benchmark flow on esl-app: connect -> myevents -> linger -> answer -> playback -> hangup.

The same flow runs on every baseline server in ``bench/``; ``serve`` runs it the way
``esl-app serve`` runs an app (one process, ``OutboundServer``, the app's own session settings).
"""

from __future__ import annotations

from collections.abc import Callable

import gevent

from ..app import App
from ..call import Call
from ..session import SessionSettings

PROMPT = "ivr/ivr-welcome_to_freeswitch.wav"

app = App("bench", SessionSettings())  # production defaults: linger 10, the hangup record awaited


@app.route("1000")
def main_line(call: Call) -> None:
    call.answer()
    call.playback(PROMPT)
    call.hangup()


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_calls: int | None = None,
    capacity: int | None = None,
    cps: float = 0.0,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the flow. ``capacity``/``cps``: admission at the door (``esl_app.pools.admission``),
    which refuses over-limit calls with a pipelined 503 before any greenlet exists for them."""
    from ..transport import OutboundServer
    from ..transport.collector import settle

    app.max_calls = max_calls
    app.startup()
    handler: Callable[..., object] = app.handle
    door = None
    if capacity is not None or cps:
        from ..pools.admission import Admission, refuse

        admission = Admission(capacity or 1_000_000, cps)

        def door(sock: object, address: tuple[str, int]) -> object:
            reason = admission.admit()
            if reason is not None:
                refuse(sock, reason)
                return None
            return sock

        def handler(sock: object, address: tuple[str, int]) -> None:
            try:
                app.handle(sock, address)
            finally:
                admission.release()

    server = OutboundServer(handler, host, port, backlog=4096, door=door, keepalive=app.session_settings.keepalive)
    settle()  # as esl-app serve does once start-up is done (transport/collector.py)
    server.start()
    if on_ready is not None:
        on_ready(server.address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        gevent.get_hub().destroy()
