"""esl-app running the benchmark flow, as ``esl-app serve`` runs an app (one worker process).

The flow is ``esl_app.bench.flow:app``; ``--max-calls`` refuses calls over capacity with 503.
"""

from __future__ import annotations

from esl_app.bench.flow import serve

from ._common import parse_args, ready


def main() -> None:
    args = parse_args(__doc__ or "", door=True)
    if args.no_waker:
        from esl_app.bench.flow import app

        app.session_settings.waker.enabled = False
    serve(args.host, args.port, max_calls=args.max_calls, capacity=args.capacity, cps=args.cps, on_ready=ready)


if __name__ == "__main__":
    main()
