"""What a resumable flow's journal costs per checkpoint write, in one process (no I/O).

    python -m esl_app.bench.journal [--entries 8] [--repeat 7]

Writes the demo main line's journal (esl_app.recovery) as a call does: before each application, the
signed value with every entry so far. ``append-only`` is what a call runs (``JournalWriter``: each
entry encoded once, the MAC state over the prefix kept); ``whole`` re-encodes and signs the whole
journal at every write (``CheckpointCodec.encode``), the way the first version did, as the baseline
measured in the same run. Prints medians of ``--repeat`` runs, in microseconds per call and per write.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from ..recovery import Checkpoint, CheckpointCodec, Entry, Journal

UUID = "08e0c7c3-5d7e-4236-b029-a41b6cade0b2"
BRIDGE_RESULT = {
    "variable_DIALSTATUS": "SUCCESS", "variable_originate_disposition": "SUCCESS",
    "variable_bridge_uuid": "5d1f3c2e-8f7a-4b7e-9a51-0f0e6c1d2b3a",
    "variable_last_bridge_hangup_cause": "NORMAL_CLEARING", "variable_bridge_hangup_cause": "NORMAL_CLEARING",
}  # fmt: skip
# the demo main line's entries, with the completion headers its verbs keep
DEMO: list[Entry] = [
    Entry(name="welcome", state={}),
    Entry(app="answer"),
    Entry(app="playback", result={"Application-Response": "FILE PLAYED"}),
    Entry(name="menu", state={}),
    Entry(app="play_and_get_digits", result={"variable_read_result": "success", "variable_esl_app_digits": "1"}),
    Entry(name="bridge", state={"team": "sales"}),
    Entry(app="bridge", result=BRIDGE_RESULT),
    Entry(name="after_bridge", state={"outcome": "answered"}),
    Entry(app="playback", result={"Application-Response": "FILE PLAYED"}),
]


def entries(count: int) -> list[Entry]:
    return [DEMO[i % len(DEMO)] for i in range(count)]


def append_only(codec: CheckpointCodec, flow: list[Entry]) -> int:
    journal = Journal(codec.writer(UUID, "main line", "1000", "default"))
    for entry in flow:
        if entry.app is not None:
            journal.value()  # before the application is sent
        journal.entries.append(entry)
    return len(journal.value())


def whole(codec: CheckpointCodec, flow: list[Entry]) -> int:
    done: list[Entry] = []
    for entry in flow:
        if entry.app is not None:
            checkpoint = Checkpoint(
                route="main line", destination="1000", context="default", issued=len(done) + 1, entries=done
            )
            codec.encode(UUID, checkpoint)
        done = [*done, entry]
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=len(DEMO), help="journal entries per call")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    codec = CheckpointCodec(b"k" * 32)
    flow = entries(args.entries)
    writes = sum(1 for entry in flow if entry.app is not None)
    number = 500
    results = {}
    for name, run in (("append-only", append_only), ("whole", whole)):
        times = timeit.repeat(lambda run=run: run(codec, flow), number=number, repeat=args.repeat)
        results[name] = statistics.median(times) / number * 1e6
    chars = append_only(codec, flow)
    print(f"journal of {args.entries} entries, {writes} writes per call, final value {chars} chars")
    for name, micros in results.items():
        print(f"  {name:12s} {micros:8.1f} us per call  {micros / writes:6.1f} us per write")
    print(f"  whole / append-only: {results['whole'] / results['append-only']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
