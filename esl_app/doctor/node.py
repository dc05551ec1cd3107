"""Node checks, over each node's inbound event socket (the same connection esl-app's cluster uses).

What a running FreeSWITCH 1.10 tells, and how it is asked:

* ``api status``: the limits in force (``N session(s) max``, ``... out of max M`` sessions per second),
  including ``fsctl max_sessions``/``fsctl sps`` changes made at run time;
* ``api xml_locate configuration configuration name switch.conf``: switch.conf as loaded (max-sessions,
  sessions-per-second, event-heartbeat-interval, core-db-name, core-db-dsn, api-expansion), and the same
  for ``event_socket.conf`` (its ACL); the running heartbeat interval is not readable, so it is also
  measured from two HEARTBEAT events;
* ``api global_getvar db_dir``: where a core db with no absolute name lives (``-db`` flag).

The core db is where switch_core_sqldb.c puts it: ``core-db-dsn`` if set (``sqlite://PATH``,
``sqlite://memory://...``, or an ODBC/PostgreSQL DSN), else ``core-db-name`` (a path, or a name in
``db_dir``), else ``db_dir/core.db``.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import xml.etree.ElementTree as ET

import gevent

from ..cluster.settings import ClusterSettings, NodeSettings
from ..transport.inbound import DEFAULT_PASSWORD, AuthenticationFailed, InboundClient, RudeRejection, is_loopback
from .findings import Finding, Severity

# FreeSWITCH's defaults when switch.conf does not set them (switch_core.c)
DEFAULT_MAX_SESSIONS = 1000
DEFAULT_SPS = 30
DEFAULT_HEARTBEAT = 20
RECOMMENDED_HEARTBEAT = (1, 2)
# where a path is tmpfs on the usual Linux hosts and images (FreeSWITCH cannot tell us the fs type)
TMPFS_PREFIXES = ("/dev/shm/", "/run/shm/", "/run/")
SWITCH_CONF = "autoload_configs/switch.conf.xml (dialplan/switch.conf.xml)"

_MAX_SESSIONS = re.compile(r"^(\d+) session\(s\) max", re.M)
_SPS = re.compile(r"session\(s\) per Sec out of max (\d+)", re.M)


def parse_status(text: str) -> tuple[int | None, int | None]:
    """``api status`` → (max sessions, sessions per second) in force."""
    max_sessions = _MAX_SESSIONS.search(text)
    sps = _SPS.search(text)
    return (int(max_sessions.group(1)) if max_sessions else None, int(sps.group(1)) if sps else None)


def parse_config_params(text: str) -> dict[str, str] | None:
    """The ``<settings>`` params of an ``xml_locate configuration`` answer (None: not found/unparsable)."""
    text = text.strip()
    if not text.startswith("<"):
        return None  # "can't find anything", "-ERR ..."
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    params: dict[str, str] = {}
    for param in root.iterfind("./settings/param"):
        name = param.get("name")
        if name:
            params[name.lower()] = param.get("value", "")
    return params


def core_db_location(params: dict[str, str], db_dir: str) -> tuple[str, str]:
    """(kind, where): kind is ``memory``, ``external`` or ``file`` (where = the file's path)."""
    dsn = params.get("core-db-dsn", "").strip()
    if dsn:
        if dsn.lower().startswith("sqlite://"):
            path = dsn[9:]
            if path.lower().startswith("memory://"):
                return "memory", dsn
            return "file", path
        return "external", re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)  # never print a password
    name = params.get("core-db-name", "").strip() or "core"
    if name.startswith("/"):
        return "file", name
    return "file", f"{db_dir.rstrip('/')}/{name}.db"


