"""The bytes FreeSWITCH 1.10.12 writes for one outbound-socket call, at the size of a real SIP call.

The test kit's ``Channel`` (``esl_app.testing.channel``) builds the header lists in the order of the
captures; here it is given the ~165 variables a real ``mod_sofia`` call carries (SIP headers, SDP,
RTP and codec negotiation), so the ``connect`` reply is ~10 kB and every event that carries the
channel block and ``variable_*`` is about as large. Frames are rendered ONCE per process with
placeholder UUIDs and copied per call with ``bytes.replace`` (same length, so every
``Content-Length`` stays right), which keeps the generator cheap enough never to be the bottleneck.

The sequence is the one the fake peer plays (``esl_app.testing.peer``) for an async ``full`` socket:
``connect`` reply; ``+OK Events Enabled`` then CHANNEL_PARK; an execute gets ``+OK``, CHANNEL_EXECUTE
(+ CHANNEL_ANSWER for answer), CHANNEL_EXECUTE_COMPLETE; a hangup gets CHANNEL_HANGUP,
CHANNEL_UNPARK, the ``socket`` application's own COMPLETE, CHANNEL_STATE CS_HANGUP and CS_REPORTING,
CHANNEL_HANGUP_COMPLETE, then the linger notice (or the final notice and close without linger).
"""

from __future__ import annotations

import uuid as uuidlib

from ..protocol import switch
from ..testing.channel import Channel, socket_application_data

# placeholders: 36 characters, like the uuid4 strings that replace them
CHANNEL_UUID = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
APP_UUID = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
CHANNEL_UUID_B = CHANNEL_UUID.encode()
APP_UUID_B = APP_UUID.encode()

_SDP = (
    "v=0\r\no=FreeSWITCH 1732000000 1732000001 IN IP4 192.0.2.10\r\ns=FreeSWITCH\r\nc=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\nm=audio 24680 RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    "a=sendrecv\r\na=rtcp:24681 IN IP4 192.0.2.10\r\n"
)


