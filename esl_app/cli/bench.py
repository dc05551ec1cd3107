"""``esl-app bench``: FreeSWITCH-faithful load against a running server, or the whole comparison.

Needs the ``bench`` extra for the comparison (``pip install -e '.[bench]'``: genesis, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ORDER = 60
PHASES = ("tail", "sweep", "decision", "hold", "overload")
GENERATOR_BUSY = 0.85  # generator CPU share above which its figures are suspect


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="load generator: FreeSWITCH's side of many calls, and the baselines")
    bench.add_argument("--suite", action="store_true", help="run the whole comparison (esl-app and the baselines)")
    bench.add_argument(
        "--servers", help="comma-separated subset for --suite (esl-app,gevent-minimal,greenswitch,genesis)"
    )
    bench.add_argument("--write-docs", action="store_true", help="with --suite: write docs/benchmarks.md and the chart")
    bench.add_argument("--docs-dir", default="docs")
    bench.add_argument("--quick", action="store_true", help="with --suite: short phases, two sweep points")
    bench.add_argument(
        "--phases",
        help="with --suite: the phases after capacity (comma-separated: " + ",".join(PHASES) + "; default all)",
    )
    bench.add_argument(
        "--tail-seconds", type=float, default=None, help="with --suite: each tail point (50%% and 70%% of max)"
    )
    bench.add_argument("--host", default="127.0.0.1")
    bench.add_argument("--port", type=int, help="a running server to load (without --suite)")
    bench.add_argument("--mode", choices=["closed", "open", "hold"], default="closed")
    bench.add_argument("--concurrency", type=int, default=60, help="closed loop: calls in flight")
    bench.add_argument("--rate", type=float, default=200.0, help="open loop: new calls per second (hold: ramp)")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds of load (closed/open)")
    bench.add_argument("--calls", type=int, default=1000, help="hold: calls to keep in a playback")
    bench.add_argument("--hold-seconds", type=float, default=5.0, help="hold: seconds to keep them once all are up")
    bench.add_argument("--server-pid", type=int, help="read the server's RSS and CPU from /proc/PID")
    bench.add_argument("--processes", type=int, default=2, help="generator processes (closed loop)")
    bench.add_argument("--cpus", help="pin the generator to these CPUs, e.g. 1 or 1-3")
    bench.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    bench.add_argument(
        "--static-timeline", action="store_true",
        help="the static decision path's wire timeline (esl-app's side, fake FreeSWITCH with its timing model); "
        "with --write-docs: into docs/benchmarks.md",
    )  # fmt: skip
    bench.add_argument("--timeline-calls", type=int, default=200, help="--static-timeline: calls, one at a time")
    bench.add_argument(
        "--hold-only", action="store_true",
        help="with --suite: only the hold phase (RSS per held call), --calls held, new calls at --rate per second",
    )  # fmt: skip
    bench.set_defaults(func=cmd_bench)


def _cpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.generator import raise_fd_limit

    raise_fd_limit()
    if args.static_timeline:
        return _static_timeline(args)
    if args.suite:
        return _suite(args)
    if args.port is None:
        raise SystemExit("error: give --port of a running server, or --suite")
    return _single(args)


def _hold_only(args: argparse.Namespace, servers: list[str]) -> int:
    """The suite's hold phase alone: a fresh server per name, ``--calls`` held, ramped at ``--rate``/s
    (a ramp the server keeps up with: a call waiting more than connect_timeout for its turn is lost)."""
    from ..bench.generator import LoadSpec
    from ..bench.runner import SERVERS, Progress, cpu_split, hold_phase

    server_cpus, gen_cpus = cpu_split()

    def load(port: int, **kw: object) -> LoadSpec:
        return LoadSpec(host="127.0.0.1", port=port, processes=max(1, len(gen_cpus)), cpus=gen_cpus, **kw)  # type: ignore[arg-type]

    results = {}
    for name in servers:
        figures = hold_phase(SERVERS[name], server_cpus, [], load, args.calls, Progress(quiet=args.json), name,
                             rate=args.rate)  # fmt: skip
        results[name] = figures
        if not args.json:
            print(f"{name}: {figures['held']} held, {figures['kb_per_call']:.1f} kB RSS per held call, RSS "
                  f"{figures['rss_before_kb']} -> {figures['rss_held_kb']} -> {figures['rss_after_kb']} kB, "
                  f"errors {figures['errors'] or 'none'}")  # fmt: skip
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    return 0


def _suite(args: argparse.Namespace) -> int:
    from ..bench.runner import SERVERS, SuiteOptions, run_suite

    options = SuiteOptions(processes=args.processes, quick=args.quick)
    if args.servers:
        options.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
        unknown = [name for name in options.servers if name not in SERVERS]
        if unknown:
            raise SystemExit(f"error: unknown servers {unknown}; choose from {list(SERVERS)}")
    if args.hold_only:
        return _hold_only(args, options.servers)
    if args.quick:
        options.duration, options.sweep_duration, options.tail_seconds = 3.0, 2.0, 5.0
        options.hold = {name: 1000 for name in SERVERS}
    if args.phases:
        phases = {phase.strip() for phase in args.phases.split(",") if phase.strip()}
        if phases - set(PHASES):
            raise SystemExit(f"error: unknown phases {sorted(phases - set(PHASES))}; choose from {list(PHASES)}")
        options.sweep = "sweep" in phases
        options.hold_phase = "hold" in phases
        options.overload = "overload" in phases
        if "decision" not in phases:
            options.decision_calls = 0
        if "tail" not in phases:
            options.tail_seconds = 0.0
    if args.tail_seconds is not None:
        options.tail_seconds = args.tail_seconds
    results = run_suite(options)
    _warn_generator(results)
    if args.write_docs:
        from ..bench.report import write_docs

        page = write_docs(results, Path(args.docs_dir))
        (Path(args.docs_dir) / "benchmarks.json").write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {page}", file=sys.stderr)
    if args.json:
        json.dump(results, sys.stdout, indent=1, default=str)
        print()
    else:
        from ..bench.report import markdown_table, targets

        print(markdown_table(results))
        for name, measured, ok in targets(results):
            print(f"- {name}: {measured} -> {'met' if ok else 'NOT MET' if ok is False else '?'}")
    return 0


def _static_timeline(args: argparse.Namespace) -> int:
    from ..bench.report import STATIC_PATH_TITLE, replace_section, static_path_section
    from ..bench.runner import cpu_split
    from ..bench.static_path import measure

    result = measure(args.timeline_calls, cpus=_cpus(args.cpus) or cpu_split()[1])
    section = static_path_section(result)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        print(section)
    if args.write_docs:
        page = Path(args.docs_dir) / "benchmarks.md"
        page.write_text(replace_section(page.read_text(), STATIC_PATH_TITLE, section))
        print(f"wrote {page}", file=sys.stderr)
    return 0


def _warn_generator(results: dict) -> None:
    for name, server in results["servers"].items():
        phases = [server.get("capacity", {}), *server.get("sweep", [])]
        busy = max((p.get("generator_util") or 0.0) for p in phases) if phases else 0.0
        if busy >= GENERATOR_BUSY:
            print(
                f"warning: the generator was {busy:.0%} busy while loading {name}: its figures may be the "
                "generator's limit (add cores or --processes)",
                file=sys.stderr,
            )


def _single(args: argparse.Namespace) -> int:
    from ..bench.generator import LoadSpec
    from ..bench.runner import Progress, proc_cpu_seconds, proc_rss_kb, run_phase

    spec = LoadSpec(
        host=args.host,
        port=args.port,
        mode=args.mode,
        duration=args.duration,
        concurrency=args.concurrency,
        rate=args.rate,
        hold_calls=args.calls,
        processes=args.processes,
        cpus=_cpus(args.cpus),
        call_timeout=600.0 if args.mode == "hold" else 25.0,
    )
    progress = Progress(quiet=args.json)
    pid = args.server_pid
    extra: dict = {}
    rss_before = proc_rss_kb(pid) if pid else None
    cpu_before = proc_cpu_seconds(pid) if pid else None

    def on_held(workers) -> None:  # type: ignore[no-untyped-def]
        time.sleep(args.hold_seconds)
        extra["held"] = workers.held
        if pid:
            extra["rss_held_kb"] = proc_rss_kb(pid)

    result = run_phase(None, spec, progress, f"{args.mode} load", on_held=on_held if args.mode == "hold" else None)
    progress.line("")
    if pid:
        cpu = proc_cpu_seconds(pid) - (cpu_before or 0.0)
        result["server_cpu_ms_per_call"] = round(1000 * cpu / result["calls"], 3) if result["calls"] else None
        result["server_cpu_util"] = round(cpu / max(1e-9, result["seconds"]), 3)
        result["rss_before_kb"] = rss_before
        result["rss_after_kb"] = proc_rss_kb(pid)
    if extra:
        result.update(extra)
        if pid and extra.get("held"):
            result["kb_per_call"] = round((extra["rss_held_kb"] - (rss_before or 0)) / extra["held"], 2)
    if (result.get("generator_util") or 0) >= GENERATOR_BUSY:
        print(f"warning: the generator was {result['generator_util']:.0%} busy: add cores or --processes",
              file=sys.stderr)  # fmt: skip
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    s = result["setup_ms"]
    print(
        f"{result['calls']} calls in {result['seconds']:.1f} s: {result['served']} served, "
        f"{result['refused']} refused, "
        f"errors {result['errors'] or 'none'}; {result['calls_per_second']:.0f} calls/s; setup p50 {s['p50']:.2f} "
        f"p90 {s['p90']:.2f} p99 {s['p99']:.2f} max {s['max']:.2f} ms; generator CPU {result['generator_util']:.0%}"
    )
    if pid:
        print(f"server: {result['server_cpu_ms_per_call']} ms CPU per call, RSS {result['rss_before_kb']} -> "
              f"{result.get('rss_held_kb', '')} -> {result['rss_after_kb']} kB"
              + (f", {result['kb_per_call']} kB per held call" if "kb_per_call" in result else ""))  # fmt: skip
    return 0
