"""docs/benchmarks.md and its chart from one ``run_suite`` result."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

ORDER = ["esl-app", "gevent-minimal", "greenswitch", "genesis"]
COMMAND = "esl-app bench --suite --write-docs"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _point_at_70(server: dict[str, Any]) -> dict[str, Any] | None:
    for point in server.get("sweep", []):
        if point.get("at_70_percent"):
            return point
    return None


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    servers = results["servers"]
    base = servers.get("gevent-minimal", {}).get("capacity", {}).get("calls_per_second")
    for name in [n for n in ORDER if n in servers] + [n for n in servers if n not in ORDER]:
        server = servers[name]
        capacity = server.get("capacity", {})
        at70 = _point_at_70(server) or {}
        hold = server.get("hold", {})
        rate = capacity.get("calls_per_second")
        rows.append(
            {
                "name": name,
                "label": server.get("label", name),
                "calls_per_second": rate,
                "ratio": (rate / base) if (rate and base) else None,
                "cpu_ms": capacity.get("server_cpu_ms_per_call"),
                "rate_70": at70.get("offered_rate"),
                "p50_70": at70.get("setup_ms", {}).get("p50"),
                "p99_70": at70.get("setup_ms", {}).get("p99"),
                "errors_70": sum(at70.get("errors", {}).values()) if at70 else None,
                "kb_per_call": hold.get("kb_per_call"),
                "held": hold.get("held"),
                "rss_before": hold.get("rss_before_kb"),
                "rss_after": hold.get("rss_after_kb"),
                "gen_util": capacity.get("generator_util"),
            }
        )
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        "| server | calls/s (closed loop) | x minimal gevent | server CPU ms/call | open loop at 70% of its max: "
        "offered/s | setup p50 ms | setup p99 ms | errors | kB RSS per held call (calls held) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary_rows(results):
        lines.append(
            f"| {row['label']} | {_fmt(row['calls_per_second'], 0)} | {_fmt(row['ratio'], 2)}"
            f" | {_fmt(row['cpu_ms'], 2)}"
            f" | {_fmt(row['rate_70'], 0)} | {_fmt(row['p50_70'], 2)} | {_fmt(row['p99_70'], 2)}"
            f" | {_fmt(row['errors_70'])} | {_fmt(row['kb_per_call'], 1)} ({_fmt(row['held'])}) |"
        )
    return "\n".join(lines)


def sweep_table(results: dict[str, Any]) -> str:
    lines = ["| server | offered/s | achieved/s | setup p50 ms | p90 ms | p99 ms | max ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for name, server in results["servers"].items():
        for point in server.get("sweep", []):
            s = point["setup_ms"]
            errors = ", ".join(f"{k} {v}" for k, v in point["errors"].items()) or "-"
            lines.append(
                f"| {name} | {_fmt(point['offered_rate'], 0)} | {_fmt(point['calls_per_second'], 0)}"
                f" | {_fmt(s['p50'], 2)} | {_fmt(s['p90'], 2)} | {_fmt(s['p99'], 2)} | {_fmt(s['max'], 1)} | {errors} |"
            )
    return "\n".join(lines)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Setup-latency p99 against offered rate, one line per server (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for name in [n for n in ORDER if n in results["servers"]]:
        points = [p for p in results["servers"][name].get("sweep", []) if not math.isnan(p["setup_ms"]["p99"])]
        if not points:
            continue
        xs = [p["offered_rate"] for p in points]
        ys = [p["setup_ms"]["p99"] for p in points]
        ax.plot(xs, ys, marker="o", label=results["servers"][name].get("label", name))
    ax.set_xlabel("offered load (new calls per second, open loop)")
    ax.set_ylabel("setup latency p99 (ms), connect → first execute")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.axhline(2.0, color="grey", linestyle="--", linewidth=0.8)
    ax.text(ax.get_xlim()[0], 2.1, " 2 ms target", color="grey", fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("Setup latency p99 vs offered rate (one server process on one core)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's targets."""
    rows = {row["name"]: row for row in summary_rows(results)}
    esl = rows.get("esl-app", {})
    out: list[tuple[str, str, bool | None]] = []
    ratio = esl.get("ratio")
    out.append(
        ("throughput ≥ 2.5x minimal gevent (goal 4x)", f"{_fmt(ratio, 2)}x", None if ratio is None else ratio >= 2.5)
    )
    p99 = esl.get("p99_70")
    out.append(("setup p99 ≤ 2 ms at 70% of own max rate", f"{_fmt(p99, 2)} ms at {_fmt(esl.get('rate_70'), 0)}/s",
                None if p99 is None else p99 <= 2.0))  # fmt: skip
    for hold in _holds(results.get("servers", {}).get("esl-app", {})):
        kb, held, title = hold.get("kb_per_call"), hold.get("held"), hold.get("variant") or "production defaults"
        out.append((f"<= 30 kB RSS per held call, 10,000 held (goal 20 kB); {title}",
                    f"{_fmt(kb, 1)} kB with {_fmt(held)} held",
                    None if kb is None else (kb <= 30 and (held or 0) >= 10_000)))  # fmt: skip
        before, peak, after = hold.get("rss_before_kb"), hold.get("rss_held_kb"), hold.get("rss_after_kb")
        if before and after and peak:
            back = (peak - after) / max(1, peak - before)
            out.append((f"RSS returns close to its start after the held calls end; {title}",
                        f"{before / 1024:.0f} MB before, {peak / 1024:.0f} MB held, {after / 1024:.0f} MB after",
                        after <= before + 0.25 * (peak - before) and back > 0))  # fmt: skip
    decision = results.get("servers", {}).get("esl-app", {}).get("decision") or {}
    static = decision.get("static", {}).get("decision_ms", {}).get("p99")
    if static is not None:
        out.append(("timing model: static decision within 2 ms of the floor (0)", f"p99 {_fmt(static, 2)} ms",
                    static <= 2.0))  # fmt: skip
    for mode in ("static", "async"):
        completion = decision.get(mode, {}).get("completion_ms", {})
        if completion.get("p99") is not None:
            out.append((f"timing model: completion reaches the flow within 2 ms ({mode} socket)",
                        f"p50 {_fmt(completion.get('p50'), 2)} ms, p90 {_fmt(completion.get('p90'), 2)} ms, "
                        f"p99 {_fmt(completion.get('p99'), 2)} ms (includes the flow's reaction)",
                        completion["p99"] <= 2.0))  # fmt: skip
    overload = results["servers"].get("esl-app", {}).get("overload")
    if overload:
        out.append(("at 3x capacity no call silently dropped",
                    f"{overload['calls']} offered: {overload['served']} served, {overload['refused']} refused (503), "
                    f"{overload['dropped']} not answered", overload["dropped"] == 0))  # fmt: skip
    return out


