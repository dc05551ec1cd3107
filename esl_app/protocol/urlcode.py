"""FreeSWITCH's URL encoding of event header values (``switch_url_encode_opt``), both directions.

Decoding is per value, after the block was split into lines: ``%XX`` of either case becomes that
byte, anything else is literal, ``+`` stays ``+``, and the bytes are decoded as UTF-8 losslessly
(SIP text can be invalid UTF-8). Encoding copies an existing upper-case ``%XX`` unchanged, exactly
like FreeSWITCH, which makes the scheme irreversible for such values (spec 1.5).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_UNSAFE = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
_HEX_UPPER = frozenset(b"0123456789ABCDEF")
# fast path: a value made only of safe printable ASCII is sent as it is
_NEEDS_ENCODING = re.compile(r'[^\x20-\x7e]|[ #%&+:;<=>?@\[\\\]^`{|}"]')


def decode_value(raw: str | bytes) -> str:
    """Percent-decode one header value into text (``surrogateescape`` keeps invalid bytes)."""
    if isinstance(raw, str):
        if "%" not in raw:
            return raw
        raw = raw.encode("utf-8", "surrogateescape")
    elif b"%" not in raw:
        return raw.decode("utf-8", "surrogateescape")
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def encode_value(value: str | bytes) -> str:
    """Encode a value the way FreeSWITCH serializes event headers (upper-case hex)."""
    if isinstance(value, str):
        if not _NEEDS_ENCODING.search(value):
            return value
        data = value.encode("utf-8", "surrogateescape")
    else:
        data = value
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte == 0x25 and i + 2 < n and data[i + 1] in _HEX_UPPER and data[i + 2] in _HEX_UPPER:
            out.append(data[i : i + 3].decode("ascii"))
            i += 3
            continue
        if byte < 0x20 or byte > 0x7E or byte in _UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
        i += 1
    return "".join(out)
