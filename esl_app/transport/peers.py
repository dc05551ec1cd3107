"""Who may connect: the FreeSWITCH addresses and networks an outbound server accepts calls from.

The outbound socket hands a call's control to whoever answers on the port, so the server only talks
to the switches it was told about, as FreeSWITCH's own ``apply-inbound-acl`` does for its event
socket. ``PeerFilter`` is compiled once from the settings (``allow_from``: addresses and CIDR
networks, IPv4 and IPv6, or ``any``); ``allows(host)`` runs in the accept callback for every
connection, so it is a set lookup for a peer seen before and a few integer masks otherwise.

The default is the loopback networks only (``127.0.0.0/8`` and ``::1``): a server that listens on a
public address accepts nobody until it is told which switches may call it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1")
ANY = "any"
_CACHE_LIMIT = 4096  # verdicts remembered per peer address (a scan of many addresses just recomputes)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerListError(ValueError):
    """An allow-list entry that is not an address, a network or ``any``."""


def parse_entry(entry: str) -> Network | None:
    """One allow-list entry as a network (None for ``any``); a clear ``PeerListError`` otherwise."""
    text = entry.strip()
    if text.lower() == ANY:
        return None
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise PeerListError(f"{entry!r} has host bits set: did you mean {loose}?") from None
        raise PeerListError(f"{entry!r} is not an IP address, a CIDR network or 'any'") from None


def split_entries(value: object) -> object:
    """Accept ``"10.0.0.5, 10.0.1.0/24"`` and ``'["10.0.0.5"]'`` (environment, CLI) as well as a list."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise PeerListError(f"{value!r} is not a JSON list of addresses") from None
        return [part for part in value.replace(",", " ").split() if part]
    return value


def check_entries(entries: list[str]) -> list[str]:
    """Validate every entry (settings validator); the list is kept as written."""
    if not entries:
        raise PeerListError("the allow-list is empty, so every call would be refused: give addresses or 'any'")
    for entry in entries:
        parse_entry(entry)
    return entries


class PeerFilter:
    """``allows(host)``: whether a peer address (as ``accept()`` gives it) is on the list."""

    __slots__ = ("_cache", "_v4", "_v6", "entries")

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(entries)
        self._v4: list[tuple[int, int]] = []  # (network, mask) as integers
        self._v6: list[tuple[int, int]] = []
        self._cache: dict[str, bool] = {}
        for entry in self.entries:
            network = parse_entry(entry)
            if network is None:
                raise PeerListError("'any' allows every peer: use no filter instead (PeerFilter.build)")
            target = self._v4 if network.version == 4 else self._v6
            target.append((int(network.network_address), int(network.netmask)))

    @classmethod
    def build(cls, entries: Iterable[str] | None) -> PeerFilter | None:
        """The filter for ``entries``, or None when they allow anybody (no check on the accept path)."""
        entries = list(entries or ())
        if not entries or any(parse_entry(entry) is None for entry in entries):
            return None
        return cls(entries)

    def allows(self, host: str) -> bool:
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._check(host)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[host] = verdict
        return verdict

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone ("fe80::1%eth0")
        except ValueError:
            return False
        if address.version == 6:
            mapped = address.ipv4_mapped  # an IPv4 peer of a dual-stack ("::") listener
            if mapped is not None:
                address = mapped
        value = int(address)
        networks = self._v4 if address.version == 4 else self._v6
        return any(value & mask == network for network, mask in networks)

    def describe(self) -> str:
        return ", ".join(self.entries)

    def only_loopback(self) -> bool:
        return all(parse_entry(entry).is_loopback for entry in self.entries)  # type: ignore[union-attr]
