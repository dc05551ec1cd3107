"""Edge settings: how esl-app reaches Kamailio's JSON-RPC and how cluster nodes map to dispatcher entries.

``ESL_APP_EDGE_*`` in the environment, or the ``[edge]`` table of the TOML file the other settings read::

    [edge]
    rpc_url = "http://127.0.0.1:5071/RPC"
    dispatcher_list = "/etc/kamailio/dispatcher.list"   # optional: load-derived weights

    [edge.sip_uris]
    fs1 = "sip:10.0.0.11:5060"
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..cluster.settings import NodeSettings, Role
from ..settings import config_file_sources


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESL_APP_EDGE_", env_file=".env", extra="ignore")

    rpc_url: str = Field("http://127.0.0.1:5071/RPC", description="Kamailio's jsonrpcs over xhttp")
    rpc_timeout: float = Field(0.5, gt=0, description="s per RPC; a slower Kamailio is retried")
    retry_interval: float = Field(0.2, gt=0, description="s between retries while Kamailio cannot be reached")
    sip_uris: dict[str, str] = Field(
        default_factory=dict, description="node name -> its dispatcher URI; default sip:<host>:<sip_port>"
    )
    sip_port: int = Field(5060, ge=1, le=65535)
    inbound_set: int = Field(1, ge=0, description="dispatcher set of the inbound nodes (kamailio.cfg DS_INBOUND)")
    outbound_set: int = Field(2, ge=0, description="dispatcher set of the outbound nodes (DS_OUTBOUND)")
    dispatcher_list: Path | None = Field(
        None, description="when set, esl-app owns this file: it writes load-derived rweights and reloads"
    )
    weight_interval: float = Field(
        5.0, ge=1, description="s between weight updates (each is a dispatcher.reload; Kamailio allows one a second)"
    )
    startup_grace: float = Field(
        3.0, ge=0, description="s a node may stay 'not connected yet' before esl-app disables it in Kamailio"
    )

    def sip_uri(self, node: NodeSettings) -> str:
        return self.sip_uris.get(node.name) or f"sip:{node.host}:{self.sip_port}"

    def sets(self, node: NodeSettings) -> list[int]:
        sets = []
        if Role.INBOUND in node.roles:
            sets.append(self.inbound_set)
        if Role.OUTBOUND in node.roles:
            sets.append(self.outbound_set)
        return sets

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings, *config_file_sources(settings_cls, "edge")]
        sources.append(file_secret_settings)
        return tuple(sources)
