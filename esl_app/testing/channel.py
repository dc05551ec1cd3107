"""Templates for the headers FreeSWITCH writes about one channel (spec 1.4, 2.2, 3.3).

The fake peer keeps one ``Channel`` (its state, caller profile and variables) and builds every header
list from it, in the order the 1.10.12 captures in ``fixtures/transcripts`` show:

* channel events: the common headers, the channel block (``Channel-State`` ... codecs, with
  ``Hangup-Cause`` once the call is down), the ``Caller-*`` profile, ``Other-Type``/``Other-Leg-*``
  once bridged, every ``variable_*`` (not for DTMF and CHANNEL_STATE), then the event's own headers;
* CHANNEL_DATA (the ``connect`` reply): common headers, the profile again as ``Channel-*``, the
  channel block, ``Caller-*`` and ``variable_*``;
* BACKGROUND_JOB: the common headers and the ``Job-*`` headers (no channel data).

Values here are plain text; the codec (``esl_app.protocol.switch``) URL-encodes them on the wire.
The channel looks like a SIP call on ``mod_sofia`` (the captures used ``loopback/`` channels, which
carry fewer variables), with PCMU at 8 kHz.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..protocol import expansion

Pairs = list[tuple[str, str]]

CORE_UUID = str(uuidlib.uuid4())  # one fake switch per process, like one Core-UUID per FreeSWITCH run
HOSTNAME = "fs-test"
IPV4 = "192.0.2.2"
IPV6 = "fd00::2"
CALLER_IP = "192.0.2.10"
VERSION = "1.10.12-release+git~20240802T210227Z~a88d069d6f~64bit"

# Event-Calling-File / -Function / -Line-Number, as captured from 1.10.12.
CALLING: dict[str, tuple[str, str, int]] = {
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", 2021),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1213),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2944),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2967),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3846),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value", 3431),
    "CHANNEL_PROGRESS_MEDIA": ("switch_channel.c", "switch_channel_perform_mark_pre_answered", 3560),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3445),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2408),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", 943),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1689),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1879),
    "CHANNEL_APPLICATION": ("mod_dptools.c", "event_function", 1257),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 677),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", 1572),
    "CUSTOM": ("mod_event_socket.c", "parse_command", 2275),
}

STATE_NUMBERS = {"CS_NEW": 0, "CS_INIT": 1, "CS_ROUTING": 2, "CS_EXECUTE": 4, "CS_HANGUP": 10, "CS_REPORTING": 11}

# Q.850 codes FreeSWITCH reports as variable_hangup_cause_q850 (switch_channel_cause_q850)
Q850 = {
    "UNALLOCATED_NUMBER": 1,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "CALL_REJECTED": 21,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "ORIGINATOR_CANCEL": 487,
    "MANAGER_REQUEST": 503,
}


def now_us() -> int:
    return time.time_ns() // 1000


def date_headers(timestamp_us: int) -> Pairs:
    seconds = timestamp_us / 1_000_000
    return [
        ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))),
        ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))),
        ("Event-Date-Timestamp", str(timestamp_us)),
    ]


def common_headers(name: str, sequence: int, calling: tuple[str, str, int] | None = None) -> Pairs:
    """The headers every event starts with (spec 1.4, "Common headers")."""
    file, function, line = calling or CALLING.get(name, ("switch_event.c", "switch_event_fire_detailed", 1))
    return [
        ("Event-Name", name),
        ("Core-UUID", CORE_UUID),
        ("FreeSWITCH-Hostname", HOSTNAME),
        ("FreeSWITCH-Switchname", HOSTNAME),
        ("FreeSWITCH-IPv4", IPV4),
        ("FreeSWITCH-IPv6", IPV6),
        *date_headers(now_us()),
        ("Event-Calling-File", file),
        ("Event-Calling-Function", function),
        ("Event-Calling-Line-Number", str(line)),
        ("Event-Sequence", str(sequence)),
    ]


@dataclass
class Profile:
    """A caller profile, serialized as ``Caller-*``, ``Channel-*`` (CHANNEL_DATA) or ``Other-Leg-*``."""

    unique_id: str
    channel_name: str
    caller_id_name: str
    caller_id_number: str
    destination_number: str
    context: str = "default"
    direction: str = "inbound"
    logical_direction: str = "inbound"
    username: str = ""
    dialplan: str = "XML"
    callee_id_name: str = ""
    callee_id_number: str = ""
    network_addr: str = ""
    ani: str = ""
    source: str = "mod_sofia"
    profile_index: int = 1
    created_time: int = 0
    answered_time: int = 0
    progress_time: int = 0
    progress_media_time: int = 0
    hangup_time: int = 0
    transfer_time: int = 0
    bridged_time: int = 0

    def headers(self, prefix: str) -> Pairs:
        """``switch_caller_profile_event_set_data`` order; empty values are left out, as FreeSWITCH does."""
        fields = [
            ("Direction", self.direction),
            ("Logical-Direction", self.logical_direction),
            ("Username", self.username),
            ("Dialplan", self.dialplan),
            ("Caller-ID-Name", self.caller_id_name),
            ("Caller-ID-Number", self.caller_id_number),
            ("Orig-Caller-ID-Name", self.caller_id_name),
            ("Orig-Caller-ID-Number", self.caller_id_number),
            ("Callee-ID-Name", self.callee_id_name),
            ("Callee-ID-Number", self.callee_id_number),
            ("Network-Addr", self.network_addr),
            ("ANI", self.ani),
            ("Destination-Number", self.destination_number),
            ("Unique-ID", self.unique_id),
            ("Source", self.source),
            ("Context", self.context),
            ("Channel-Name", self.channel_name),
            ("Profile-Index", str(self.profile_index)),
            ("Profile-Created-Time", str(self.created_time)),
            ("Channel-Created-Time", str(self.created_time)),
            ("Channel-Answered-Time", str(self.answered_time)),
            ("Channel-Progress-Time", str(self.progress_time)),
            ("Channel-Progress-Media-Time", str(self.progress_media_time)),
            ("Channel-Hangup-Time", str(self.hangup_time)),
            ("Channel-Transfer-Time", str(self.transfer_time)),
            ("Channel-Resurrect-Time", "0"),
            ("Channel-Bridged-Time", str(self.bridged_time)),
            ("Channel-Last-Hold", "0"),
            ("Channel-Hold-Accum", "0"),
            ("Screen-Bit", "true"),
            ("Privacy-Hide-Name", "false"),
            ("Privacy-Hide-Number", "false"),
        ]
        return [(f"{prefix}-{name}", value) for name, value in fields if value != ""]

    def field(self, name: str) -> str | None:
        """``switch_caller_get_field_by_name``: what ``${caller_id_number}`` & co. resolve to."""
        fields = {
            "dialplan": self.dialplan,
            "username": self.username,
            "caller_id_name": self.caller_id_name,
            "caller_id_number": self.caller_id_number,
            "orig_caller_id_name": self.caller_id_name,
            "orig_caller_id_number": self.caller_id_number,
            "callee_id_name": self.callee_id_name,
            "callee_id_number": self.callee_id_number,
            "ani": self.ani,
            "network_addr": self.network_addr,
            "destination_number": self.destination_number,
            "uuid": self.unique_id,
            "source": self.source,
            "context": self.context,
            "chan_name": self.channel_name,
            "profile_index": str(self.profile_index),
        }
        value = fields.get(name.lower())
        return value or None


def socket_application_data(mode: str, full: bool, host: str = "127.0.0.1", port: int = 8084) -> str:
    """The argument of the dialplan's ``socket`` application for this script."""
    words = [f"{host}:{port}"]
    if mode == "async":
        words.append("async")
    if full:
        words.append("full")
    return " ".join(words)


