"""``esl-app fuzz``: a million hostile frames through the ESL codec (see ``esl_app.testing.fuzz``)."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 80


def register(sub: argparse._SubParsersAction) -> None:
    fuzz = sub.add_parser("fuzz", help="feed mutated real frames to the parser; only ProtocolError may come out")
    fuzz.add_argument("--frames", type=int, default=1_000_000, help="generated frames to feed (default 1,000,000)")
    fuzz.add_argument("--seed", type=int, default=0)
    fuzz.add_argument("--transcripts", type=Path, default=Path("fixtures/transcripts"),
                      help="captures to mutate (.jsonl), when present")  # fmt: skip
    fuzz.add_argument("--time-limit", type=float, default=2.0, help="seconds one input may take")
    fuzz.add_argument("--rss-limit-mb", type=float, default=512.0, help="RSS growth allowed over the run")
    fuzz.set_defaults(func=cmd_fuzz)


def cmd_fuzz(args: argparse.Namespace) -> int:
    from ..testing.fuzz import run

    report = run(args.frames, seed=args.seed, transcripts=args.transcripts, time_limit=args.time_limit,
                 rss_limit_mb=args.rss_limit_mb, progress=True)  # fmt: skip
    rate = report.frames_generated / report.seconds if report.seconds else 0.0
    print(
        f"fuzz: {report.frames_generated:,} frames generated in {report.inputs:,} inputs, "
        f"{report.seconds:.1f} s ({rate:,.0f} frames/s); {report.frames_parsed:,} frames parsed, "
        f"{report.protocol_errors:,} inputs refused with ProtocolError; slowest input "
        f"{report.slowest_input * 1000:.1f} ms CPU ({report.slowest_input_wall * 1000:.1f} ms wall); "
        f"RSS +{report.rss_growth_mb:.1f} MB; "
        f"largest sampled allocation peak {report.alloc_peak / 1024:.0f} kB "
        f"(for a {report.alloc_peak_input / 1024:.0f} kB input)"
    )
    for failure in report.failures:
        print(f"FAILURE {failure}")
    return 0 if report.ok else 1
