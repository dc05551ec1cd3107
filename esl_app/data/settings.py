"""Routing-data settings, from the environment (``ESL_APP_DATA_*``) or a ``.env`` file."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# package data, read through importlib.resources so an installed wheel (not only a checkout) finds them
DEFAULT_DATA_FILE: Traversable = files("esl_app.data") / "demo_data.json"
MIGRATIONS_DIR: Traversable = files("esl_app.data") / "migrations"


class DataSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESL_APP_DATA_", env_file=".env", extra="ignore")

    # where the data lives; neither set = the embedded default (data_file), no servers needed
    postgres_dsn: str | None = Field(None, description="e.g. postgresql://user@127.0.0.1:5432/db")
    postgres_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    redis_url: str | None = Field(None, description="e.g. redis://127.0.0.1:6379/0")
    redis_prefix: str = "esl:"
    data_file: Path | None = Field(None, description="a data file to serve; unset: the demo data shipped with esl-app")

    # in-process cache
    cache_size: int = Field(100_000, ge=16, description="entries kept in each process (LRU)")
    cache_ttl: float = Field(300.0, gt=0, description="s; only while Postgres invalidations are not flowing")
    negative_ttl: float = Field(30.0, gt=0, description="s an unknown number stays known-unknown")
    redis_ttl: float = Field(86400.0, gt=0, description="s a Redis copy lives without being refreshed")

    # degraded modes
    budget_ms: float = Field(50.0, gt=0, description="the longest a call waits for data")
    redis_timeout_ms: float = Field(20.0, gt=0, description="per Redis operation (capped by the budget)")
    retry_interval: float = Field(1.0, gt=0, description="s a failed tier is skipped before it is retried")
    stale_max_age: float = Field(3600.0, ge=0, description="s old data may still be served when the truth is down")
    fallback: Literal["reject", "route"] = "reject"
    fallback_code: int = Field(503, ge=300, le=699)
    fallback_target: str | None = Field(None, description="the route target when fallback = route")

    # limits
    lease_seconds: float = Field(30.0, gt=0, description="a concurrency slot expires unless renewed")
    limits_without_redis: Literal["local", "allow", "refuse"] = Field(
        "local", description="Redis down: enforce per process, let calls through, or refuse them"
    )

    # Postgres
    pool_size: int = Field(4, ge=1)
    connect_timeout: float = Field(2.0, gt=0)
    bulk_load: bool = Field(True, description="load everything at start so the first call is a hit")
    listen_health_interval: float = Field(2.0, gt=0, description="s between checks of the LISTEN connection")

    @property
    def embedded(self) -> bool:
        return self.postgres_dsn is None

    @property
    def data_source(self) -> Path | Traversable:
        """The file the embedded tier serves and ``--seed`` loads: ``data_file``, else the shipped demo data."""
        return self.data_file if self.data_file is not None else DEFAULT_DATA_FILE
