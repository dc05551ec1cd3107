"""Shared by the comparison servers: command line, readiness line, the flow's constants.

Every server runs the same flow: connect -> myevents -> linger -> answer -> playback -> hangup, and
prints ``READY <port>`` once it accepts connections (the runner waits for that line).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys

PROMPT = "ivr/ivr-welcome_to_freeswitch.wav"


def parse_args(description: str, *, door: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-calls", type=int, default=None)
    if door:
        parser.add_argument("--capacity", type=int, default=None, help="calls at once, refused at the door over it")
        parser.add_argument("--cps", type=float, default=0.0, help="new calls per second, refused at the door over it")
        parser.add_argument(
            "--no-waker", action="store_true", help="esl-app: no LF waker while completions are awaited"
        )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return args


def ready(port: int) -> None:
    sys.stdout.write(f"READY {port} {os.getpid()}\n")
    sys.stdout.flush()


def collect() -> None:
    gc.collect()
