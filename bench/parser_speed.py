"""Parser micro-benchmark: frames per second of real captures, two source trees compared in one run.

    python bench/parser_speed.py                       # this checkout only
    python bench/parser_speed.py --compare /tmp/main   # this checkout and another tree, interleaved

Two workloads, each parsed the way a session does it (``Parser.feed`` in the captured read chunks,
then ``frame.event()`` and a few header reads per event, a few reads of the connect reply):

* ``transcripts``: every FreeSWITCH->app read of the real 1.10.12 captures in ``fixtures/transcripts``;
* ``sip-call``: one call at the size of a real SIP call (``esl_app.bench.traffic``: a ~10 kB connect
  reply and ~10 kB events), fed in 64 kB reads.

Each round runs in a fresh subprocess per tree, rounds alternate between the trees (so machine load
hits both alike) and the medians and their ratio are printed. Rates are per second of the
process's CPU time, so a busy machine's waiting for a core does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from pathlib import Path
from esl_app.protocol import Parser

root = Path(sys.argv[1])
seconds = float(sys.argv[2])

def transcripts():
    streams = []
    for path in sorted((root / "fixtures" / "transcripts").glob("*.jsonl")):
        reads = {}
        for line in path.open(encoding="utf-8"):
            record = json.loads(line)
            if record.get("dir") in ("FS->APP", "FS->CLIENT"):
                reads.setdefault(record["conn"], []).append(record["bytes_latin1"].encode("latin-1"))
        streams.extend(reads.values())
    return streams

def sip_call():
    from esl_app.bench.traffic import CallTemplates
    t = CallTemplates()
    uuid, app = b"0b6c9c1e-5f0e-4d55-9a55-0123456789ab", b"5d2f1b0a-1111-4222-8333-444455556666"
    data = t.render(t.connect_reply, uuid) + t.render(t.park(), uuid)
    for name, arg, answered in (("answer", "", False), ("playback", "ivr/welcome.wav", True)):
        for part in t.execute(name, arg, answered):
            data += t.render(part, uuid, app)
    data += t.render(t.hangup_sequence("NORMAL_CLEARING", True), uuid) + t.render(t.linger_notice(), uuid)
    return [[data[i : i + 65536] for i in range(0, len(data), 65536)]]

def one_pass(streams):
    count = 0
    for reads in streams:
        parser = Parser()
        for chunk in reads:
            for frame in parser.feed(chunk):
                count += 1
                if frame.is_event:
                    try:
                        event = frame.event()
                    except ValueError:
                        continue
                    event.name; event.unique_id; event.get("Application-UUID"); event.get("Channel-State")
                elif frame.is_connect_reply:
                    h = frame.headers
                    h.get("Unique-ID"); h.get("Caller-Destination-Number"); h.get("variable_sip_from_user")
    return count

out = {}
for name, streams in (("transcripts", transcripts()), ("sip-call", sip_call())):
    one_pass(streams)  # warm-up
    frames = 0
    # CPU time of this process: on a shared machine, wall time also counts waiting for a core
    start = time.process_time()
    while time.process_time() - start < seconds:
        frames += one_pass(streams)
    out[name] = frames / (time.process_time() - start)
print(json.dumps(out))
"""


def run_child(tree: Path, seconds: float) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(seconds)],
        env=env, cwd=str(tree), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="another source tree (e.g. a `git archive` of main)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="per workload and round")
    args = parser.parse_args()
    trees = {"this": HERE}
    if args.compare:
        trees["compare"] = args.compare.resolve()
    results: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(reversed(trees.items()))
        for label, tree in order:
            for workload, rate in run_child(tree, args.seconds).items():
                results[label].setdefault(workload, []).append(rate)
    for workload in results["this"]:
        line = f"{workload:12s}"
        medians = {label: statistics.median(results[label][workload]) for label in trees}
        for label, tree in trees.items():
            line += f"  {label} ({tree.name}): {medians[label]:10,.0f} frames/s"
        if "compare" in medians:
            line += f"  ratio this/compare: {medians['this'] / medians['compare']:.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
