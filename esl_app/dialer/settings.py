"""Dialer settings, from the environment (``ESL_APP_DIALER_*``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class DialerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESL_APP_DIALER_", env_file=".env", extra="ignore")

    name: str = Field(default_factory=_default_name, description="this instance, written on its attempts")
    socket_host: str = Field("127.0.0.1", description="the outbound worker pool answered calls connect to")
    socket_port: int = Field(8085, ge=1, le=65535)
    lease: float = Field(10.0, gt=0, description="s a claim lasts unless renewed; a dead dialer's calls wait this long")
    tick: float = Field(0.05, gt=0, description="s between pacing rounds")
    status_refresh: float = Field(0.25, gt=0, description="s between reads of the campaigns (pause/stop latency)")
    reconcile_interval: float = Field(1.0, gt=0)
    batch: int = Field(50, ge=1, description="most contacts claimed per campaign per round")
    node_cps: float = Field(
        0.0,
        ge=0,
        description="calls per second one node of weight 1 takes from all dialers (its sessions-per-second"
        " in switch.conf, less inbound traffic); 0: no per-node limit",
    )
    unseen_end_after: float = Field(
        300.0,
        gt=0,
        description="s after which an answered call with no recorded hangup is asked of its node",
    )
    queue_prefix: str = Field(
        "esl-app:",
        description="Redis key prefix of the ACD queues (QueueService's; `esl-app queue --prefix`)",
    )
    abandon_window: float = Field(
        86400.0,
        gt=0,
        description="s over which a campaign's abandon rate is measured and capped (Ofcom: 24 h)",
    )
    metrics_port: int | None = Field(None, description="serve Prometheus metrics on this port")
