"""Fixtures for the dialer tests: fake outbound nodes, a campaign in a fresh schema, a holding socket
for answered calls (the outbound pool's stand-in), and helpers to read the attempts table."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.socket
import pytest

from esl_app.cluster import ClusterSettings
from esl_app.dialer import store
from esl_app.dialer.numbers import ContactRow
from esl_app.testing.fake_node import FakeNode

GATEWAY = "sofia/gateway/carrier"


class Holder:
    """Accepts the answered calls' sockets and holds them (the far end hangs up: ``hangup_after``)."""

    def __init__(self) -> None:
        self.listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[Any] = []
        self.greenlet = gevent.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(sock)

    def close(self) -> None:
        self.greenlet.kill(block=True, timeout=1)
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def holder() -> Iterator[Holder]:
    h = Holder()
    yield h
    h.close()


def start_nodes(count: int, **kwargs: Any) -> list[FakeNode]:
    kwargs.setdefault("sessions_per_second", 1000)
    kwargs.setdefault("heartbeat_interval", 1.0)
    return [FakeNode(f"fs{i + 1}", **kwargs).start() for i in range(count)]


def cluster_settings(nodes: list[FakeNode]) -> ClusterSettings:
    return ClusterSettings(
        nodes=[{"name": n.name, "host": n.host, "port": n.port, "roles": ["outbound"]} for n in nodes],
        probe_interval=0.25, heartbeat_interval=1, reconcile_timeout=2.0, job_timeout=20,
    )  # fmt: skip


def cluster_env(nodes: list[FakeNode]) -> dict[str, str]:
    return {
        "ESL_APP_CLUSTER_NODES": json.dumps(
            [{"name": n.name, "host": n.host, "port": n.port, "roles": ["outbound"]} for n in nodes]
        ),
        "ESL_APP_CLUSTER_PROBE_INTERVAL": "0.25",
        "ESL_APP_CLUSTER_HEARTBEAT_INTERVAL": "1",
        "ESL_APP_CLUSTER_RECONCILE_TIMEOUT": "2",
        "ESL_APP_CLUSTER_JOB_TIMEOUT": "20",
    }


def make_campaign(admin: Any, name: str = "spring", *, numbers: list[str], **overrides: Any) -> int:
    fields: dict[str, Any] = dict(
        name=name, tenant_id="demo", caller_id_number="442071234567", gateway=GATEWAY, flow="survey", cps=50,
        max_concurrent=50, max_attempts=3, retry_busy=dt.timedelta(seconds=0.3),
        retry_no_answer=dt.timedelta(seconds=0.3), retry_failed=dt.timedelta(seconds=0.3), ring_timeout=5,
    )  # fmt: skip
    fields.update(overrides)
    spec = store.CampaignSpec(**fields)
    campaign_id = admin.bridge.run(store.create_campaign(admin.conn, spec), timeout=10)
    rows = [ContactRow(line=i + 2, number=n, variables={"name": f"c{i}"}) for i, n in enumerate(numbers)]
    admin.bridge.run(store.load_contacts(admin.conn, campaign_id, rows), timeout=30)
    return campaign_id


def set_status(admin: Any, name: str, status: str) -> None:
    admin.bridge.run(store.set_status(admin.conn, name, status), timeout=10)


def counted_attempts(admin: Any, campaign_id: int) -> dict[str, list[Any]]:
    """number -> its attempt rows that count (every outcome except not_originated), in order."""
    rows = admin.fetch(
        """SELECT c.number, a.* FROM attempts a JOIN contacts c ON c.id = a.contact_id
           WHERE a.campaign_id = $1 AND a.outcome IS DISTINCT FROM 'not_originated' ORDER BY a.id""",
        campaign_id,
    )
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row["number"], []).append(row)
    return out


def wait_for(predicate: Any, timeout: float, step: float = 0.1) -> Any:
    deadline = gevent.get_hub().loop.now() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if gevent.get_hub().loop.now() > deadline:
            raise AssertionError(f"not within {timeout} s: {predicate}")
        gevent.sleep(step)


def subprocess_env(pg_schema: str, redis_prefix: str, nodes: list[FakeNode], holder: Holder, **extra: str) -> dict:
    from data_fixtures import PG_DSN, REDIS_URL

    env = dict(os.environ)
    env.update(cluster_env(nodes))
    env.update({
        "ESL_APP_DATA_POSTGRES_DSN": PG_DSN, "ESL_APP_DATA_POSTGRES_SCHEMA": pg_schema,
        "ESL_APP_DATA_REDIS_URL": REDIS_URL, "ESL_APP_DIALER_SOCKET_PORT": str(holder.port),
        "ESL_APP_DIALER_LEASE": "2", "ESL_APP_DIALER_RECONCILE_INTERVAL": "0.3", "ESL_APP_DIALER_TICK": "0.02",
        "ESL_APP_DIALER_STATUS_REFRESH": "0.1",
    })  # fmt: skip
    env.update(extra)
    return env
