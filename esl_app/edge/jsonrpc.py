"""JSON-RPC 2.0 over HTTP to Kamailio's jsonrpcs module (served by xhttp), cooperative under gevent.

esl-app does not monkey-patch, so ``http.client`` gets a gevent socket: an RPC never blocks the hub
(the cluster's connections and probes keep running while Kamailio answers).
"""

from __future__ import annotations

import http.client
import itertools
import json
from typing import Any
from urllib.parse import urlsplit

import gevent.socket


class KamailioRPCError(Exception):
    """Kamailio could not be reached, or answered with an error (its code and message are kept)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _GeventHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = gevent.socket.create_connection((self.host, self.port), self.timeout)


class KamailioRPC:
    def __init__(self, url: str = "http://127.0.0.1:5071/RPC", timeout: float = 0.5) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Kamailio RPC URL must be http://host:port/path, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/RPC"
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        """``method(params...)``'s result; ``KamailioRPCError`` on any failure."""
        request = {"jsonrpc": "2.0", "method": method, "id": next(self._ids)}
        if params:
            request["params"] = list(params)
        body = json.dumps(request).encode()
        # xhttp closes after each reply (set_reply_close in kamailio.cfg): one connection per call
        connection = _GeventHTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            with gevent.Timeout(self.timeout, KamailioRPCError(f"{method}: no answer within {self.timeout:g} s")):
                connection.request("POST", self.path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                text = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise KamailioRPCError(f"{method}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        if response.status != 200:
            raise KamailioRPCError(f"{method}: HTTP {response.status} {response.reason}", response.status)
        try:
            answer = json.loads(text)
        except ValueError as exc:
            raise KamailioRPCError(f"{method}: not JSON: {text[:200]!r}") from exc
        if "error" in answer:
            error = answer["error"] or {}
            raise KamailioRPCError(f"{method}: {error.get('message')}", error.get("code"))
        return answer.get("result")

    def set_state(self, state: str, group: int, address: str) -> None:
        """``dispatcher.set_state``: ``a``/``i``/``t``/``d``, optionally followed by ``p`` (probing)."""
        self.call("dispatcher.set_state", state, group, address)

    def reload(self) -> None:
        self.call("dispatcher.reload")

    def destinations(self) -> dict[tuple[int, str], dict[str, Any]]:
        """``dispatcher.list`` as ``{(set, uri): {"flags": "AP", "rweight": 50, ...}}``."""
        result = self.call("dispatcher.list") or {}
        found: dict[tuple[int, str], dict[str, Any]] = {}
        for record in result.get("RECORDS", []):
            group = record["SET"]
            for target in group.get("TARGETS", []):
                dest = target["DEST"]
                attrs = dest.get("ATTRS") or {}
                found[(group["ID"], dest["URI"])] = {
                    "flags": dest.get("FLAGS", ""),
                    "rweight": attrs.get("RWEIGHT"),
                    "body": attrs.get("BODY"),
                }
        return found
