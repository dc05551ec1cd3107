"""Settings from the environment (``ESL_APP_*``), a ``.env`` file or a TOML file, validated by pydantic.

Precedence, highest first: arguments, environment, ``.env``, the TOML file named by
``ESL_APP_CONFIG_FILE`` (default ``esl-app.toml`` when it exists), then the defaults below.

Pools are nested: ``ESL_APP_POOLS__OUTBOUND__CAPACITY=200`` or, in TOML::

    [pools.outbound]
    port = 8085
    capacity = 200
    cps = 50
    workers = 2

What is given for a pool is merged over that pool's defaults, so one variable changes one field.
A pool with ``workers = 0`` is not served. Pools other than ``inbound`` and ``outbound`` may be added.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .session import DEFAULT_NIX_EVENTS, NIXABLE_EVENTS, SessionSettings
from .transport.keepalive import KeepaliveSettings
from .transport.peers import LOOPBACK, PeerFilter, check_entries, split_entries

# FreeSWITCH addresses and CIDR networks allowed to connect, or "any" (esl_app.transport.peers); from
# the environment or the CLI also as one comma-separated string
AllowList = Annotated[list[str], NoDecode, BeforeValidator(split_entries), AfterValidator(check_entries)]


def _split_names(value: object) -> object:
    """``"CHANNEL_PARK, CHANNEL_STATE"`` (environment, CLI) as well as a list; ``""``: none."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


def _check_nixable(names: list[str]) -> list[str]:
    upper = [name.upper() for name in names]
    wrong = sorted(set(upper) - NIXABLE_EVENTS)
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)} cannot be nixed: a call acts on it, or myevents does not send it "
            f"(allowed: {', '.join(sorted(NIXABLE_EVENTS))})"
        )
    return list(dict.fromkeys(upper))


# events of myevents' set a call's socket asks FreeSWITCH not to send (``nixevent`` in the handshake)
NixEvents = Annotated[list[str], NoDecode, BeforeValidator(_split_names), AfterValidator(_check_nixable)]

CONFIG_FILE_ENV = "ESL_APP_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "esl-app.toml"


def config_file_sources(settings_cls: type[BaseSettings], table: str | None = None) -> list[PydanticBaseSettingsSource]:
    """The TOML config file (``ESL_APP_CONFIG_FILE``, else ``esl-app.toml`` if present) as a settings
    source: the whole file, or only its ``[table]`` (none when the file has no such table). A file
    named by the environment must exist."""
    path = os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE
    if not Path(path).is_file():
        if os.environ.get(CONFIG_FILE_ENV):
            raise FileNotFoundError(f"{CONFIG_FILE_ENV}={path}: no such file")
        return []
    if table is None:
        return [TomlConfigSettingsSource(settings_cls, toml_file=path)]
    with open(path, "rb") as handle:
        if not isinstance(tomllib.load(handle).get(table), dict):
            return []
    return [TomlConfigSettingsSource(settings_cls, toml_file=path, toml_table_header=(table,))]


