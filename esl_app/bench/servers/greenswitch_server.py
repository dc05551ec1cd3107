"""Baseline: stock greenswitch 0.0.19 ``OutboundESLServer`` running the benchmark flow.

Its accept loop polls (sleeps 0.1 s when no connection is waiting) and every call gets a reader and
an event-processing greenlet; the flow uses greenswitch's own blocking verbs.
"""

from __future__ import annotations

import logging
import socket

import gevent
from greenswitch.esl import OutboundESLServer

from ._common import PROMPT, parse_args, ready


class Flow:
    def __init__(self, session) -> None:  # type: ignore[no-untyped-def]
        self.session = session

    def run(self) -> None:
        session = self.session
        try:
            session.myevents()
            session.linger()
            session.answer()
            session.playback(PROMPT, block=True)
            session.hangup()
        except Exception:
            logging.debug("call ended early", exc_info=True)


def main() -> None:
    args = parse_args(__doc__ or "")
    logging.basicConfig(level=logging.ERROR)
    port = args.port
    if port == 0:
        probe = socket.socket()
        probe.bind((args.host, 0))
        port = probe.getsockname()[1]
        probe.close()
    server = OutboundESLServer(
        bind_address=args.host, bind_port=port, application=Flow, max_connections=args.max_calls or 1_000_000
    )
    listener = gevent.spawn(server.listen)

    def announce() -> None:
        while server.bound_port is None:
            gevent.sleep(0.01)
        ready(server.bound_port)

    gevent.spawn(announce)
    listener.join()


if __name__ == "__main__":
    main()
