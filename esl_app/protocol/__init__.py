"""Sans-IO Event Socket codec: bytes to frames and frames to bytes, no sockets anywhere.

``Parser`` reads what FreeSWITCH writes; ``commands`` writes what a client sends; ``switch`` is
FreeSWITCH's own side (used by the fake peer in ``esl_app.testing``).
"""

from . import commands, expansion, switch
from .errors import ProtocolError, UnsafeCommandError
from .expansion import Expand
from .frames import Event, Frame, FrameKind, parse_json_event, parse_plain_event, parse_xml_event
from .headers import Headers
from .parser import Parser
from .urlcode import decode_value, encode_value

__all__ = [
    "Event",
    "Expand",
    "Frame",
    "FrameKind",
    "Headers",
    "Parser",
    "ProtocolError",
    "UnsafeCommandError",
    "commands",
    "decode_value",
    "encode_value",
    "expansion",
    "parse_json_event",
    "parse_plain_event",
    "parse_xml_event",
    "switch",
]
