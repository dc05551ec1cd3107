"""``esl-app edge feed|status``: the SIP edge (Kamailio) fed with the cluster's health (docs/edge.md).

``feed`` runs the cluster registry (``ESL_APP_CLUSTER_*``) and ``KamailioFeedback`` (``ESL_APP_EDGE_*``)
in the foreground: every node that turns busy, draining or down is disabled in Kamailio's dispatcher,
and enabled again when up. Run one per Kamailio (it is idempotent: two feeders agree). ``status``
prints Kamailio's dispatcher destinations as it sees them now.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

ORDER = 65


def register(sub: argparse._SubParsersAction) -> None:
    edge = sub.add_parser("edge", help="the SIP edge: feed the cluster's health to Kamailio, show its dispatcher")
    actions = edge.add_subparsers(dest="edge_command", required=True)
    feed = actions.add_parser("feed", help="watch the cluster and set each node's state in Kamailio (foreground)")
    feed.add_argument("--for", dest="duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    feed.set_defaults(func=cmd_feed)
    status = actions.add_parser("status", help="Kamailio's dispatcher destinations: set, URI, flags, rweight")
    status.set_defaults(func=cmd_status)


def _edge_settings():
    from ..edge import EdgeSettings

    try:
        return EdgeSettings()
    except ValidationError as exc:
        raise SystemExit(f"error: invalid edge settings: {exc}") from None


def cmd_feed(args: argparse.Namespace) -> int:
    import gevent

    from ..cluster import ClusterRegistry
    from ..edge import KamailioFeedback
    from .cluster import _settings

    registry = ClusterRegistry(_settings()).start()
    feedback = KamailioFeedback(registry, _edge_settings()).start()
    print(f"feeding {len(registry.monitors)} node(s) to Kamailio at {feedback.settings.rpc_url}", file=sys.stderr)
    try:
        gevent.sleep(args.duration) if args.duration is not None else gevent.wait()
    except KeyboardInterrupt:
        pass
    finally:
        feedback.stop()
        registry.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..edge import KamailioRPC, KamailioRPCError

    settings = _edge_settings()
    try:
        destinations = KamailioRPC(settings.rpc_url, settings.rpc_timeout).destinations()
    except KamailioRPCError as exc:
        print(f"error: Kamailio at {settings.rpc_url}: {exc}", file=sys.stderr)
        return 1
    print(f"{'set':<5}{'uri':<32}{'flags':<7}{'rweight':>8}")
    for (set_id, uri), info in sorted(destinations.items()):
        print(f"{set_id:<5}{uri:<32}{info['flags']:<7}{info['rweight'] if info['rweight'] is not None else '-':>8}")
    return 0