class _Probe:
    """One connection to one node for the checks: api commands, and the HEARTBEAT arrival times."""

    def __init__(self, node: NodeSettings, settings: ClusterSettings) -> None:
        self.heartbeats: list[float] = []
        self.client = InboundClient(
            node.host,
            node.port,
            node.password.get_secret_value(),
            name=node.name,
            events=("HEARTBEAT",),
            on_event=self._on_event,
            connect_timeout=settings.connect_timeout,
            command_timeout=settings.command_timeout,
            backoff_min=0.2,
            backoff_max=1.0,
            allow_default_password=True,  # the doctor reports it instead of refusing to look
        )

    def _on_event(self, event) -> None:
        if event.name == "HEARTBEAT":
            self.heartbeats.append(time.monotonic())

    def measured_interval(self, wait: float) -> float | None:
        deadline = time.monotonic() + wait
        while len(self.heartbeats) < 2 and time.monotonic() < deadline:
            gevent.sleep(0.02)
        if len(self.heartbeats) < 2:
            return None
        return self.heartbeats[1] - self.heartbeats[0]


def check_node(node: NodeSettings, settings: ClusterSettings, heartbeat_wait: float = 2.5) -> list[Finding]:
    scope = f"node {node.name} ({node.host}:{node.port})"

    def finding(check: str, severity: Severity, value: str = "", why: str = "", fix: str = "") -> Finding:
        return Finding(scope=scope, check=check, severity=severity, value=value, why=why, fix=fix)

    findings = [_password_finding(node, finding)]
    probe = _Probe(node, settings)
    probe.client.start()
    try:
        if not probe.client.wait_connected(settings.connect_timeout + 1.0):
            findings.append(_unreachable(node, probe.client.last_error, finding))
            return findings
        status = probe.client.api("status")
        switch_conf = parse_config_params(probe.client.api("xml_locate configuration configuration name switch.conf"))
        socket_conf = parse_config_params(
            probe.client.api("xml_locate configuration configuration name event_socket.conf")
        )
        db_dir = probe.client.api("global_getvar db_dir").strip()
        measured = probe.measured_interval(heartbeat_wait)
    except Exception as exc:  # a node that stops answering mid-check is itself the finding
        findings.append(
            finding(
                "event socket",
                Severity.CRITICAL,
                f"{type(exc).__name__}: {exc}",
                "the node stopped answering during the checks",
                "see the node's log",
            )
        )
        return findings
    finally:
        probe.client.stop()
    findings.append(finding("event socket", Severity.OK, "connected, authenticated"))
    if switch_conf is None:
        findings.append(
            finding(
                "switch.conf",
                Severity.WARNING,
                "not readable (xml_locate)",
                "the configured values cannot be compared with the running ones",
                "load mod_commands (xml_locate) and keep switch.conf in the XML configuration",
            )
        )
    conf = switch_conf or {}
    findings += _limits(status, conf, finding)
    findings.append(_heartbeat(conf, measured, heartbeat_wait, settings, finding))
    findings.append(_core_db(conf, db_dir, finding))
    findings.append(_api_expansion(conf, finding))
    if socket_conf is not None:
        findings.append(_event_socket_acl(socket_conf, finding))
    return findings


def check_nodes(settings: ClusterSettings, heartbeat_wait: float = 2.5) -> list[Finding]:
    """Every node at once (each check waits up to ``heartbeat_wait`` for heartbeats); in settings order."""
    jobs = [gevent.spawn(check_node, node, settings, heartbeat_wait) for node in settings.nodes]
    gevent.joinall(jobs)
    findings: list[Finding] = []
    for job, node in zip(jobs, settings.nodes, strict=True):
        if job.successful():
            findings += job.value
        else:
            findings.append(
                Finding(
                    scope=f"node {node.name} ({node.host}:{node.port})",
                    check="doctor",
                    severity=Severity.CRITICAL,
                    value=f"{type(job.exception).__name__}: {job.exception}",
                    why="the check itself failed",
                )
            )
    return findings


# -- the individual findings -------------------------------------------------------------------------


