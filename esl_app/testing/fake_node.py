"""A fake FreeSWITCH node for cluster tests: the inbound Event Socket (port 8021) of a whole switch.

``FakeNode`` listens on ``127.0.0.1`` (a free port by default) and speaks to any number of inbound
clients the way FreeSWITCH 1.10.12 does (``esl_app.testing.node_session``: auth, api, bgapi, events,
filters, exit), with the node behaviour measured on real nodes (``fixtures``/spec 5,
``freeswitch-cluster.md``):

* **Load.** HEARTBEAT every ``heartbeat_interval`` seconds with the real header set (Session-Count,
  Max-Sessions, Session-Per-Sec = the *remaining* tokens of this second, Idle-CPU, Core-UUID,
  Uptime-msec, ...). ``api status`` and ``show calls count`` in the real text formats.
* **Calls.** ``originate`` (api or bgapi) creates a leg per the dial string, honours
  ``{origination_uuid=...}``, fires CHANNEL_CREATE / CHANNEL_ANSWER / CHANNEL_HANGUP /
  CHANNEL_HANGUP_COMPLETE, and ends as the destination's ``Outcome`` says (answer, busy, no answer,
  ...). An answered call runs its application or extension (``node_calls``): ``&socket(HOST:PORT
  async full)`` connects it to an application server through the per-call fake.
* **Limits and draining.** ``fsctl max_sessions``, ``fsctl pause [inbound|outbound]``,
  ``fsctl resume``, ``fsctl pause_check``. A node paused *inbound* still says "ready" in
  ``api status`` and in its heartbeats, as the real one does; only ``pause_check inbound`` shows it.
  A session the node cannot create (paused outbound, full, sessions-per-second spent, duplicate
  UUID) fails the originate with ``-ERR DESTINATION_OUT_OF_ORDER`` (mod_sofia's cause).
* **Failures on demand.** ``set_max_sessions``, ``set_load``, ``crash()`` (every socket reset,
  heartbeats stop, calls gone, new connections refused), ``restart()`` (same port, new Core-UUID,
  Uptime-msec from zero), ``deny_clients()`` (ACL: ``text/rude-rejection``), ``disconnect_clients()``.
* **Configuration.** ``xml_locate configuration configuration name switch.conf`` (and
  ``event_socket.conf``) from the node's settings, overridable per param (``config_params``);
  ``global_getvar db_dir``. What ``esl-app doctor`` reads.
* **Counting.** ``calls_to(destination)``: how many legs were ever placed to it (exactly-once tests).

Several nodes run in one test process (gevent). Every wait inside is bounded.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal
from xml.sax.saxutils import escape

import gevent
import gevent.socket
from gevent.event import Event as Signal

from .channel import VERSION, Pairs, common_headers
from .node_calls import (
    ENDPOINTS,
    Action,
    LegChannel,
    NodeCall,
    OriginateRequest,
    Outcome,
    parse_actions,
    parse_originate,
    parse_outcome,
)
from .node_session import NodeSession

QUOTE = {'"': "&quot;"}

__all__ = ["Action", "FakeNode", "NodeCall", "Outcome"]

Direction = Literal["all", "inbound", "outbound"]
VERSION_HUMAN = "1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit"
SESSION_REFUSED = "DESTINATION_OUT_OF_ORDER"  # mod_sofia's cause when no session can be created


def _plural(value: int, unit: str) -> str:
    return f"{value} {unit}{'' if value == 1 else 's'}"


def uptime_text(microseconds: int) -> str:
    """``switch_core_measure_time`` as written by ``status`` and HEARTBEAT's ``Up-Time``."""
    mms = microseconds % 1000
    ms = (microseconds // 1000) % 1000
    seconds = microseconds // 1_000_000
    sec, minutes = seconds % 60, seconds // 60
    mins, hours = minutes % 60, minutes // 60
    hrs, days = hours % 24, hours // 24
    day, yr = days % 365, days // 365
    return ", ".join(
        [
            _plural(yr, "year"),
            _plural(day, "day"),
            _plural(hrs, "hour"),
            _plural(mins, "minute"),
            _plural(sec, "second"),
            _plural(ms, "millisecond"),
            _plural(mms, "microsecond"),
        ]
    )


class FakeNode:
    """One fake FreeSWITCH node. ``start()`` it (or use ``with``), point clients at ``address``.

    ``name`` is the node's ``FreeSWITCH-Switchname`` (how a cluster tells nodes apart: the hostname is
    the machine's, spec/cluster notes). ``ring_seconds``: default time before a destination's outcome.
    ``chunker``: splits every write into pieces, as real reads split and merge frames.
    ``call_safety_timeout``: the longest a call placed into an application server may run.
    """

    def __init__(
        self,
        name: str = "fs1",
        *,
        password: str = "ClueCon",
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval: float = 1.0,
        max_sessions: int = 1000,
        sessions_per_second: int = 30,
        idle_cpu: float = 99.0,
        ring_seconds: float = 0.0,
        default_outcome: str | Outcome = "answer",
        hostname: str = "fs-test",
        chunker: Callable[[bytes], list[bytes]] | None = None,
        call_safety_timeout: float = 60.0,
        socket_connect_timeout: float = 2.0,
        auth_timeout: float = 25.0,
    ) -> None:
        self.name = name
        self.password = password
        self.host = host
        self.port = port
        self.hostname = hostname
        self.chunker = chunker
        self.call_safety_timeout = call_safety_timeout
        self.socket_connect_timeout = socket_connect_timeout
        self.auth_timeout = auth_timeout
        self.heartbeat_interval = heartbeat_interval
        self.configured_max_sessions = max_sessions
        self.max_sessions = max_sessions
        self.sessions_per_second = sessions_per_second
        self.idle_cpu = idle_cpu
        self.extra_sessions = 0  # load that is not one of the node's own legs (set_load)
        self.ring_seconds = ring_seconds
        self.default_outcome = parse_outcome(default_outcome)
        self.outcomes: dict[str, Outcome] = {}
        self.dialplan: dict[str, list[Action]] = {}
        self.paused_inbound = False
        self.paused_outbound = False
        self.deny_all = False
        # ``xml_locate configuration``: params over the ones derived from the node's settings, per file
        # ("switch.conf", "event_socket.conf"); ``global_getvar db_dir`` (the Debian packages' default)
        self.config_params: dict[str, dict[str, str]] = {}
        self.db_dir = "/var/lib/freeswitch/db"
        # observation
        self.calls: list[NodeCall] = []  # every leg ever placed, in order
        self.api_commands: list[str] = []  # every api and bgapi command line run, in order
        self.sessions: list[NodeSession] = []  # connected inbound clients
        self.connections_accepted = 0
        self._placed: Counter[str] = Counter()
        self._live: dict[str, NodeCall] = {}
        self._jobs: set[gevent.Greenlet] = set()
        self._sequence = 1000
        self._listener: Any = None
        self._accept_greenlet: gevent.Greenlet | None = None
        self._heartbeat_greenlet: gevent.Greenlet | None = None
        self._heartbeat_wake = Signal()
        self.running = False
        self._new_run()

    # -- lifecycle ------------------------------------------------------------------------------

    def _new_run(self) -> None:
        """State that a real restart resets."""
        self.core_uuid = str(uuidlib.uuid4())
        self.started_at = time.monotonic()
        self.max_sessions = self.configured_max_sessions  # fsctl max_sessions holds until restart
        self.extra_sessions = 0
        self.paused_inbound = self.paused_outbound = False
        self.sessions_since_startup = 0
        self.session_peak = 0
        self.sps_peak = 0
        self._sps_second = int(time.monotonic())
        self._sps_used = 0
        self._sps_last = 0

    def start(self) -> FakeNode:
        """Listen (on the same port again after ``crash()``) and start the heartbeat."""
        if self.running:
            return self
        listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self.running = True
        self._accept_greenlet = gevent.spawn(self._accept_loop, listener)
        self._heartbeat_greenlet = gevent.spawn(self._heartbeat_loop)
        return self

    def stop(self) -> None:
        """Shut the node down for good (like ``crash()``; the port is released)."""
        self.crash()

    def __enter__(self) -> FakeNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uptime_msec(self) -> int:
        return int((time.monotonic() - self.started_at) * 1000)

    def crash(self) -> None:
        """The process dies: every socket is reset, heartbeats stop, calls vanish without events,
        new connections are refused. ``calls_to`` keeps counting what was placed."""
        self.running = False
        current = gevent.getcurrent()
        accept = self._accept_greenlet
        if accept is not None and accept is not current:
            accept.kill(block=True, timeout=1.0)  # gevent closes a socket only once no greenlet waits on it
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        for greenlet in (self._heartbeat_greenlet, *self._jobs):
            if greenlet is not None and greenlet is not current and not greenlet.dead:
                greenlet.kill(block=False)
        self._jobs.clear()
        for session in list(self.sessions):
            session.close(abort=True)
            # a listener blocked in an api (originate ringing) dies with the process
            if session.greenlet is not None and session.greenlet is not current:
                session.greenlet.kill(block=False)
        self.sessions.clear()
        for call in list(self._live.values()):
            call.vanish()
        self._live.clear()

    def restart(self) -> None:
        """Crash if running, then start again on the same port with a new Core-UUID and uptime."""
        self.crash()
        self._new_run()
        self.start()

    # -- configuration and failures on demand ---------------------------------------------------

    def set_outcome(
        self,
        destination: str,
        outcome: str | Outcome = "answer",
        *,
        ring_seconds: float | None = None,
        hangup_after: float | None = None,
    ) -> None:
        """What the far end does with calls to ``destination`` (the number in the dial string)."""
        spec = parse_outcome(outcome).model_copy()
        if ring_seconds is not None:
            spec.ring_seconds = ring_seconds
        if hangup_after is not None:
            spec.hangup_after = hangup_after
        self.outcomes[destination] = spec

    def set_dialplan(self, extension: str, actions: Sequence[Action | tuple[str, str] | str]) -> None:
        """The actions a call sent to ``extension`` runs (``originate <dial> <extension>``)."""
        self.dialplan[extension] = parse_actions(actions)

    def set_max_sessions(self, limit: int) -> None:
        self.max_sessions = limit

    def set_load(self, *, sessions: int | None = None, idle_cpu: float | None = None) -> None:
        """Sessions the node carries besides its own legs, and the idle CPU it reports."""
        if sessions is not None:
            self.extra_sessions = max(0, sessions)
        if idle_cpu is not None:
            self.idle_cpu = idle_cpu

    def set_heartbeat_interval(self, seconds: float) -> None:
        self.heartbeat_interval = seconds
        self._heartbeat_wake.set()

    def pause(self, direction: Direction = "all") -> None:
        if direction in ("all", "inbound"):
            self.paused_inbound = True
        if direction in ("all", "outbound"):
            self.paused_outbound = True

    def resume(self, direction: Direction = "all") -> None:
        if direction in ("all", "inbound"):
            self.paused_inbound = False
        if direction in ("all", "outbound"):
            self.paused_outbound = False

    def deny_clients(self, deny: bool = True) -> None:
        """The ACL refuses new clients: ``text/rude-rejection`` instead of ``auth/request``."""
        self.deny_all = deny

    def acl_allows(self, peer: tuple[str, int]) -> bool:
        return not self.deny_all

    def disconnect_clients(self, body: bytes = b"The system is being shut down.\n") -> None:
        """Write a disconnect notice to every client and close (a shutdown; spec 1.2's other bodies)."""
        for session in list(self.sessions):
            session.notice_and_close(body)

    def inject(self, data: bytes) -> None:
        """Write raw bytes to every authenticated client between frames (hostile-input tests)."""
        for session in list(self.sessions):
            if session.authenticated:
                session.write_raw(data)

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> bool:
        """The far end hangs a leg up."""
        call = self._live.get(uuid)
        if call is None:
            return False
        call.hangup(cause)
        return True

    # -- observation ----------------------------------------------------------------------------

    def calls_to(self, destination: str) -> int:
        """Legs ever placed to ``destination`` (the far end would have seen this many calls)."""
        return self._placed[destination]

    def call(self, uuid: str) -> NodeCall | None:
        """A leg by UUID (live or ended)."""
        return next((c for c in reversed(self.calls) if c.uuid == uuid), None)

    @property
    def live_calls(self) -> list[NodeCall]:
        return list(self._live.values())

    @property
    def session_count(self) -> int:
        return len(self._live) + self.extra_sessions

    @property
    def ready(self) -> bool:
        """``switch_core_ready``: false only when both directions are paused."""
        return not (self.paused_inbound and self.paused_outbound)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(interval)
        return True

    # -- events ---------------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _brand(self, pairs: Iterable[tuple[str, str]]) -> Pairs:
        """The node's identity in headers built by the shared channel templates (one Core-UUID each)."""
        identity = {
            "Core-UUID": self.core_uuid,
            "FreeSWITCH-Hostname": self.hostname,
            "FreeSWITCH-Switchname": self.name,
        }
        out: Pairs = []
        sequence_done = False
        for name, value in pairs:
            if name in identity:
                value = identity[name]
            elif name == "Event-Sequence" and not sequence_done:
                value, sequence_done = str(self._next_sequence()), True
            out.append((name, value))
        return out

    def fire(self, name: str, headers: Iterable[tuple[str, str]], body: str | None = None) -> None:
        """Fire an event on the node: every subscribed client whose filters pass it gets it."""
        pairs = self._brand(headers)
        for session in list(self.sessions):
            session.offer(name, pairs, body)

    def _fire_channel(self, call: NodeCall, name: str, *, first: Pairs | tuple[()] = ()) -> None:
        if not self.running:
            return
        self.fire(name, call.channel.event(name, first=first))

    def heartbeat_headers(self) -> Pairs:
        """HEARTBEAT as ``send_heartbeat()`` (switch_core.c) builds it, in the captured order."""
        self._roll_sps()
        uptime_us = int((time.monotonic() - self.started_at) * 1_000_000)
        pairs = common_headers("HEARTBEAT", 0, ("switch_core.c", "send_heartbeat", 95))
        pairs += [
            ("Event-Info", "System Ready"),
            ("Up-Time", uptime_text(uptime_us)),
            ("FreeSWITCH-Version", VERSION),
            ("Uptime-msec", str(uptime_us // 1000)),
            ("Session-Count", str(self.session_count)),
            ("Max-Sessions", str(self.max_sessions)),
            ("Session-Per-Sec", str(max(0, self.sessions_per_second - self._sps_used))),
            ("Session-Per-Sec-Last", str(self._sps_last)),
            ("Session-Per-Sec-Max", str(self.sps_peak)),
            ("Session-Per-Sec-FiveMin", str(self.sps_peak)),
            ("Session-Since-Startup", str(self.sessions_since_startup)),
            ("Session-Peak-Max", str(self.session_peak)),
            ("Session-Peak-FiveMin", str(self.session_peak)),
            ("Idle-CPU", f"{self.idle_cpu:f}"),
        ]
        return pairs

    def send_heartbeat(self) -> None:
        """Fire one HEARTBEAT now."""
        if self.running:
            self.fire("HEARTBEAT", self.heartbeat_headers())

    def _heartbeat_loop(self) -> None:
        while self.running:
            self._heartbeat_wake.clear()
            if self._heartbeat_wake.wait(self.heartbeat_interval):
                continue  # the interval changed: start a new period
            self.send_heartbeat()

    # -- connections ----------------------------------------------------------------------------

    def _accept_loop(self, listener: Any) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections_accepted += 1
            session = NodeSession(self, sock, peer, chunker=self.chunker)
            self.sessions.append(session)
            session.greenlet = gevent.spawn(session.run)

    def _session_closed(self, session: NodeSession) -> None:
        with contextlib.suppress(ValueError):
            self.sessions.remove(session)

    # -- api ------------------------------------------------------------------------------------

    def start_job(self, job_uuid: str, text: str) -> None:
        """``bgapi``: run the command in its own greenlet, then fire BACKGROUND_JOB with the output."""
        greenlet = gevent.spawn(self._job, job_uuid, text)
        self._jobs.add(greenlet)
        greenlet.link(self._jobs.discard)

    def _job(self, job_uuid: str, text: str) -> None:
        output = self.run_api(text)
        command, _, args = text.partition(" ")
        pairs = common_headers("BACKGROUND_JOB", 0)
        pairs.append(("Job-UUID", job_uuid))
        pairs.append(("Job-Command", command))
        if args.strip():
            pairs.append(("Job-Command-Arg", args.strip()))
        if self.running:
            self.fire("BACKGROUND_JOB", pairs, output or None)

    def run_api(self, text: str) -> str:
        """What ``api <text>`` writes as the api/response body."""
        self.api_commands.append(text)
        name, _, rest = text.partition(" ")
        command = name.lower()
        args = rest.split()
        handler = getattr(self, f"_api_{command}", None)
        if handler is None:
            return f"-ERR {name} Command not found!\n"
        return handler(rest.strip(), args)

    def _api_status(self, rest: str, args: list[str]) -> str:
        self._roll_sps()
        uptime_us = int((time.monotonic() - self.started_at) * 1_000_000)
        return (
            f"UP {uptime_text(uptime_us)}\n"
            f"FreeSWITCH (Version {VERSION_HUMAN}) is {'ready' if self.ready else 'not ready'}\n"
            f"{self.sessions_since_startup} session(s) since startup\n"
            f"{self.session_count} session(s) - peak {self.session_peak}, last 5min {self.session_peak} \n"
            f"{self._sps_last} session(s) per Sec out of max {self.sessions_per_second}, peak {self.sps_peak},"
            f" last 5min {self.sps_peak} \n"
            f"{self.max_sessions} session(s) max\n"
            f"min idle cpu 0.00/{self.idle_cpu:.2f}\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    def _api_show(self, rest: str, args: list[str]) -> str:
        if args and args[-1].lower() == "count":
            return f"\n{len(self._live)} total.\n"
        if args and args[0].lower() in ("calls", "channels"):
            lines = ["uuid,direction,created,created_epoch,name,state,cid_name,cid_num,dest"]
            for call in self._live.values():
                ch = call.channel
                lines.append(
                    f"{call.uuid},outbound,,{ch.profile.created_time // 1_000_000},{ch.name},"
                    f"{ch.running_state},{ch.profile.caller_id_name},{ch.profile.caller_id_number},{call.destination}"
                )
            return "\n" + "\n".join(lines) + f"\n\n{len(self._live)} total.\n"
        return "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|channels [count|like <match string>]|calls|detailed_calls|bridged_calls|detailed_bridged_calls|aliases|complete|chat|management|modules|nat_map|say|interfaces|interface_types|tasks|limits|status\n"  # noqa: E501

    def _api_uuid_exists(self, rest: str, args: list[str]) -> str:
        return "true" if rest and rest in self._live else "false"

    def _api_uuid_kill(self, rest: str, args: list[str]) -> str:
        if not args:
            return "-USAGE: <uuid> [cause]\n"
        call = self._live.get(args[0])
        if call is None:
            return "-ERR No such channel!\n"
        call.hangup(args[1] if len(args) > 1 else "NORMAL_CLEARING")
        return "+OK\n"

    def _api_hupall(self, rest: str, args: list[str]) -> str:
        cause = args[0] if args else "MANAGER_REQUEST"
        for call in list(self._live.values()):
            call.hangup(cause)
        return f"+OK hangup all channels with cause {cause}\n"

    def _api_uuid_getvar(self, rest: str, args: list[str]) -> str:
        if len(args) < 2:
            return "-USAGE: <uuid> <var>\n"
        call = self._live.get(args[0])
        if call is None:
            return "-ERR No such channel!\n"
        return call.channel.get_var(args[1]) or "_undef_"

    def global_variables(self) -> dict[str, str]:
        """The global variables ``switch_core_init`` sets that a cluster reads (``core_uuid`` = Core-UUID)."""
        return {
            "hostname": self.hostname,
            "local_ip_v4": "192.0.2.2",
            "local_ip_v6": "fd00::2",
            "switch_serial": "fake",
            "core_uuid": self.core_uuid,
            "db_dir": self.db_dir,
        }

    def configuration(self, name: str) -> dict[str, str] | None:
        """The ``<settings>`` params of a configuration file as the node loaded it (None: no such file)."""
        derived = {
            "switch.conf": {
                "max-sessions": str(self.configured_max_sessions),
                "sessions-per-second": str(self.sessions_per_second),
                "event-heartbeat-interval": str(max(1, round(self.heartbeat_interval))),
            },
            "event_socket.conf": {
                "listen-ip": self.host,
                "listen-port": str(self.port),
                "password": self.password,
            },
        }
        if name not in derived and name not in self.config_params:
            return None
        return {**derived.get(name, {}), **self.config_params.get(name, {})}

    def _api_xml_locate(self, rest: str, args: list[str]) -> str:
        """``xml_locate configuration configuration name NAME``: the element as ``switch_xml_toxml`` prints it."""
        if len(args) != 4:
            return "-ERR bad args\n"
        params = self.configuration(args[3]) if args[:3] == ["configuration", "configuration", "name"] else None
        if params is None:
            return "can't find anything\n"
        lines = "".join(
            f'\n    <param name="{escape(name, QUOTE)}" value="{escape(value, QUOTE)}"/>'
            for name, value in params.items()
        )
        return f'<configuration name="{escape(args[3], QUOTE)}">\n  <settings>{lines}\n  </settings>\n</configuration>'

    def _api_global_getvar(self, rest: str, args: list[str]) -> str:
        variables = self.global_variables()
        if not rest:
            return "".join(f"{name}={value}\n" for name, value in variables.items())
        return variables.get(rest, "")  # an unset variable prints nothing (switch_str_nil)

    def _api_version(self, rest: str, args: list[str]) -> str:
        return f"FreeSWITCH Version {VERSION} (git a88d069 2024-08-02 21:02:27Z 64bit)\n"

    def _api_hostname(self, rest: str, args: list[str]) -> str:
        return self.hostname

    def _api_switchname(self, rest: str, args: list[str]) -> str:
        return self.name

    def _api_echo(self, rest: str, args: list[str]) -> str:
        return rest

    def _api_fsctl(self, rest: str, args: list[str]) -> str:
        if not args:
            return "-USAGE: [api_expansion [on|off]|recover|send_sighup|hupall|pause [inbound|outbound]|...]\n"
        word = args[0].lower()
        which = args[1].lower() if len(args) > 1 else ""
        direction: Direction = "inbound" if which == "inbound" else "outbound" if which == "outbound" else "all"
        if word == "pause":
            self.pause(direction)
            return "+OK\n"
        if word == "resume":
            self.resume(direction)
            return "+OK\n"
        if word == "pause_check":
            if direction == "inbound":
                return "true" if self.paused_inbound else "false"
            if direction == "outbound":
                return "true" if self.paused_outbound else "false"
            return "true" if self.paused_inbound and self.paused_outbound else "false"
        if word == "ready_check":
            return "true" if self.ready else "false"
        if word == "max_sessions":
            if len(args) > 1:
                try:
                    self.max_sessions = int(args[1])
                except ValueError:
                    self.max_sessions = 0
            return f"+OK max sessions: {self.max_sessions}\n"
        if word == "sps":
            if len(args) > 1:
                with contextlib.suppress(ValueError):
                    self.sessions_per_second = int(args[1])
            return f"+OK sessions per second: {self.sessions_per_second}\n"
        if word == "hupall":
            self._api_hupall("", [])
            return "+OK\n"
        return f"-ERR INVALID COMMAND\nUSAGE: fsctl {args[0]}\n"

    # -- originate ------------------------------------------------------------------------------

    def _api_originate(self, rest: str, args: list[str]) -> str:
        request = parse_originate(rest)
        if isinstance(request, str):
            return request
        if request.endpoint not in ENDPOINTS:
            return "-ERR CHAN_NOT_IMPLEMENTED\n"
        if request.endpoint == "error":
            return f"-ERR {request.destination.upper()}\n"
        call = self._create_leg(request)
        if call is None:
            return f"-ERR {SESSION_REFUSED}\n"
        return self._ring(call)

    def _roll_sps(self) -> None:
        second = int(time.monotonic())
        if second != self._sps_second:
            self._sps_last = self._sps_used if second == self._sps_second + 1 else 0
            self._sps_second = second
            self._sps_used = 0

    def _create_leg(self, request: OriginateRequest) -> NodeCall | None:
        """``switch_core_session_request``: refused when paused outbound, full, over the rate, or the
        UUID is taken; else a new leg (CHANNEL_CREATE), counted for ``calls_to``."""
        self._roll_sps()
        uuid = request.variables.get("origination_uuid") or str(uuidlib.uuid4())
        if (
            self.paused_outbound
            or self._sps_used >= self.sessions_per_second
            or self.session_count + 1 > self.max_sessions
            or uuid in self._live
        ):
            return None
        self._sps_used += 1
        self.sps_peak = max(self.sps_peak, self._sps_used)
        self.sessions_since_startup += 1
        outcome = (
            self.outcomes.get(request.destination) or self.outcomes.get(request.dialstring) or self.default_outcome
        )
        call = NodeCall(
            node=self,
            uuid=uuid,
            request=request,
            outcome=outcome,
            channel=LegChannel(request, uuid, self._sequence),
        )
        self.calls.append(call)
        self._live[uuid] = call
        self._placed[request.destination] += 1
        self.session_peak = max(self.session_peak, self.session_count)
        self._fire_channel(call, "CHANNEL_CREATE")
        return call

    def _ring(self, call: NodeCall) -> str:
        """Wait for the far end, then answer and start the call's actions, or fail with the cause."""
        request, outcome = call.request, call.outcome
        ring = outcome.ring_seconds if outcome.ring_seconds is not None else self.ring_seconds
        cause = outcome.failure_cause
        if request.endpoint == "loopback" and self.paused_inbound:
            # the loopback b-leg is an inbound session: the originate waits for its timeout (cluster notes)
            cause, ring = "NO_ANSWER", request.timeout
        if cause == "NO_ANSWER":
            ring = min(ring, request.timeout) if ring else request.timeout
        deadline = time.monotonic() + ring
        while call.alive and call._pending_cause is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            call._wake.clear()
            call._wake.wait(min(remaining, 1.0))
        if not call.alive or call._pending_cause is not None:
            # hung up while ringing (uuid_kill, hupall): the originate fails with that cause
            call.finish(call._pending_cause or call.hangup_cause or "NORMAL_CLEARING")
            return f"-ERR {call.hangup_cause}\n"
        if cause is not None:
            call.finish(cause)
            return f"-ERR {cause}\n"
        call.answer()
        if request.app is not None:
            call.actions = [request.app]
        else:
            extension = request.extension or ""
            call.actions = list(self.dialplan.get(extension, [Action("hangup", "NO_ROUTE_DESTINATION")]))
        call.start()
        return f"+OK {call.uuid}\n"

    def _call_end_cause(self, call: NodeCall) -> str:
        return "NORMAL_CLEARING"

    def _call_ended(self, call: NodeCall) -> None:
        self._live.pop(call.uuid, None)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<FakeNode {self.name} {self.host}:{self.port} {state} sessions={self.session_count}>"

