"""The hand-off marker: how the async leg of a static→async hand-off is recognised as the same call.

A call that arrives on a static socket and needs an async one is handed off (``App.hand_off_to_async``):
FreeSWITCH connects a second time, to the same port, for the same channel. That second connection
already passed the door, the guards and the routing data on its first leg; counting it again would
halve the pool's calls per second and every tenant's limits for async routes.

The first leg sets ``esl_app_handoff=<stamp>.<mac>`` on the channel, where ``mac`` is an HMAC-SHA256
over the channel's UUID, the saved destination and context, and the stamp, under a secret only this
deployment knows (``handoff_secret``; by default one made at start and shared by the pool's workers).
The second leg's connect reply carries it back as ``variable_esl_app_handoff``. Nobody else can make
one: callers cannot set arbitrary channel variables (mod_sofia turns SIP ``X-``/``P-`` headers into
``sip_h_*``), and even a variable set by a dialplan, an originate string or an inherited leg fails
the MAC, which binds it to one channel, one destination and a short time (``max_age``). The second
leg clears it, so a later transfer back to esl-app is a new decision.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

MARKER = "esl_app_handoff"
MAX_AGE = 60.0  # seconds from the first leg's hand-off to the second leg's connect
_MAC_CHARS = 32  # 128 bits of the HMAC-SHA256, in hex


def new_secret() -> bytes:
    return secrets.token_bytes(32)


class HandoffSigner:
    """Makes and checks hand-off markers with one deployment's secret."""

    __slots__ = ("_key", "max_age")

    def __init__(self, secret: bytes | str | None = None, *, max_age: float = MAX_AGE) -> None:
        if secret is None:
            secret = new_secret()
        self._key = secret.encode() if isinstance(secret, str) else secret
        if len(self._key) < 16:
            raise ValueError("the hand-off secret must be at least 16 bytes")
        self.max_age = max_age

    def derive(self, purpose: str) -> bytes:
        """A key for another of this deployment's signatures (e.g. checkpoints, esl_app.recovery),
        so that one secret configures them all and no value signed for one purpose fits another."""
        return hmac.new(self._key, f"esl-app derive {purpose}".encode(), hashlib.sha256).digest()

    def _mac(self, uuid: str, destination: str, context: str, stamp: str) -> str:
        message = "\n".join((uuid, destination, context, stamp)).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_MAC_CHARS]

    def issue(self, uuid: str, destination: str, context: str, now: float | None = None) -> str:
        """The marker for handing ``uuid`` off towards ``destination`` in ``context``."""
        stamp = str(int((time.time() if now is None else now) * 1000))
        return f"{stamp}.{self._mac(uuid, destination, context, stamp)}"

    def verify(self, marker: str, uuid: str, destination: str, context: str, now: float | None = None) -> bool:
        """Whether ``marker`` was issued by this deployment for this channel and destination, recently."""
        stamp, dot, mac = marker.partition(".")
        if not dot or not stamp.isdigit() or len(stamp) > 16 or len(mac) != _MAC_CHARS:
            return False
        age = (time.time() if now is None else now) - int(stamp) / 1000
        if not -5.0 <= age <= self.max_age:  # a little clock skew between esl-app hosts is fine
            return False
        return hmac.compare_digest(mac, self._mac(uuid, destination, context, stamp))