def _password_finding(node: NodeSettings, finding) -> Finding:
    check = "event socket password"
    if node.password.get_secret_value() != DEFAULT_PASSWORD:
        return finding(check, Severity.OK, "not the default")
    fix = (
        "set a long random password in event_socket.conf.xml (docker: FS_ESL_PASSWORD) and the same in the "
        "node's cluster settings; add an apply-inbound-acl naming only the esl-app hosts"
    )
    if is_loopback(node.host):
        return finding(
            check,
            Severity.WARNING,
            f"default ({DEFAULT_PASSWORD})",
            "anyone with a shell on this host can run api commands (system, fsctl shutdown) on the node",
            fix,
        )
    return finding(
        check,
        Severity.CRITICAL,
        f"default ({DEFAULT_PASSWORD})",
        "anyone who reaches the port can run api commands (system, originate, fsctl shutdown) on the node",
        fix,
    )


def _unreachable(node: NodeSettings, error: BaseException | None, finding) -> Finding:
    if isinstance(error, AuthenticationFailed):
        why, fix = "the node refused the password", "use the node's event_socket.conf password in the cluster settings"
    elif isinstance(error, RudeRejection):
        why = "the node's apply-inbound-acl refused this host (text/rude-rejection)"
        fix = "add this host to the ACL list named by event_socket.conf's apply-inbound-acl (acl.conf.xml), reloadacl"
    else:
        why = f"no connection: {error}" if error else "no connection"
        fix = (
            f"is FreeSWITCH running with mod_event_socket listening on {node.host}:{node.port} "
            "(event_socket.conf listen-ip/listen-port), and the port open from this host?"
        )
    return finding("event socket", Severity.CRITICAL, "unreachable", why, fix)


def _int(value: str | None) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(str(value).strip())
    return None


def _limits(status: str, conf: dict[str, str], finding) -> list[Finding]:
    running_max, running_sps = parse_status(status)
    out: list[Finding] = []
    for check, running, key, default, unit in (
        ("max-sessions", running_max, "max-sessions", DEFAULT_MAX_SESSIONS, "sessions"),
        ("sessions-per-second", running_sps, "sessions-per-second", DEFAULT_SPS, "new sessions/s"),
    ):
        configured = _int(conf.get(key))
        if running is None:
            out.append(
                finding(
                    check,
                    Severity.WARNING,
                    "not in api status",
                    "the node's status output could not be read",
                    "check the FreeSWITCH version",
                )
            )
            continue
        value = f"{running} {unit}"
        fsctl = "fsctl max_sessions" if key == "max-sessions" else "fsctl sps"
        if configured is None:
            out.append(
                finding(
                    check,
                    Severity.WARNING,
                    f"{value} (FreeSWITCH's default)" if running == default else value,
                    "not set in switch.conf: the node runs on "
                    + ("defaults" if running == default else "a value set at run time, lost at restart")
                    + ", not on a limit sized for this host",
                    f'<param name="{key}" value="..."/> in {SWITCH_CONF}, sized for the host',
                )
            )
        elif configured != running:
            out.append(
                finding(
                    check,
                    Severity.WARNING,
                    f"{value}, switch.conf says {configured}",
                    f"changed at run time ({fsctl}): a restart goes back to {configured}",
                    f"put the value you want in {SWITCH_CONF}",
                )
            )
        else:
            out.append(finding(check, Severity.OK, value))
    if running_max is not None and running_sps is not None and running_sps > running_max:
        out.append(
            finding(
                "sessions-per-second",
                Severity.WARNING,
                f"{running_sps}/s > {running_max} max",
                "one second of calls can fill the node",
                "keep sessions-per-second well below max-sessions",
            )
        )
    return out


