"""Cluster settings: the FreeSWITCH nodes esl-app watches, and when a node counts as busy or down.

From the environment (``ESL_APP_CLUSTER_*``, nodes as JSON), a ``.env`` file, or the ``[cluster]``
table of the TOML file the other settings read (``ESL_APP_CONFIG_FILE``, default ``esl-app.toml``)::

    [cluster]
    probe_interval = 0.25
    heartbeat_interval = 1          # the nodes' switch.conf event-heartbeat-interval

    [[cluster.nodes]]
    name = "fs1"
    host = "10.0.0.11"
    password = "s3cret"
    roles = ["outbound"]

    ESL_APP_CLUSTER_NODES='[{"name": "fs1", "host": "10.0.0.11", "password": "s3cret"}]'
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..settings import config_file_sources


class Role(StrEnum):
    INBOUND = "inbound"  # takes calls from the SIP edge: IVR, queues
    OUTBOUND = "outbound"  # places the dialer's calls


class NodeSettings(BaseModel):
    """One FreeSWITCH node, reached on its inbound Event Socket (event_socket.conf.xml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="shown in logs, metrics and results")
    host: str
    port: int = Field(8021, ge=1, le=65535)
    password: SecretStr = SecretStr("ClueCon")
    roles: frozenset[Role] = frozenset({Role.INBOUND, Role.OUTBOUND})
    weight: float = Field(1.0, gt=0, description="relative capacity: a node of weight 2 takes twice the share")
    drain: bool = Field(False, description="start drained: watched, but given no new calls")
    allow_default_password: bool = Field(
        False, description="accept the shipped password ClueCon for a node that is not on loopback (unsafe)"
    )

    @field_validator("roles", mode="before")
    @classmethod
    def _both(cls, value: object) -> object:
        if value == "both" or (isinstance(value, list | tuple | set | frozenset) and "both" in value):
            return frozenset(Role)
        if isinstance(value, str):
            return frozenset({value})
        return value


class ClusterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESL_APP_CLUSTER_", env_file=".env", extra="ignore")

    nodes: list[NodeSettings] = Field(default_factory=list)

    # load thresholds: a node past either is busy and gets no new calls
    busy_sessions_ratio: float = Field(0.8, gt=0, le=1, description="busy at Session-Count >= this x Max-Sessions")
    min_idle_cpu: float = Field(10.0, ge=0, lt=100, description="busy when Idle-CPU (percent) falls below this")

    # liveness
    probe_interval: float = Field(1.0, gt=0, description="s between active probes (api status) of each node")
    probe_timeout: float = Field(1.0, gt=0, description="s a probe may take; longer means down")
    heartbeat_interval: float = Field(
        20.0, ge=1, description="s; the nodes' event-heartbeat-interval (switch.conf, FreeSWITCH default 20)"
    )
    heartbeat_grace: float = Field(
        2.5, gt=1, description="down when the last HEARTBEAT is older than this many intervals"
    )

    # the inbound Event Socket connection
    connect_timeout: float = Field(2.0, gt=0)
    command_timeout: float = Field(5.0, gt=0)
    reconnect_min: float = Field(0.1, gt=0, description="s, first reconnect delay (jittered, doubling)")
    reconnect_max: float = Field(5.0, gt=0, description="s, longest reconnect delay")

    # originate
    originate_timeout: int = Field(60, ge=1, description="s a call may ring (originate_timeout)")
    job_timeout: float = Field(90.0, gt=0, description="s to wait for an originate's BACKGROUND_JOB")
    reconcile_timeout: float = Field(
        5.0, gt=0, description="s to wait for a node to answer uuid_exists after its connection dropped mid-job"
    )
    failover_causes: frozenset[str] = Field(
        frozenset({"DESTINATION_OUT_OF_ORDER", "SYSTEM_SHUTDOWN", "SWITCH_CONGESTION", "REQUESTED_CHAN_UNAVAIL"}),
        description="hangup causes that mean the node could not start the call (the callee was not reached): "
        "the originate may move to another node once uuid_exists says the call does not exist",
    )
    failover_on_lost_connection: bool = Field(
        False,
        description="after a node's connection dropped mid-job and uuid_exists then says false, try another "
        "node. Off by default: false cannot tell 'never placed' from 'placed and already ended'",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterSettings:
        names = [node.name for node in self.nodes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"cluster node names must be unique: {duplicates}")
        return self

    @property
    def heartbeat_max_age(self) -> float:
        return self.heartbeat_interval * self.heartbeat_grace

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings, *config_file_sources(settings_cls, "cluster")]
        sources.append(file_secret_settings)
        return tuple(sources)
