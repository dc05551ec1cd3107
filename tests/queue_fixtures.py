"""Fixtures for the ACD tests: the queue config in a fresh Postgres schema, live state under a fresh
Redis prefix, and a started QueueService."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from data_fixtures import PG_DSN, REDIS_URL

from esl_app.data.bridge import Bridge
from esl_app.queue import AcdConfig, AgentConfig, QueueConfig, QueueService, Tier, load_config, save_config

__all__ = ["acd", "acd_live", "configure", "simple_config"]


def configure(bridge: Bridge, schema: str, config: AcdConfig) -> AcdConfig:
    """Write ``config`` to Postgres and read it back (what a service publishes to Redis)."""

    async def run() -> AcdConfig:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
        try:
            await save_config(conn, config)
            return await load_config(conn)
        finally:
            await conn.close()

    return bridge.run(run(), timeout=30)


def simple_config(strategy: str = "longest-idle-agent", agents: int = 2, **queue: Any) -> AcdConfig:
    queue.setdefault("wrap_up_seconds", 0)
    queue.setdefault("no_answer_delay_seconds", 0)
    queue.setdefault("music", "tone_stream://%(200,0,440)")
    return AcdConfig(
        queues=[QueueConfig(name="support", strategy=strategy, **queue)],  # type: ignore[arg-type]
        agents=[AgentConfig(id=f"a{i}", contact=f"user/a{i}") for i in range(1, agents + 1)],
        tiers=[Tier(queue="support", agent=f"a{i}", level=1, position=i) for i in range(1, agents + 1)],
    )


@contextmanager
def _services(redis_prefix: str, prepare: Callable[[AcdConfig], AcdConfig]) -> Iterator[Callable[..., QueueService]]:
    made: list[QueueService] = []

    def make(config: AcdConfig | None = None, install: bool = True, **options: Any) -> QueueService:
        options.setdefault("sweep_interval", 0.5)
        options.setdefault("lease_seconds", 3.0)
        service = QueueService(REDIS_URL, redis_prefix, **options).start(install=install)
        made.append(service)
        if config is not None:
            service.publish_config(prepare(config))
        return service

    try:
        yield make
    finally:
        for service in made:
            service.stop()


@pytest.fixture
def acd(bridge: Bridge, pg_schema: str, redis_prefix: str) -> Iterator[Callable[..., QueueService]]:
    """``acd(config, **service_options)``: config saved to Postgres, loaded, published; a started service."""
    with _services(redis_prefix, lambda config: configure(bridge, pg_schema, config)) as make:
        yield make


@pytest.fixture
def acd_live(redis_prefix: str) -> Iterator[Callable[..., QueueService]]:
    """``acd`` without the trip through Postgres (about 0.5 s a test): the config published to Redis as
    given, for tests of the live state and offers only."""
    with _services(redis_prefix, lambda config: config) as make:
        yield make