def _heartbeat(
    conf: dict[str, str], measured: float | None, wait: float, settings: ClusterSettings, finding
) -> Finding:
    check = "event-heartbeat-interval"
    configured = _int(conf.get("event-heartbeat-interval"))
    # whole seconds, as switch.conf sets it; a late event only lengthens a gap, so round down (1.6 s is 1 s)
    interval = math.floor(measured + 0.25) if measured is not None else (configured or DEFAULT_HEARTBEAT)
    interval = max(interval, 1)
    seen = f"measured {measured:.2f} s" if measured is not None else f"no 2 HEARTBEATs in {wait:g} s"
    said = (
        f"switch.conf: {configured} s"
        if configured is not None
        else f"switch.conf: unset (default {DEFAULT_HEARTBEAT} s)"
    )
    value = f"{seen}; {said}; cluster heartbeat_interval {settings.heartbeat_interval:g} s"
    fix_node = f'<param name="event-heartbeat-interval" value="1"/> in {SWITCH_CONF}, then restart FreeSWITCH'
    if interval > settings.heartbeat_max_age:
        return finding(
            check,
            Severity.CRITICAL,
            value,
            f"esl-app marks a node down after {settings.heartbeat_max_age:g} s without a heartbeat: this "
            "node flaps down between heartbeats and gets no calls",
            fix_node + ("" if settings.heartbeat_interval == 1 else "; and heartbeat_interval = 1 in [cluster]"),
        )
    if measured is None and configured is not None and configured <= RECOMMENDED_HEARTBEAT[1]:
        return finding(
            check,
            Severity.WARNING,
            value,
            "switch.conf asks for a short interval, but the node does not send it: the running value "
            "changes only at restart",
            "restart FreeSWITCH (reloadxml does not change it)",
        )
    if interval > RECOMMENDED_HEARTBEAT[1]:
        return finding(
            check,
            Severity.WARNING,
            value,
            f"a hung node is noticed only after {interval * settings.heartbeat_grace:g} s, and load "
            f"readings are {interval} s old",
            fix_node,
        )
    if abs(settings.heartbeat_interval - interval) >= 1:
        return finding(
            check,
            Severity.WARNING,
            value,
            f"the cluster settings expect one every {settings.heartbeat_interval:g} s: a hung node is "
            f"noticed only after {settings.heartbeat_max_age:g} s",
            f"heartbeat_interval = {interval} in [cluster] (ESL_APP_CLUSTER_HEARTBEAT_INTERVAL)",
        )
    return finding(check, Severity.OK, value)


def _core_db(conf: dict[str, str], db_dir: str, finding) -> Finding:
    kind, where = core_db_location(conf, db_dir or "(db_dir unknown)")
    check = "core db"
    if kind == "memory":
        return finding(check, Severity.OK, f"in memory ({where})")
    if kind == "external":
        return finding(check, Severity.OK, f"external database ({where})")
    if where.startswith(TMPFS_PREFIXES):
        return finding(check, Severity.OK, f"{where} (tmpfs)")
    return finding(
        check,
        Severity.WARNING,
        f"{where} (disk)",
        "every call writes the core db (channels, calls): on disk its writes and fsyncs slow call setup under load",
        f'<param name="core-db-name" value="/dev/shm/core.db"/> in {SWITCH_CONF} (or start FreeSWITCH '
        "with -db /dev/shm/freeswitch), then restart",
    )


def _api_expansion(conf: dict[str, str], finding) -> Finding:
    value = conf.get("api-expansion", "")
    if value.strip().lower() in ("false", "no", "off", "0"):
        return finding("api-expansion", Severity.OK, "off")
    return finding(
        "api-expansion",
        Severity.WARNING,
        "on" if value else "on (FreeSWITCH's default)",
        "${system(...)} in any expanded text runs a command: one dialplan action with a caller's variable "
        "is enough (docs/expansion.md)",
        f'<param name="api-expansion" value="false"/> in {SWITCH_CONF}, or fsctl api_expansion off',
    )


def _event_socket_acl(conf: dict[str, str], finding) -> Finding:
    acl = conf.get("apply-inbound-acl", "").strip()
    listen = conf.get("listen-ip", "").strip()
    if acl:
        return finding("event socket ACL", Severity.OK, acl)
    if listen and is_loopback(listen):
        return finding("event socket ACL", Severity.OK, f"none, listening on {listen} only")
    return finding(
        "event socket ACL",
        Severity.WARNING,
        f"none, listening on {listen or '?'}",
        "any host that reaches the port may try passwords",
        '<param name="apply-inbound-acl" value="esl_app"/> in event_socket.conf.xml and an esl_app list '
        "naming the esl-app hosts in acl.conf.xml",
    )