class PoolSettings(BaseModel):
    """One worker pool: its own listen address, limits and processes."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8084, ge=0, le=65535)
    capacity: int = Field(1000, ge=1, description="calls handled at once by the whole pool; more get 503")
    cps: float = Field(0, ge=0, description="new calls per second for the whole pool (0: no limit); more get 503")
    workers: int = Field(1, ge=0, description="worker processes (gevent uses one core each); 0: pool not served")
    backlog: int = Field(4096, ge=1)
    cpus: list[int] | None = Field(None, description="pin the pool's workers to these CPUs (Linux)")
    allow_from: AllowList | None = Field(
        None, description="FreeSWITCH addresses/CIDRs that may connect to this pool (None: the global allow_from)"
    )
    socket_mode: Literal["static", "async"] | None = Field(
        None,
        description="the socket mode the dialplan uses for this pool's port (static: fast decide-and-hand-off; "
        "async: interactive, e.g. a dialer's or queue's pool); a call arriving in the other mode is logged as a "
        "dialplan mismatch. None: either",
    )


DEFAULT_POOLS: dict[str, dict[str, Any]] = {
    "inbound": {"port": 8084, "capacity": 1000, "cps": 0, "workers": 1},
    "outbound": {"port": 8085, "capacity": 1000, "cps": 0, "workers": 1},
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESL_APP_", env_file=".env", extra="ignore", env_nested_delimiter="__")

    # single-process serving (``esl-app serve --single``) and the defaults of every session
    host: str = "127.0.0.1"
    port: int = Field(8084, ge=0, le=65535)
    backlog: int = Field(4096, ge=1)
    max_calls: int = Field(1000, ge=1, description="single process: calls handled at once; more get 503")
    connect_timeout: float = Field(5.0, gt=0)
    command_timeout: float = Field(10.0, gt=0)
    execute_timeout: float = Field(3600.0, gt=0, description="default wait for an application to complete")
    linger_seconds: int | None = Field(10, ge=1)
    hangup_wait: float = Field(2.0, ge=0)
    write_timeout: float = Field(10.0, gt=0)
    stop_wait: float = Field(
        2.0, gt=0, description="after a verb's timeout: how long uuid_break may take before the call is killed"
    )
    cleanup_timeout: float = Field(5.0, gt=0, description="bound for each command ending a call after an error")
    liveness_interval: float | None = Field(
        30.0, gt=0, description="waits longer than this probe FreeSWITCH (api uuid_exists); None: no probes"
    )
    liveness_timeout: float = Field(10.0, gt=0, description="no answer to a probe this long: the connection closes")
    pack_after: float | None = Field(
        1.0, gt=0, description="waits longer than this pack the call's connect reply (held calls' memory); None: never"
    )
    nix_events: NixEvents = Field(
        list(DEFAULT_NIX_EVENTS),
        description="myevents' events a call does not act on, nixed in the handshake so the switch never "
        "sends them (comma-separated; empty: all)",
    )
    keepalive_idle: int = Field(10, ge=1, description="TCP keepalive: idle seconds before the first probe")
    keepalive_interval: int = Field(5, ge=1, description="TCP keepalive: seconds between probes")
    keepalive_count: int = Field(3, ge=1, description="TCP keepalive: unanswered probes before the peer is dead")
    stop_deadline: float = Field(30.0, ge=0, description="graceful stop: how long active calls may finish")
    log_level: str = "INFO"
    handoff_extension: str = Field(
        "esl_app_async XML esl_app",
        description="EXTENSION [DIALPLAN [CONTEXT]] that reconnects a static call with 'socket ... async full' "
        "when its route needs an async socket (dialplan/esl_app.xml)",
    )
    log_format: Literal["text", "json"] = "text"
    handoff_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="signs the marker by which a handed-off call's async leg is recognised (esl_app.handoff). "
        "Default: a random one per start, shared by the pools' workers; set one to share it between hosts",
    )
    allow_from: AllowList = Field(
        default_factory=lambda: list(LOOPBACK),
        description="FreeSWITCH addresses and CIDR networks that may connect (like FreeSWITCH's apply-inbound-acl); "
        "other peers are closed at accept. 'any' allows every peer. Default: loopback only",
    )

    # worker pools (``esl-app serve``)
    pools: dict[str, PoolSettings] = Field(default_factory=dict)
    http_host: str = "127.0.0.1"
    http_port: int = Field(9184, ge=0, le=65535, description="/metrics, /health, /ready")
    metrics_dir: str | None = Field(
        None, description="prometheus multiprocess dir (default: a fresh temp dir in /dev/shm: keep it in memory)"
    )
    worker_timeout: float = Field(30.0, gt=0, description="a worker silent this long is killed and replaced")
    reload_timeout: float = Field(30.0, gt=0, description="SIGHUP: how long new workers may take to be ready")
    restart_backoff: float = Field(1.0, ge=0, description="delay before restarting a worker that died young")

    @model_validator(mode="before")
    @classmethod
    def _merge_pool_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = data.get("pools") or {}
        if isinstance(given, BaseModel) or not isinstance(given, dict):
            return data
        merged: dict[str, Any] = {name: dict(fields) for name, fields in DEFAULT_POOLS.items()}
        for name, fields in given.items():
            if isinstance(fields, PoolSettings):
                fields = fields.model_dump()
            merged[name] = {**merged.get(name, {}), **(fields or {})}
        return {**data, "pools": merged}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings, *config_file_sources(settings_cls)]
        sources.append(file_secret_settings)
        return tuple(sources)

    def peer_filter(self, pool: str | None = None) -> PeerFilter | None:
        """Who may connect to ``pool`` (its own ``allow_from``, else the global one); None: anybody."""
        entries = self.allow_from
        if pool is not None and self.pools[pool].allow_from is not None:
            entries = self.pools[pool].allow_from  # type: ignore[assignment]
        return PeerFilter.build(entries)

    def served_pools(self) -> dict[str, PoolSettings]:
        return {name: pool for name, pool in self.pools.items() if pool.workers > 0}

    def session(self) -> SessionSettings:
        return SessionSettings(
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            execute_timeout=self.execute_timeout,
            linger_seconds=self.linger_seconds,
            hangup_wait=self.hangup_wait,
            write_timeout=self.write_timeout,
            stop_wait=self.stop_wait,
            cleanup_timeout=self.cleanup_timeout,
            liveness_interval=self.liveness_interval,
            liveness_timeout=self.liveness_timeout,
            pack_after=self.pack_after,
            nix_events=tuple(self.nix_events),
            keepalive=KeepaliveSettings(
                idle=self.keepalive_idle, interval=self.keepalive_interval, count=self.keepalive_count
            ),
        )
