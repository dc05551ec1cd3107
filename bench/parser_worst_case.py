"""Worst-case inputs for the parser: time and memory of each, in a fresh process, for one or two trees.

    python bench/parser_worst_case.py                       # this checkout
    python bench/parser_worst_case.py --compare /tmp/main   # and another tree (e.g. main before a fix)

Each case builds its hostile input, records the peak RSS, then feeds it the way the connection does
(64 kB reads), decodes the event or reads every header, and reports: the outcome (frames or the
error's type), the total time, the longest single ``feed()`` call (how long one read can freeze
every call of a worker: the read callback runs in the event loop) and the peak RSS growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CASES = ["header-block-8MiB", "connect-reply-8MiB", "plain-event-8MiB", "json-event-8MiB",
         "xml-billion-laughs", "json-nested-1000", "body-64MiB",
         # the most a frame may still cost within the new default limits (1 MiB, 10,000 lines)
         "header-block-at-limits", "connect-reply-at-limits", "plain-event-at-limits", "json-event-at-limits",
         "xml-event-at-limits"]  # fmt: skip

CHILD = r"""
import json, resource, sys, time
from esl_app.protocol import Parser

case = sys.argv[1]
MB8 = 8 * 1024 * 1024

def plain_lines(size):
    return b"a:\n" * ((size - 4096) // 3)  # just under the old 8 MiB block cap

if case == "header-block-8MiB":
    data = b"Content-Type: command/reply\n" + plain_lines(MB8) + b"\n"
elif case == "connect-reply-8MiB":
    data = b"Event-Name: CHANNEL_DATA\nContent-Type: command/reply\n" + plain_lines(MB8) + b"\n"
elif case == "plain-event-8MiB":
    body = plain_lines(MB8) + b"\n"
    data = b"Content-Type: text/event-plain\nContent-Length: %d\n\n" % len(body) + body
elif case == "json-event-8MiB":
    body = b"{" + b",".join(b'"a%d":""' % i for i in range(MB8 // 12)) + b"}"
    data = b"Content-Type: text/event-json\nContent-Length: %d\n\n" % len(body) + body
elif case == "xml-billion-laughs":
    lol = b'<!DOCTYPE l [<!ENTITY a "' + b"a" * 100 + b'">'
    prev = b"a"
    for name in b"bcdefghij":
        name = bytes([name])
        lol += b'<!ENTITY ' + name + b' "' + (b"&" + prev + b";") * 10 + b'">'
        prev = name
    body = lol + b']><event><headers><x>&' + prev + b';</x></headers></event>'
    data = b"Content-Type: text/event-xml\nContent-Length: %d\n\n" % len(body) + body
elif case == "json-nested-1000":
    body = b"[" * 1000
    data = b"Content-Type: text/event-json\nContent-Length: %d\n\n" % len(body) + body
elif case == "body-64MiB":
    size = 64 * 1024 * 1024
    data = b"Content-Type: api/response\nContent-Length: %d\n\n" % size + b"x" * size
elif case.endswith("-at-limits"):
    lines = [b"h%05d: %s" % (i, b"v" * 92) for i in range(9_990)]  # 9,990 lines, ~1,039,000 bytes
    if case == "header-block-at-limits":
        data = b"Content-Type: command/reply\n" + b"\n".join(lines[:-2]) + b"\n\n"
    elif case == "connect-reply-at-limits":
        data = b"Event-Name: CHANNEL_DATA\nContent-Type: command/reply\n" + b"\n".join(lines[:-3]) + b"\n\n"
    else:
        if case == "plain-event-at-limits":
            body, kind = b"\n".join(lines) + b"\n\n", b"plain"
        elif case == "json-event-at-limits":
            body, kind = b"{" + b",".join(b'"h%05d":"%s"' % (i, b"v" * 92) for i in range(9_990)) + b"}", b"json"
        else:
            body = b"<event><headers>" + b"".join(b"<h%05d>%s</h%05d>" % (i, b"v" * 80, i) for i in range(9_990))
            body, kind = body + b"</headers></event>", b"xml"
        data = b"Content-Type: text/event-%s\nContent-Length: %d\n\n" % (kind, len(body)) + body
chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
del data
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
parser = Parser()
outcome = "ok"
longest = 0.0
start = time.perf_counter()
try:
    frames = []
    for chunk in chunks:
        t = time.perf_counter()
        frames += parser.feed(chunk)
        longest = max(longest, time.perf_counter() - t)
    for frame in frames:
        if frame.is_event:
            event = frame.event()
            len(event.headers)
        else:
            len(frame.headers)
            if frame.is_connect_reply:
                frame.to_bytes()
    outcome = f"{len(frames)} frame(s)"
except Exception as exc:
    outcome = type(exc).__name__
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "seconds": elapsed, "longest_feed": longest, "rss_mb": (peak - base) / 1024}))
"""


def run_case(tree: Path, case: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case], env=env, cwd=str(tree), capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        return {"outcome": f"process failed: {done.stderr.strip().splitlines()[-1:]}", "seconds": 0.0,
                "longest_feed": 0.0, "rss_mb": 0.0}  # fmt: skip
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="another source tree (e.g. a `git archive` of main)")
    parser.add_argument("cases", nargs="*", default=CASES)
    args = parser.parse_args()
    trees = {"this": HERE}
    if args.compare:
        trees["compare"] = args.compare.resolve()
    print(f"{'case':22s} {'tree':8s} {'outcome':22s} {'total s':>8s} {'max feed s':>10s} {'peak RSS +MB':>12s}")
    for case in args.cases:
        for label, tree in trees.items():
            r = run_case(tree, case)
            print(f"{case:22s} {label:8s} {r['outcome']!s:22s} {r['seconds']:8.3f} {r['longest_feed']:10.4f} "
                  f"{r['rss_mb']:12.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