def sip_variables(caller: str = "1001", destination: str = "1000") -> dict[str, str]:
    """~150 channel variables as a SIP call on mod_sofia carries them (names and shapes of a real one)."""
    host = "192.0.2.2"
    peer = "192.0.2.10"
    call_id = "a84b4c76e66710@pc33.example.com"
    tag = "1928301774"
    v: dict[str, str] = {
        "dialed_extension": destination,
        "export_vars": "dialed_extension",
        "outside_call": "true",
        "call_direction": "inbound",
        "sip_local_network_addr": host,
        "sip_reply_host": peer,
        "sip_reply_port": "5060",
        "sip_received_ip": peer,
        "sip_received_port": "5060",
        "sip_via_protocol": "udp",
        "sip_authorized": "true",
        "sip_acl_authed_by": "domains",
        "sip_from_uri": f"{caller}@{host}",
        "sip_from_display": "Test Caller",
        "sip_from_port": "5060",
        "sip_from_tag": tag,
        "sip_from_user_stripped": caller,
        "sofia_profile_name": "internal",
        "sofia_profile_url": f"sip:mod_sofia@{host}:5060",
        "recovery_profile_name": "internal",
        "sip_invite_record_route": f"<sip:{peer};lr>",
        "sip_req_params": "transport=udp",
        "sip_req_port": "5060",
        "sip_req_uri": f"{destination}@{host}:5060",
        "sip_req_host": host,
        "sip_to_params": "transport=udp",
        "sip_to_uri": f"{destination}@{host}:5060",
        "sip_to_host": host,
        "sip_to_port": "5060",
        "sip_contact_params": "transport=udp;registering_acc=192_0_2_2",
        "sip_contact_user": caller,
        "sip_contact_port": "5060",
        "sip_contact_uri": f"{caller}@{peer}:5060",
        "sip_contact_host": peer,
        "sip_via_host": peer,
        "sip_via_port": "5060",
        "sip_via_rport": "5060",
        "switch_r_sdp": _SDP,
        "rtp_remote_audio_rtcp_port": "24681",
        "rtp_audio_recv_pt": "0",
        "rtp_use_codec_name": "PCMU",
        "rtp_use_codec_rate": "8000",
        "rtp_use_codec_ptime": "20",
        "rtp_use_codec_channels": "1",
        "rtp_last_audio_codec_string": "PCMU@8000h@20i@1c",
        "original_read_codec": "PCMU",
        "original_read_rate": "8000",
        "write_codec_name": "PCMU",
        "read_codec_name": "PCMU",
        "local_media_ip": host,
        "local_media_port": "16384",
        "advertised_media_ip": host,
        "rtp_use_pt": "0",
        "rtp_use_ssrc": "1470961447",
        "rtp_2833_send_payload": "101",
        "rtp_2833_recv_payload": "101",
        "remote_media_ip": peer,
        "remote_media_port": "24680",
        "rtp_local_sdp_str": _SDP.replace(peer, host),
        "endpoint_disposition": "RECEIVED",
        "sip_call_id": call_id,
        "sip_user_agent": "Yealink SIP-T46S 66.86.0.15",
        "sip_allow": "INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, UPDATE",
        "sip_accept": "application/sdp, message/sipfrag, application/dtmf-relay",
        "sip_supported": "replaces, 100rel, timer",
        "sip_session_expires": "1800",
        "sip_min_se": "90",
        "sip_cseq": "102",
        "sip_P-Asserted-Identity": f'"Test Caller" <sip:{caller}@{host}>',
        "sip_h_X-Customer-Id": "48213",
        "sip_h_X-Trunk": "carrier-a",
        "sip_h_X-Account": "acme-east",
        "sip_full_via": f"SIP/2.0/UDP {peer}:5060;branch=z9hG4bK776asdhds;rport=5060",
        "sip_full_from": f'"Test Caller" <sip:{caller}@{host}>;tag={tag}',
        "sip_full_to": f"<sip:{destination}@{host}:5060;transport=udp>",
        "max_forwards": "69",
        "presence_id": f"{caller}@{host}",
        "switch_m_sdp": _SDP,
        "ep_codec_string": "mod_spandsp.G722@8000h@20i@64000b,CORE_PCM_MODULE.PCMU@8000h@20i@64000b",
        "DP_MATCH": f"ARRAY::{destination}|:{destination}",
        "call_timeout": "30",
        "domain_name": host,
        "user_name": caller,
        "effective_caller_id_name": "Extension " + caller,
        "effective_caller_id_number": caller,
        "outbound_caller_id_name": "FreeSWITCH",
        "outbound_caller_id_number": "0000000000",
        "callgroup": "techsupport",
        "user_context": "default",
        "accountcode": caller,
        "toll_allow": "domestic,international,local",
        "record_stereo": "true",
        "default_gateway": "example.com",
        "default_areacode": "918",
        "transfer_fallback_extension": "operator",
        "hold_music": "local_stream://moh",
        "default_language": "en",
        "sound_prefix": "/usr/share/freeswitch/sounds/en/us/callie",
        "current_application_response": "_none_",
        "RFC2822_DATE": "Thu, 26 Nov 2026 05:14:37 +0000",
        "session_in_hangup_hook": "true",
        "api_hangup_hook": "",
        "sip_nat_detected": "false",
        "sip_network_port": "5060",
        "sip_history_info": f"<sip:{destination}@{host}>;index=1",
        "sip_from_comment": "",
        "rtp_has_crypto": "false",
        "media_webrtc": "false",
        "rtp_secure_media": "optional",
        "zrtp_secure_media_confirmed_audio": "false",
        "zrtp_sas1_string_audio": "",
        "verto_dvar": "",
        "jitterbuffer_msec": "2p:25p:",
        "rtp_jitter_buffer_plc": "true",
        "rtp_timer_name": "soft",
        "rtp_manual_rtp_bugs": "",
        "suppress_cng": "true",
        "bypass_media": "false",
        "proxy_media": "false",
        "ignore_early_media": "false",
        "continue_on_fail": "",
        "originate_timeout": "60",
        "hangup_after_bridge": "",
        "park_after_bridge": "false",
        "inherit_codec": "true",
        "absolute_codec_string": "PCMU,PCMA",
        "codec_string": "PCMU,PCMA,G722",
        "media_mix_inbound_outbound_codecs": "true",
        "ringback": "%(2000,4000,440,480)",
        "transfer_ringback": "local_stream://moh",
        "instant_ringback": "false",
        "sip_cid_type": "pid",
        "sip_copy_custom_headers": "true",
        "sip_auto_answer": "false",
        "sip_ignore_reinvites": "false",
        "sip_enable_soa": "true",
        "sip_from_user_uri": f"sip:{caller}@{host}",
        "billing_account": "acme-east",
        "routing_hint": "ivr-main",
        "tenant_id": "acme",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "lcr_carrier": "carrier-a",
        "lcr_rate": "0.0042",
        "fax_enable_t38": "false",
        "execute_on_answer": "",
        "api_on_answer": "",
        "nibble_account": "",
        "sip_rh_X-Trace": "4bf92f3577b34da6a3ce929d0e0e4736",
        "sip_i_X-Source": "kamailio-1",
        "recording_follow_transfer": "true",
        "playback_terminators": "#",
        "read_terminator_used": "",
        "digits_dialed": "none",
        "dtmf_type": "rfc2833",
        "rtp_negotiate_near_match": "true",
        "sip_outgoing_contact_uri": f"<sip:mod_sofia@{host}:5060>",
        "sip_recover_contact": f"<sip:{caller}@{peer}:5060>",
        "sip_recover_via": f"SIP/2.0/UDP {peer}:5060;rport=5060;branch=z9hG4bK776asdhds",
        "sip_invite_req_uri": f"sip:{destination}@{host}:5060",
        "sip_invite_failure_status": "",
        "sip_term_status": "",
        "sip_term_cause": "",
    }
    return {name: value for name, value in v.items() if value != ""}


