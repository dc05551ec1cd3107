"""``esl-app cluster status|pause|resume``: the FreeSWITCH nodes of the cluster settings
(``ESL_APP_CLUSTER_*`` or ``[cluster]`` in the TOML file; docs/cluster.md).

``status`` connects to every node like any esl-app process does, waits until each one has been read
(or ``--settle`` seconds), and prints one line per node. ``pause``/``resume`` run ``fsctl pause``/
``fsctl resume`` on one node: every esl-app process then sees it ``draining`` and sends it no new
calls, while its calls go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pydantic import ValidationError

ORDER = 60
COLUMNS = ("node", "state", "sessions", "idle cpu", "sess/s", "heartbeat", "probe rtt", "roles", "reason")


def register(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="the FreeSWITCH nodes of the cluster: status, pause, resume")
    actions = cluster.add_subparsers(dest="cluster_command", required=True)
    status = actions.add_parser("status", help="a table of nodes: state, load, heartbeat age, probe RTT")
    status.add_argument("--json", action="store_true", help="one JSON object per node instead of the table")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="print again every SECONDS until Ctrl-C")
    status.add_argument("--settle", type=float, metavar="SECONDS", help="longest wait for every node's first reading")
    status.set_defaults(func=cmd_status)
    for name, verb in (("pause", "stop new calls on"), ("resume", "let new calls reach")):
        action = actions.add_parser(name, help=f"fsctl {name}: {verb} a node (seen by every esl-app process)")
        action.add_argument("node")
        action.add_argument("--direction", choices=("inbound", "outbound", "all"), default="all")
        action.set_defaults(func=cmd_fsctl, verb=name)


def _settings():
    from ..cluster.settings import ClusterSettings

    try:
        settings = ClusterSettings()
    except ValidationError as exc:
        raise SystemExit(f"error: invalid cluster settings: {exc}") from None
    if not settings.nodes:
        raise SystemExit(
            "error: no cluster nodes configured (ESL_APP_CLUSTER_NODES or [[cluster.nodes]]; docs/cluster.md)"
        )
    return settings


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def format_table(nodes) -> str:
    rows = [COLUMNS]
    for node in nodes:
        sessions = "-" if node.sessions is None else f"{node.sessions}/{node.max_sessions}"
        if node.in_flight:
            sessions += f" (+{node.in_flight})"
        rows.append(
            (
                node.name,
                node.state.value,
                sessions,
                "-" if node.idle_cpu is None else f"{node.idle_cpu:.1f}%",
                "-" if node.sessions_per_second is None else str(node.sessions_per_second),
                _age(node.heartbeat_age),
                "-" if node.probe_rtt is None else f"{node.probe_rtt * 1000:.1f}ms",
                ",".join(node.roles),
                node.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def cmd_status(args: argparse.Namespace) -> int:
    from ..cluster import ClusterRegistry, NodeState

    settings = _settings()
    # long enough to connect, probe and hear one heartbeat (the heartbeat age column), never long
    default = min(10.0, settings.connect_timeout + max(settings.heartbeat_interval, 2 * settings.probe_interval) + 0.5)
    settle = args.settle if args.settle is not None else default
    registry = ClusterRegistry(settings).start()
    try:
        registry.wait_until(
            lambda: all(h.state is not NodeState.DOWN and h.last_heartbeat_at is not None for h in _healths(registry)),
            settle,
        )
        while True:
            nodes = registry.snapshot()
            if args.json:
                for node in nodes:
                    print(json.dumps(node.model_dump(mode="json")), flush=True)
            else:
                print(format_table(nodes), flush=True)
            if not args.watch:
                break
            import gevent

            gevent.sleep(args.watch)
            print()
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
    return 0 if all(node.state is not NodeState.DOWN for node in registry.snapshot()) else 1


def _healths(registry):
    return [monitor.health for monitor in registry.monitors.values()]


def cmd_fsctl(args: argparse.Namespace) -> int:
    from ..transport.inbound import InboundClient, InboundError

    settings = _settings()
    node = next((n for n in settings.nodes if n.name == args.node), None)
    if node is None:
        names = ", ".join(n.name for n in settings.nodes)
        raise SystemExit(f"error: no node {args.node!r} in the cluster settings (nodes: {names})")
    command = f"fsctl {args.verb}" + ("" if args.direction == "all" else f" {args.direction}")
    client = InboundClient(
        node.host, node.port, node.password.get_secret_value(), name=node.name, events=(),
        connect_timeout=settings.connect_timeout, command_timeout=settings.command_timeout,
        allow_default_password=node.allow_default_password,
    )  # fmt: skip
    started = time.monotonic()
    client.start()
    try:
        if not client.wait_connected(settings.connect_timeout + 1):
            print(f"error: cannot reach {node.name} at {node.host}:{node.port}", file=sys.stderr)
            return 1
        reply = client.api(command).strip()
    except InboundError as exc:
        print(f"error: {node.name}: {command}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.stop()
    print(f"{node.name}: {command}: {reply} ({(time.monotonic() - started) * 1000:.0f} ms)")
    return 0 if reply.startswith("+OK") else 1
