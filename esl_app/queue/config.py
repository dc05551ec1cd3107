"""ACD configuration: queues, agents (contact, skills) and tiers, kept in Postgres (migration
003_queues.sql), read with asyncpg and copied into Redis where the dispatch script reads it."""

from __future__ import annotations

import re
from typing import Literal

import asyncpg
from pydantic import BaseModel, Field, field_validator

from ..cluster.dialstring import check_destination

Strategy = Literal["longest-idle-agent", "round-robin", "top-down", "skills-based", "ring-all"]
STRATEGIES: tuple[str, ...] = ("longest-idle-agent", "round-robin", "top-down", "skills-based", "ring-all")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AGENT = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class QueueConfig(BaseModel):
    name: str
    strategy: Strategy = "longest-idle-agent"
    max_wait_seconds: int = Field(300, gt=0)
    wrap_up_seconds: int = Field(10, ge=0)
    ring_seconds: int = Field(20, gt=0)
    no_answer_delay_seconds: int = Field(30, ge=0)
    max_no_answer: int = Field(3, ge=0)
    music: str = "local_stream://moh"
    announcement: str | None = None
    announce_every_seconds: int | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"invalid queue name {value!r}")
        return value


class AgentConfig(BaseModel):
    id: str
    name: str = ""
    contact: str
    skills: dict[str, int] = Field(default_factory=dict)  # skill -> level 1..10 (10: expert)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _AGENT.match(value):
            raise ValueError(f"invalid agent id {value!r}")
        return value

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: str) -> str:
        # one endpoint: ring-all joins contacts into one dial string, where a ',' '|' ':_:' or a
        # bracket would ring or set more than this agent, and '$' would reach variable expansion
        return check_destination(value)

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: dict[str, int]) -> dict[str, int]:
        for skill, level in value.items():
            if not _NAME.match(skill) or not 1 <= level <= 10:
                raise ValueError(f"invalid skill {skill!r}={level!r} (name, level 1..10)")
        return value


class Tier(BaseModel):
    queue: str
    agent: str
    level: int = Field(1, ge=1, le=99)
    position: int = Field(1, ge=1, le=9999)

    @property
    def score(self) -> int:
        return self.level * 10000 + self.position


class AcdConfig(BaseModel):
    queues: list[QueueConfig] = Field(default_factory=list)
    agents: list[AgentConfig] = Field(default_factory=list)
    tiers: list[Tier] = Field(default_factory=list)


def skills_text(skills: dict[str, int]) -> str:
    """``{"en": 5}`` -> ``"en=5"``: the form the dispatch script parses."""
    for skill, level in skills.items():
        if not _NAME.match(skill) or not isinstance(level, int) or not 1 <= level <= 10:
            raise ValueError(f"invalid skill {skill!r}={level!r} (name, level 1..10)")
    return ",".join(f"{k}={v}" for k, v in sorted(skills.items()))


async def load_config(conn: asyncpg.Connection) -> AcdConfig:
    """Read the whole ACD configuration (the connection's search_path selects the schema)."""
    queues = [QueueConfig(**dict(r)) for r in await conn.fetch("SELECT * FROM acd_queues ORDER BY name")]
    skills: dict[str, dict[str, int]] = {}
    for row in await conn.fetch("SELECT agent_id, skill, level FROM acd_agent_skills"):
        skills.setdefault(row["agent_id"], {})[row["skill"]] = row["level"]
    agents = [
        AgentConfig(id=r["id"], name=r["name"], contact=r["contact"], skills=skills.get(r["id"], {}))
        for r in await conn.fetch("SELECT id, name, contact FROM acd_agents ORDER BY id")
    ]
    tiers = [
        Tier(queue=r["queue_name"], agent=r["agent_id"], level=r["level"], position=r["position"])
        for r in await conn.fetch("SELECT queue_name, agent_id, level, position FROM acd_tiers")
    ]
    return AcdConfig(queues=queues, agents=agents, tiers=tiers)


async def save_config(conn: asyncpg.Connection, config: AcdConfig) -> None:
    """Upsert queues, agents, skills and tiers (one transaction; an agent's skills are replaced)."""
    async with conn.transaction():
        for q in config.queues:
            await conn.execute(
                """INSERT INTO acd_queues (name, strategy, max_wait_seconds, wrap_up_seconds, ring_seconds,
                       no_answer_delay_seconds, max_no_answer, music, announcement, announce_every_seconds)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                   ON CONFLICT (name) DO UPDATE SET strategy = excluded.strategy,
                       max_wait_seconds = excluded.max_wait_seconds, wrap_up_seconds = excluded.wrap_up_seconds,
                       ring_seconds = excluded.ring_seconds,
                       no_answer_delay_seconds = excluded.no_answer_delay_seconds,
                       max_no_answer = excluded.max_no_answer, music = excluded.music,
                       announcement = excluded.announcement,
                       announce_every_seconds = excluded.announce_every_seconds""",
                q.name, q.strategy, q.max_wait_seconds, q.wrap_up_seconds, q.ring_seconds,
                q.no_answer_delay_seconds, q.max_no_answer, q.music, q.announcement, q.announce_every_seconds,
            )  # fmt: skip
        for a in config.agents:
            await conn.execute(
                """INSERT INTO acd_agents (id, name, contact) VALUES ($1, $2, $3)
                   ON CONFLICT (id) DO UPDATE SET name = excluded.name, contact = excluded.contact""",
                a.id, a.name, a.contact,
            )  # fmt: skip
            await conn.execute("DELETE FROM acd_agent_skills WHERE agent_id = $1", a.id)
            await conn.executemany(
                "INSERT INTO acd_agent_skills (agent_id, skill, level) VALUES ($1, $2, $3)",
                [(a.id, k, v) for k, v in a.skills.items()],
            )
        await conn.executemany(
            """INSERT INTO acd_tiers (queue_name, agent_id, level, position) VALUES ($1, $2, $3, $4)
               ON CONFLICT (queue_name, agent_id) DO UPDATE SET level = excluded.level, position = excluded.position""",
            [(t.queue, t.agent, t.level, t.position) for t in config.tiers],
        )
