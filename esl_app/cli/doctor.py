"""``esl-app doctor``: check this host and every FreeSWITCH node of the cluster settings, print the fix
for each problem, exit 1 when something is critical (``--strict``: when anything is not ok).

The nodes are the cluster's (``ESL_APP_CLUSTER_NODES`` or ``[[cluster.nodes]]``, docs/cluster.md);
with none configured only the host is checked. What is checked and why: docs/doctor.md.
"""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

ORDER = 65


def register(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help="check the host and every configured FreeSWITCH node; print the fixes")
    doctor.add_argument("--json", action="store_true", help="one JSON object per finding instead of the text")
    doctor.add_argument("--strict", action="store_true", help="exit 1 on warnings too, not only on critical findings")
    doctor.add_argument("--no-host", action="store_true", help="skip the host checks")
    doctor.add_argument("--no-nodes", action="store_true", help="skip the node checks")
    doctor.add_argument(
        "--heartbeat-wait",
        type=float,
        default=2.5,
        metavar="SECONDS",
        help="how long to wait for two HEARTBEATs of each node to measure its interval (default 2.5)",
    )
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..cluster.settings import ClusterSettings
    from ..doctor import Finding, Report, Severity, check_host, check_nodes

    report = Report()
    if not args.no_host:
        report.findings += check_host()
    if not args.no_nodes:
        try:
            settings = ClusterSettings()
        except ValidationError as exc:
            raise SystemExit(f"error: invalid cluster settings: {exc}") from None
        if settings.nodes:
            report.findings += check_nodes(settings, heartbeat_wait=args.heartbeat_wait)
        else:
            report.findings.append(
                Finding(
                    scope="nodes",
                    check="cluster nodes",
                    severity=Severity.OK,
                    value="none configured (ESL_APP_CLUSTER_NODES or [[cluster.nodes]]): only the host was checked",
                )
            )
    if args.json:
        for finding in report.findings:
            print(json.dumps(finding.model_dump(mode="json")))
    else:
        print(report.format_text())
    return report.exit_code(strict=args.strict)