def _holds(server: dict[str, Any]) -> list[dict[str, Any]]:
    return [server[key] for key in server if key == "hold" or key.startswith("hold_")]


def memory_table(results: dict[str, Any]) -> str:
    lines = ["| server | variant | calls held | RSS before MB | RSS held MB | kB per held call | RSS after MB | "
             "server CPU while held |", "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, server in results["servers"].items():
        for hold in _holds(server):
            util = hold.get("idle_cpu_util_while_held")
            lines.append(
                f"| {name} | {hold.get('variant') or 'as configured'} | {_fmt(hold.get('held'))}"
                f" | {hold['rss_before_kb'] / 1024:.0f} | {hold['rss_held_kb'] / 1024:.0f}"
                f" | {_fmt(hold.get('kb_per_call'), 1)} | {hold['rss_after_kb'] / 1024:.0f}"
                f" | {'-' if util is None else f'{util:.0%}'} |"
            )
    return "\n".join(lines)


def decision_table(results: dict[str, Any]) -> str:
    """Issue 6: decision and completion latency under FreeSWITCH's timing model, per socket mode."""
    lines = [
        "| server | socket | decision p50 ms | decision p99 ms | completion p50 ms | completion p99 ms "
        "| LF bytes/call | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, server in results["servers"].items():
        for mode, d in (server.get("decision") or {}).items():
            dec, comp = d.get("decision_ms", {}), d.get("completion_ms", {})
            errors = sum((d.get("errors") or {}).values())
            lines.append(
                f"| {name} | {mode} | {_fmt(dec.get('p50'), 2)} | {_fmt(dec.get('p99'), 2)} "
                f"| {_fmt(comp.get('p50'), 2)} | {_fmt(comp.get('p99'), 2)} "
                f"| {_fmt(d.get('wake_bytes_per_call'), 0)} | {errors} |"
            )
    return "\n".join(lines) if len(lines) > 2 else "(not measured in this run)"


def render_markdown(results: dict[str, Any], chart_name: str, notes: str = "") -> str:
    m = results["machine"]
    pin = results["pinning"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    target_lines = "\n".join(
        f"| {name} | {measured} | {'met' if ok else ('**not met**' if ok is False else '-')} |"
        for name, measured, ok in targets(results)
    )
    overload = results["servers"].get("esl-app", {}).get("overload")
    overload_text = ""
    if overload:
        overload_text = (
            f"\n## Overload\n\nesl-app with its admission door set to {overload['door_cps']} calls/s (80% of the "
            f"closed-loop capacity) was offered {_fmt(overload['offered_rate'], 0)} new calls/s (3x) for "
            f"{overload['seconds']:.0f} s: {overload['served']} served, {overload['refused']} refused explicitly "
            f"(pipelined `respond 503` + hangup NORMAL_TEMPORARY_FAILURE, refusal p99 "
            f"{_fmt(overload['refused_ms']['p99'], 2)} ms), {overload['dropped']} not answered "
            f"({overload['errors'] or 'none'}). Served calls: setup p50 {_fmt(overload['setup_ms']['p50'], 2)} ms, "
            f"p99 {_fmt(overload['setup_ms']['p99'], 2)} ms.\n"
        )
    return f"""# Benchmarks

esl-app against the servers people would otherwise pick, **in the same run**, over real TCP, with
FreeSWITCH's side played by the load generator of `esl_app.bench` (see below). Generated by
`{COMMAND}` on {m["date"]}.

![setup latency p99 against offered rate]({chart_name})

## Summary

{markdown_table(results)}

"calls/s" is the closed-loop maximum ({results["servers"].get("esl-app", {}).get("capacity", {}).get("concurrency")}
calls in flight). Setup latency is measured by the generator from the start of its TCP connect to the
arrival of the first `sendmsg` execute (the `answer`), in open loop (new calls at a fixed rate whatever
the completions) at 70% of each server's own closed-loop maximum. Memory is the server's RSS (from
`/proc/PID/status`) with the calls held in a playback, minus its RSS before, divided by the calls held.

## Targets (esl-app, one worker process on one core)

| target | measured | |
|---|---|---|
{target_lines}
{overload_text}
## Decisions under FreeSWITCH's timing model (static and async sockets)

The test kit's fake FreeSWITCH with `TimingModel` on (spec section 9, as measured on 1.10.12): an
async socket runs queued commands on a 20 ms park tick, and an idle listener holds events for its
20 ms poll unless the client writes. 200 calls per row, 4 at a time, on the generator's cores.
**Decision**: TCP connected → the first routed application starts (the floor is 0 on a static
socket, the next park tick on an async one). **Completion**: a CHANNEL_EXECUTE_COMPLETE raised →
the application's next command arrives (delivery to the flow plus its reaction). **LF bytes**: what
esl-app's waker wrote to end the listener's poll.

{decision_table(results)}

## Memory: calls held in a playback

{memory_table(results)}

## Setup latency against offered rate

{sweep_table(results)}

{notes}

## What is measured

* **The flow**, on every server: `connect` → `myevents` → `linger` → `answer` → `playback` → `hangup`
  (then `exit` or close). esl-app runs `esl_app/bench/flow.py` with its production session settings
  (linger 10, the LF waker, the hangup record awaited); the baselines are in `esl_app/bench/servers/`:
  `greenswitch_server.py` (stock `OutboundESLServer`, its blocking verbs), `genesis_server.py`
  (`Outbound`, executes blocking on their own `Event-UUID`), `gevent_server.py` (a minimal gevent
  server that parses every frame into a dict and URL-decodes every value).
* **The traffic** is what FreeSWITCH 1.10.12 writes for an async `full` socket on a SIP call: a connect
  reply of ~11 kB with 258 URL-encoded headers (165 `variable_*`); every channel event carries the
  channel block and the variables (~10 kB); CHANNEL_PARK after `connect`; CHANNEL_EXECUTE,
  CHANNEL_ANSWER and CHANNEL_EXECUTE_COMPLETE per execute; at hangup CHANNEL_HANGUP, CHANNEL_UNPARK,
  the `socket` application's own CHANNEL_EXECUTE_COMPLETE, CHANNEL_STATE CS_HANGUP and CS_REPORTING,
  CHANNEL_HANGUP_COMPLETE, then the linger notice (~115 kB per call from FreeSWITCH). Frames are
  rendered once from the test kit's channel templates (`esl_app.testing.channel`,
  `esl_app.protocol.switch`) and copied per call with the call's UUIDs; a unit test checks that they
  parse and follow the fake peer's sequence. Completions come at once (no 20 ms park tick), so the
  figures are the servers' own cost.
* **The generator** runs in {pin["generator_processes"]} processes pinned to CPU(s) {pin["generator"]}; the server
  is pinned to CPU(s) {pin["server"]} (`taskset`). Its own CPU is reported per phase
  (`generator_util` in the JSON); the run warns when it nears saturation.
* **Machine**: {m["cpu"]}, {m["cpus"]} CPUs, Linux {m["kernel"]}, Python {m["python"]}; {versions}. The machine
  is shared and noisy: compare figures of the same run; absolute numbers move by ±15% between runs.

## Reproduce

```bash
pip install -e '.[bench]'
esl-app bench --suite --write-docs            # the whole comparison (~6 min): this page and the chart
esl-app bench --suite --servers esl-app --json   # one server, machine-readable
# against any running server:
esl-app bench --port 8084 --mode closed --concurrency 60 --duration 10
esl-app bench --port 8084 --mode open --rate 800 --duration 10
esl-app bench --port 8084 --mode hold --calls 10000 --server-pid $(pgrep -f 'esl-app serve')
esl-app bench --static-timeline --write-docs   # the static decision path's section of this page
esl-app bench --suite --servers esl-app --hold-only --calls 3000 --rate 60   # RSS per held call only
```
"""


NOTES = """## Where the time goes (py-spy, esl-app server, closed loop)

* **Before** (full parse of every event, ~1.9-4 ms CPU per call at real size): 63% of the server's samples
  were in `parse_plain_event` (splitting ~110-250 lines per event, URL-decoding every value, building the
  multimap), 13% in the envelope parser (the connect reply decoded eagerly, and a `\\n\\r\\n` search
  that rescanned the whole buffer for every frame). One 10 kB event cost ~220 us to parse.
* **After** (~0.7 ms CPU per call): events keep their raw header block and find the 3-5 headers a call
  reads (`Event-Name`, `Unique-ID`, `Application-UUID`, `Application-Response`, `Hangup-Cause`) with
  `bytes.find` on a lower-cased copy, decoding only those values (~15 us per 10 kB event, 14x less);
  the connect reply stays raw for the life of the call and decodes a header when read; the CR LF
  search is bounded; a call has one greenlet (the socket is read by an event-loop watcher). What is
  left is spread out: event framing (~25%: the remaining `\\n\\n` and lower-casing scans are memory
  bound), syscalls (send/recv ~15%), greenlet switches and gevent's socket layer (~15%), session
  bookkeeping.

## Notes on the targets

* **Throughput goal 4x**: the 2.5x target is met; between runs of this shared machine the ratio moved
  between 2.9x and 4.1x (the minimal server between 230 and 455 calls/s). esl-app spends ~0.7 ms of CPU
  per call, of which ~0.2 ms is the irreducible scanning of ~115 kB of FreeSWITCH frames and ~0.15 ms
  syscalls.
* **Memory**: a held call is its session and call objects, the socket and its watchers, the call
  greenlet's saved C stack (~3.3 kB; two interpreter frames fewer since the handler is spawned itself
  and a flow without captures is called without `**`) and its connect reply, kept raw (~11 kB) so any
  variable can be read later. A call that has waited `pack_after` (1 s) in a playback, a bridge or a
  queue packs that reply: zlib against a preset dictionary (the first reply the process packed), ~0.4 kB
  here, where calls differ only in their UUIDs (zlib without the dictionary: ~3.5 kB). Values already
  read stay decoded; reading another one inflates the block again. Python heap per held call
  (tracemalloc, 1,000 held, `tests/test_memory.py` bounds it): 23.5 kB before, 13.5 kB after. RSS per
  held call, the suite's hold phase (`--hold-only`: 3,000 held, ramp 60/s, old and new code in turn on
  2026-12-03 with the machine at a load of ~14): 27.9 kB before, 15.0 kB after; `--calls 10000 --rate
  45`: 10,000 held at once, RSS 42.9 -> 201.8 MB, 15.9 kB per held call (the server had ~10% of a core;
  at a 1,000/s ramp it fell behind and calls waiting past `connect_timeout` were lost). The LF
  waker runs on a loop timer and only for the first 60 ms of a wait, so a long playback costs nothing
  while it plays.
* **RSS after the held calls end**: when 10,000 playbacks end at once, every call receives its ~55 kB
  hangup sequence in the same instant; the server returns the freed heap (`malloc_trim`) once active calls
  have fallen to a tenth of their peak.
* **Completions under the timing model**: p90 is within ~1.5 ms; the p99 tail (a few ms) is the fake
  FreeSWITCH's own generator process (4 calls at a time, each serializing ~10 kB events) as much as
  esl-app: the same server measured one call at a time showed every completion within 1.4 ms.
"""


def write_docs(results: dict[str, Any], docs_dir: Path, notes: str = NOTES) -> Path:
    docs_dir.mkdir(parents=True, exist_ok=True)
    chart = docs_dir / "benchmarks-setup-p99.png"
    write_chart(results, chart)
    page = docs_dir / "benchmarks.md"
    text = render_markdown(results, chart.name, notes)
    # the static path's timeline comes from its own command (esl-app bench --static-timeline): kept
    kept = section(page.read_text(), STATIC_PATH_TITLE) if page.exists() else None
    if kept is not None:
        text = replace_section(text, STATIC_PATH_TITLE, kept)
    page.write_text(text)
    return page


# -- the static decision path (esl_app.bench.static_path) -----------------------------------------
STATIC_PATH_TITLE = "## The static decision path"
STATIC_PATH_INTRO = (
    "What esl-app writes and reads on a static socket (`socket host:port full`, `dialplan/esl_app.xml`)\n"
    """between accepting the connection and the first `execute` of a decide-and-hand-off call: a route
declared `mode="async"` reached on a static socket is decided, then handed off (its destination,
context and signed marker saved with `uuid_setvar`, then `transfer` to the async extension). Generated
by `esl-app bench --static-timeline --write-docs`: esl-app's clock at each write and each read of the
call's connection, {calls} calls one at a time, against the test kit's fake FreeSWITCH with its
`TimingModel`, in a process of its own. On a static socket the fake runs each command when it reads
it, to its end, before it reads the next (spec 2.4: the listener is the call's own thread); its
connect reply is ~3.8 kB (a real SIP call's is ~11 kB)."""
)
STATIC_PATH_NOTES = """Before (main at 594e45b) the same call wrote `connect`, `myevents` and `linger 10` in three
writes, then, once routed, the three `api uuid_setvar` in three writes, **waited for their replies** (a
round trip) and only then wrote the `transfer`: 10 steps to the first execute, against 4 now. Three
alternating runs of 150 calls each of the old and the new code on 2026-12-03, on this machine under
a load of ~14 on its 2 cores (so every figure is several times its quiet value): the first execute
written 6.0 ms (median of the runs' medians) after the call's greenlet started before, 2.2 ms after;
seen by the switch, TCP connected -> `transfer` started, p50 9.9 ms before, 6.7 ms after. In a quieter
moment the old path took 1.39 ms to its first execute, 0.53 ms of it waiting for the `uuid_setvar`
replies.

* **Removed: the hand-off's round trip.** FreeSWITCH runs the commands of a connection in order, each
  before it reads the next (spec 4.3), so the variables are set before the `transfer` runs when they go
  in the same write; their replies are read afterwards (a refusal is logged: only a channel that is
  already gone refuses `uuid_setvar`, and then the transfer fails too).
* **Removed: two writes.** `connect`, `myevents` and `linger` go out in one write.
* **Kept: `myevents` before the first execute.** On a static socket an execute's `+OK` comes when the
  application has finished, but its CHANNEL_EXECUTE_COMPLETE (what `execute` returns:
  `Application-Response`, the variables the application set) and the hangup events only reach a socket
  subscribed when they fire (spec 2.5); subscribed after the first execute, that execute's events
  would be lost. There is no CHANNEL_PARK on a static socket, so nothing else is waited for.
* **Kept: `linger`, off the critical path.** On a static socket it buys nothing esl-app reads at hangup
  (CHANNEL_HANGUP_COMPLETE never arrives there, spec 2.6), but the mode is known only from the connect
  reply, and FreeSWITCH runs `linger` right after writing that reply, while esl-app is still reading
  it and deciding: 11 bytes in a write made anyway. Sending it later, to async sockets only, would
  open a window in which an async call's hangup events could be lost.
* **Nothing else before the first action:** no `event plain ...` (BACKGROUND_JOB is subscribed on the
  first `bgapi`), no `filter`, no waker (async sockets only); the connect reply is the one wait a
  decision needs."""


def static_path_section(result: dict[str, Any]) -> str:
    from .static_path import markdown

    return "\n\n".join(
        [STATIC_PATH_TITLE, STATIC_PATH_INTRO.format(calls=result["calls"]), markdown(result), STATIC_PATH_NOTES]
    )


def section(page: str, title: str) -> str | None:
    """The ``## title`` section of a markdown page (up to the next ``## ``), without its end."""
    start = page.find(title + "\n")
    if start < 0:
        return None
    end = page.find("\n## ", start + len(title))
    return page[start : end if end >= 0 else len(page)].rstrip("\n")


def replace_section(page: str, title: str, text: str) -> str:
    """``page`` with its ``## title`` section replaced by ``text``, or with ``text`` added before
    "## Memory" (the end when there is no such heading)."""
    old = section(page, title)
    if old is not None:
        return page.replace(old, text.rstrip("\n"), 1)
    at = page.find("\n## Memory")
    if at < 0:
        return page.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    return page[: at + 1] + text.rstrip("\n") + "\n\n" + page[at + 1 :]
