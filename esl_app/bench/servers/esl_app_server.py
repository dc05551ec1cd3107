"""esl-app running the benchmark flow, as ``esl-app serve`` runs an app (one worker process).

The flow is ``esl_app.bench.flow:app``; ``--max-calls`` refuses calls over capacity with 503.
SIGUSR1 writes one ``GC {json}`` line on stdout: the collector's passes since the last one
(``esl_app.transport.collector.PauseMeter``), which the runner reads after each tail phase.
"""

from __future__ import annotations

import json
import signal
import sys

import gevent

from esl_app.bench.flow import serve
from esl_app.transport.collector import PauseMeter

from ._common import parse_args, ready


def main() -> None:
    args = parse_args(__doc__ or "", door=True)
    if args.no_waker:
        from esl_app.bench.flow import app

        app.session_settings.waker.enabled = False
    meter = PauseMeter()

    def report() -> None:
        sys.stdout.write("GC " + json.dumps(meter.summary()) + "\n")
        sys.stdout.flush()
        meter.passes.clear()

    def on_ready(port: int) -> None:
        meter.start()  # after start-up: the passes calls wait through
        gevent.signal_handler(signal.SIGUSR1, report)
        ready(port)

    serve(args.host, args.port, max_calls=args.max_calls, capacity=args.capacity, cps=args.cps, on_ready=on_ready)


if __name__ == "__main__":
    main()