class Channel:
    """State of the simulated channel and the header templates built from it."""

    def __init__(
        self,
        *,
        unique_id: str,
        caller_id_name: str,
        caller_id_number: str,
        destination: str,
        context: str,
        variables: dict[str, str] | None = None,
        socket_data: str = "127.0.0.1:8084 async full",
        first_sequence: int = 400,
    ) -> None:
        created = now_us()
        self.uuid = unique_id
        self.name = f"sofia/internal/{caller_id_number}@{IPV4}"
        self.profile = Profile(
            unique_id=unique_id,
            channel_name=self.name,
            caller_id_name=caller_id_name,
            caller_id_number=caller_id_number,
            destination_number=destination,
            context=context,
            username=caller_id_number,
            network_addr=CALLER_IP,
            ani=caller_id_number,
            created_time=created,
        )
        self.other_leg: Profile | None = None
        self.running_state = "CS_EXECUTE"
        self.state_number = STATE_NUMBERS["CS_EXECUTE"]
        self.call_state = "RINGING"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.read_codec = ("PCMU", "8000", "64000")
        self.write_codec = ("PCMU", "8000", "64000")
        self.socket_data = socket_data
        self._sequence = first_sequence
        # what ${func(args)} runs; None: api-expansion off (FreeSWITCH inserts a refusal text)
        self.api_runner: Callable[[str, str], str | None] | None = None
        # an application's %[name=value,...] variables while it runs (switch_channel_set_scope_variables)
        self.scopes: list[dict[str, str]] = []
        self.variables: dict[str, str] = {
            "direction": "inbound",
            "uuid": unique_id,
            "session_id": "1",
            "sip_from_user": caller_id_number,
            "sip_from_host": CALLER_IP,
            "sip_to_user": destination,
            "sip_req_user": destination,
            "sip_network_ip": CALLER_IP,
            "sip_network_port": "5060",
            "channel_name": self.name,
            "read_codec": "PCMU",
            "read_rate": "8000",
            "write_codec": "PCMU",
            "write_rate": "8000",
            "call_uuid": unique_id,
        }
        for name, value in (variables or {}).items():
            self.set_var(name, value)
        self.set_var("current_application_data", socket_data)
        self.set_var("current_application", "socket")
        self.set_var("socket_host", "127.0.0.1")

    # -- variables -------------------------------------------------------------------------

    def set_var(self, name: str, value: str | None) -> None:
        """Set a channel variable; an empty value deletes it (FreeSWITCH never keeps empty values)."""
        if value is None or value == "":
            self.variables.pop(name, None)
        else:
            self.variables[name] = str(value)

    def get_var(self, name: str) -> str | None:
        """``switch_channel_get_variable``: a running application's scoped variable, the channel
        variable, else the caller profile field of that name."""
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        value = self.variables.get(name)
        if value is not None:
            return value
        return self.profile.field(name)

    def expand(self, text: str) -> str:
        """``switch_channel_expand_variables``: ``${var}`` (unset: empty), ``\\$``/``\\\\`` escapes,
        values expanded in turn, and ``${api(args)}`` handed to ``api_runner`` (the fake's API, which
        records it: a real switch would have run it)."""
        return expansion.expand(text, self.get_var, self.api_runner)

    # -- sequence --------------------------------------------------------------------------

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    # -- header templates ------------------------------------------------------------------

    def block(self) -> Pairs:
        """The channel block of ``switch_channel_event_set_basic_data``."""
        pairs: Pairs = [
            ("Channel-State", self.running_state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(self.state_number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", "inbound"),
            ("Presence-Call-Direction", "inbound"),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause:
            pairs.append(("Hangup-Cause", self.hangup_cause))
        name, rate, bits = self.read_codec
        pairs += [
            ("Channel-Read-Codec-Name", name),
            ("Channel-Read-Codec-Rate", rate),
            ("Channel-Read-Codec-Bit-Rate", bits),
        ]
        name, rate, bits = self.write_codec
        pairs += [
            ("Channel-Write-Codec-Name", name),
            ("Channel-Write-Codec-Rate", rate),
            ("Channel-Write-Codec-Bit-Rate", bits),
        ]
        return pairs

    def variable_headers(self) -> Pairs:
        return [(f"variable_{name}", value) for name, value in self.variables.items()]

    def other_leg_headers(self) -> Pairs:
        if self.other_leg is None:
            return []
        return [("Other-Type", "originatee"), *self.other_leg.headers("Other-Leg")]

    def event(
        self,
        name: str,
        *,
        with_variables: bool = True,
        first: Iterable[tuple[str, str]] = (),
        extra: Iterable[tuple[str, str]] = (),
    ) -> Pairs:
        """A channel event: common headers, ``first`` (e.g. Bridge-A-Unique-ID), the channel block,
        ``Caller-*``, ``Other-Leg-*``, ``variable_*`` unless ``with_variables`` is false (DTMF,
        CHANNEL_STATE), then ``extra`` (Application*, DTMF-*...)."""
        pairs = common_headers(name, self.next_sequence())
        pairs += list(first)
        pairs += self.block()
        pairs += self.profile.headers("Caller")
        pairs += self.other_leg_headers()
        if with_variables:
            pairs += self.variable_headers()
        pairs += list(extra)
        return pairs

    def channel_data(self) -> Pairs:
        """The CHANNEL_DATA event that makes up the ``connect`` reply (spec 2.2, E1)."""
        pairs = common_headers("CHANNEL_DATA", self.next_sequence())
        pairs += self.profile.headers("Channel")
        pairs += self.block()
        pairs += self.profile.headers("Caller")
        pairs += self.other_leg_headers()
        pairs += self.variable_headers()
        return pairs

    def dump(self) -> Pairs:
        """What ``uuid_dump`` shows: CHANNEL_DATA without the ``Channel-*`` profile copy."""
        pairs = common_headers("CHANNEL_DATA", self.next_sequence(), ("mod_commands.c", "uuid_dump_function", 6468))
        pairs += self.block()
        pairs += self.profile.headers("Caller")
        pairs += self.other_leg_headers()
        pairs += self.variable_headers()
        return pairs

    def background_job(self, job_uuid: str, command: str, arg: str, owner: str | None) -> Pairs:
        pairs = common_headers("BACKGROUND_JOB", self.next_sequence())
        pairs.append(("Job-UUID", job_uuid))
        if owner:
            pairs.append(("Job-Owner-UUID", owner))
        pairs.append(("Job-Command", command))
        if arg:
            pairs.append(("Job-Command-Arg", arg))
        return pairs

    # -- state changes ---------------------------------------------------------------------

    def mark_answered(self) -> None:
        self.answer_state = "answered"
        self.profile.answered_time = now_us()
        self.set_var("endpoint_disposition", "ANSWER")

    def mark_pre_answered(self) -> None:
        self.answer_state = "early"
        self.profile.progress_media_time = now_us()
        self.set_var("endpoint_disposition", "EARLY MEDIA")

    def mark_ring_ready(self) -> None:
        self.profile.progress_time = now_us()

    def mark_hangup(self, cause: str) -> None:
        self.hangup_cause = cause
        self.answer_state = "hangup"
        self.state_number = STATE_NUMBERS["CS_HANGUP"]
        self.profile.hangup_time = now_us()

    def set_running_state(self, state: str) -> None:
        self.running_state = state
        self.state_number = STATE_NUMBERS.get(state, self.state_number)
        if state == "CS_REPORTING":
            self.call_state = "HANGUP"

    def cdr_variables(self, last_app: str | None, last_arg: str | None) -> None:
        """The variables ``switch_channel_set_timestamps`` adds before CHANNEL_HANGUP_COMPLETE."""
        p = self.profile
        end = p.hangup_time or now_us()
        start = p.created_time
        answered = p.answered_time

        def stamp(us: int) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1_000_000))

        cause = self.hangup_cause or "NORMAL_CLEARING"
        values = {
            "hangup_cause": cause,
            "hangup_cause_q850": str(Q850.get(cause, 0)),
            "digits_dialed": "none",
            "start_stamp": stamp(start),
            "profile_start_stamp": stamp(start),
            "answer_stamp": stamp(answered) if answered else "",
            "end_stamp": stamp(end),
            "start_epoch": str(start // 1_000_000),
            "start_uepoch": str(start),
            "answer_epoch": str(answered // 1_000_000),
            "answer_uepoch": str(answered),
            "bridge_epoch": str(p.bridged_time // 1_000_000),
            "bridge_uepoch": str(p.bridged_time),
            "progress_media_epoch": str(p.progress_media_time // 1_000_000),
            "progress_media_uepoch": str(p.progress_media_time),
            "end_epoch": str(end // 1_000_000),
            "end_uepoch": str(end),
            "last_app": last_app or "",
            "last_arg": last_arg or "",
            "caller_id": f'"{p.caller_id_name}" <{p.caller_id_number}>',
            "duration": str((end - start) // 1_000_000),
            "billsec": str((end - answered) // 1_000_000 if answered else 0),
            "answersec": str((answered - start) // 1_000_000 if answered else 0),
            "waitsec": str((answered - start) // 1_000_000 if answered else 0),
            "mduration": str((end - start) // 1000),
            "billmsec": str((end - answered) // 1000 if answered else 0),
            "answermsec": str((answered - start) // 1000 if answered else 0),
            "waitmsec": str((answered - start) // 1000 if answered else 0),
            "uduration": str(end - start),
            "billusec": str(end - answered if answered else 0),
        }
        for name, value in values.items():
            self.set_var(name, value)


def scoped_variables(arg: str) -> tuple[dict[str, str], str] | None:
    """An expanded application argument that starts ``%[a=1,b=2]`` (or ``%<d>[...]`` with another
    delimiter): its scoped variables and the rest (switch_core_session_exec with
    switch_event_create_brackets); None when it does not start so."""
    if not arg.startswith("%") or "[" not in arg[1:3]:
        return None
    delim = ","
    text = arg[1:]
    if text[0] != "[":
        delim, text = text[0], text[1:]
    depth, end = 0, -1
    for index, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if depth == 0:
            end = index
            break
    if end < 0:
        return None
    variables = {}
    for item in expansion.separate_string(text[1:end], delim):
        name, equals, value = item.partition("=")
        if equals and name:
            variables[name] = value
    return variables, text[end + 1 :]


def split_arguments(text: str, limit: int = 1024) -> list[str]:
    """``switch_separate_string`` on spaces: single-quote grouping, escapes resolved, quotes removed."""
    return expansion.separate_string(text, " ", limit)
