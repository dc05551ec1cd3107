"""Settings from the environment (``ESL_APP_*``) or a ``.env`` file, validated by pydantic."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .session import SessionSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESL_APP_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8084, ge=0, le=65535)
    backlog: int = Field(4096, ge=1)
    max_calls: int = Field(1000, ge=1, description="calls handled at once; more are refused with 503")
    connect_timeout: float = Field(5.0, gt=0)
    command_timeout: float = Field(10.0, gt=0)
    execute_timeout: float = Field(3600.0, gt=0, description="default wait for an application to complete")
    linger_seconds: int | None = Field(10, ge=1)
    hangup_wait: float = Field(2.0, ge=0)
    write_timeout: float = Field(10.0, gt=0)
    stop_deadline: float = Field(30.0, ge=0, description="graceful stop: how long active calls may finish")
    log_level: str = "INFO"

    def session(self) -> SessionSettings:
        return SessionSettings(
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            execute_timeout=self.execute_timeout,
            linger_seconds=self.linger_seconds,
            hangup_wait=self.hangup_wait,
            write_timeout=self.write_timeout,
        )