class CallTemplates:
    """Every frame of one call, rendered once with placeholder UUIDs; ``render`` copies one per call.

    The variables and channel states move with the call as on a real switch (answered after
    ``answer``, ``current_application`` of the last execute, CDR variables at hangup), but only the
    UUIDs change between calls, so one template per (event, application) serves every call.
    """

    def __init__(
        self,
        *,
        destination: str = "1000",
        caller_id_number: str = "1001",
        variables: dict[str, str] | None = None,
        linger_time: int = -1,
    ) -> None:
        self.destination = destination
        self.caller_id_number = caller_id_number
        self.variables = sip_variables(caller_id_number, destination) if variables is None else variables
        self._cache: dict[tuple[str, ...], bytes] = {}
        self.linger_time = linger_time
        base = self._channel()
        self.channel_name = base.name
        self.connect_reply = switch.connect_reply(base.channel_data(), mode="async", full=True)
        self.connect_headers = len(base.channel_data()) + 4

    def _channel(self, *, answered: bool = False, app: tuple[str, str] | None = None) -> Channel:
        channel = Channel(
            unique_id=CHANNEL_UUID,
            caller_id_name="Test Caller",
            caller_id_number=self.caller_id_number,
            destination=self.destination,
            context="default",
            variables=self.variables,
            socket_data=socket_application_data("async", True),
        )
        if answered:
            channel.mark_answered()
            channel.call_state = "ACTIVE"
        if app is not None:
            channel.set_var("current_application", app[0])
            channel.set_var("current_application_data", app[1])
        return channel

    def _event(self, key: tuple[str, ...], build) -> bytes:  # type: ignore[no-untyped-def]
        data = self._cache.get(key)
        if data is None:
            data = self._cache[key] = switch.event_plain(build())
        return data

    # -- the frames, with placeholders -------------------------------------------------------
    def park(self) -> bytes:
        return self._event(("park",), lambda: self._channel().event("CHANNEL_PARK"))

    def execute(self, app: str, arg: str, answered: bool) -> tuple[bytes, bytes]:
        """CHANNEL_EXECUTE and CHANNEL_EXECUTE_COMPLETE of one application (``APP_UUID`` inside)."""
        app = app.lower()
        flag = "1" if answered else "0"
        response = "FILE PLAYED" if app == "playback" else "_none_"
        after_answer = answered or app == "answer"
        app_headers = [("Application", app)] + ([("Application-Data", arg)] if arg else [])
        uuid_header = [("Application-UUID", APP_UUID)]
        start = self._event(
            ("exec", app, arg, flag),
            lambda: self._channel(answered=answered, app=(app, arg)).event(
                "CHANNEL_EXECUTE", extra=[*app_headers, *uuid_header]
            ),
        )
        done = self._event(
            ("done", app, arg, flag),
            lambda: self._channel(answered=after_answer, app=(app, arg)).event(
                "CHANNEL_EXECUTE_COMPLETE", extra=[*app_headers, ("Application-Response", response), *uuid_header]
            ),
        )
        return start, done

    def answer_event(self) -> bytes:
        return self._event(("answer",), lambda: self._channel(answered=True).event("CHANNEL_ANSWER"))

    def hangup_sequence(self, cause: str, answered: bool, nixed: frozenset[str] = frozenset()) -> bytes:
        """CHANNEL_HANGUP ... CHANNEL_HANGUP_COMPLETE, back to back (spec 2.6, async, answered), less
        the event names the socket nixed."""
        key = ("hangup", cause, "1" if answered else "0", *sorted(nixed))
        data = self._cache.get(key)
        if data is None:
            named = self._hangup_events(cause, answered)
            data = self._cache[key] = b"".join(frame for name, frame in named if name not in nixed)
        return data

    def _hangup_events(self, cause: str, answered: bool) -> list[tuple[str, bytes]]:
        ch = self._channel(answered=answered, app=("playback", "ivr/ivr-welcome.wav"))
        ch.mark_hangup(cause)
        frames = [switch.event_plain(ch.event("CHANNEL_HANGUP"))]
        frames.append(switch.event_plain(ch.event("CHANNEL_UNPARK")))
        frames.append(
            switch.event_plain(
                ch.event(
                    "CHANNEL_EXECUTE_COMPLETE",
                    extra=[
                        ("Application", "socket"),
                        ("Application-Data", ch.socket_data),
                        ("Application-Response", "FILE PLAYED" if answered else "_none_"),
                        ("Application-UUID", str(uuidlib.UUID(int=1))),
                    ],
                )
            )
        )
        ch.set_running_state("CS_HANGUP")
        frames.append(switch.event_plain(ch.event("CHANNEL_STATE", with_variables=False)))
        ch.set_running_state("CS_REPORTING")
        frames.append(switch.event_plain(ch.event("CHANNEL_STATE", with_variables=False)))
        ch.cdr_variables("playback", "ivr/ivr-welcome.wav")
        frames.append(switch.event_plain(ch.event("CHANNEL_HANGUP_COMPLETE", first=[("Hangup-Cause", cause)])))
        names = ["CHANNEL_HANGUP", "CHANNEL_UNPARK", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_STATE", "CHANNEL_STATE",
                 "CHANNEL_HANGUP_COMPLETE"]  # fmt: skip
        return list(zip(names, frames, strict=True))

    def linger_notice(self) -> bytes:
        return switch.linger_notice(CHANNEL_UUID, self.channel_name, self.linger_time)

    def final_notice(self) -> bytes:
        return switch.final_notice(CHANNEL_UUID)

    # -- per call ------------------------------------------------------------------------------
    @staticmethod
    def render(template: bytes, channel_uuid: bytes, app_uuid: bytes | None = None) -> bytes:
        """The template with this call's UUIDs (``Content-Length`` recomputed if a length differs)."""
        data = template.replace(CHANNEL_UUID_B, channel_uuid)
        if app_uuid is not None:
            if len(app_uuid) == len(APP_UUID_B):
                data = data.replace(APP_UUID_B, app_uuid)
            else:
                data = _relength(data.replace(APP_UUID_B, app_uuid))
        return data


def _relength(frame: bytes) -> bytes:
    """Rewrite the envelope ``Content-Length`` of one event-plain frame after its payload changed."""
    end = frame.index(b"\n\n") + 2
    payload = frame[end:]
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload


def replies() -> dict[str, bytes]:
    """The replies of the commands a call uses, as FreeSWITCH writes them (spec 1.2)."""
    return {
        "ok": switch.reply("+OK"),
        "myevents": switch.reply("+OK Events Enabled"),
        "myevents_again": switch.reply("-ERR aready enabled."),
        "linger": switch.reply("+OK will linger"),
        "nolinger": switch.reply("+OK will not linger"),
        "bye": switch.reply("+OK bye"),
        "event": switch.reply("+OK event listener enabled plain"),
        "nixed": switch.reply("+OK events nixed"),
        "no_keywords": switch.reply("-ERR no keywords supplied"),
        "not_found": switch.reply("-ERR command not found"),
    }
