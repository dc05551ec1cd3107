"""The dialer's SQL (asyncpg, asyncio side): campaigns, contacts, attempts, do-not-call.

Every state change of an attempt is a conditional UPDATE (``outcome IS NULL``): the owning dialer,
a reconciling instance and the hangup recorder may race, exactly one of them settles an attempt.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid as uuidlib
from typing import Any

import asyncpg
from pydantic import BaseModel, Field, model_validator

from .numbers import ContactRow
from .policy import Next, Outcome, RetryPolicy, Span, next_step


class CampaignSpec(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    tenant_id: str
    caller_id_number: str = Field(pattern=r"^\+?[0-9]{1,20}$")
    caller_id_name: str = ""
    gateway: str = Field(pattern=r"^[A-Za-z0-9_.\-/@:]{1,200}$")
    flow: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    cps: float = Field(1.0, gt=0, le=10_000)
    max_concurrent: int = Field(10, gt=0)
    max_attempts: int = Field(3, gt=0)
    retry_busy: dt.timedelta = dt.timedelta(minutes=5)
    retry_no_answer: dt.timedelta = dt.timedelta(minutes=30)
    retry_failed: dt.timedelta = dt.timedelta(minutes=10)
    ring_timeout: int = Field(30, ge=1, le=600)
    schedule: list[Span] = Field(default_factory=list)
    # progressive dialing into an ACD queue (docs/dialer.md): None = paced by cps and max_concurrent only
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    dial_ratio: float = Field(1.0, ge=1.0, le=3.0)
    abandon_after: float = Field(2.0, gt=0, le=2.0)
    # played to an abandoned call: a file or URL naming who called (no spaces, braces, ${...})
    abandon_message: str | None = Field(None, pattern=r"^[A-Za-z0-9_./:@+=\-]{1,255}$")
    max_abandon_rate: float = Field(0.03, gt=0, le=0.03)
    retry_abandoned: dt.timedelta = dt.timedelta(hours=72)

    @model_validator(mode="after")
    def _queue_needs_message(self) -> CampaignSpec:
        if self.queue is not None and self.abandon_message is None:
            raise ValueError("a campaign dialling into a queue needs an abandon message (who called, a number)")
        return self


class Campaign(CampaignSpec):
    id: int
    status: str
    timezone: str = "UTC"
    tenant_cps: float | None = None

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, retry_busy=self.retry_busy,
                           retry_no_answer=self.retry_no_answer, retry_failed=self.retry_failed,
                           retry_abandoned=self.retry_abandoned)  # fmt: skip


class Claimed(BaseModel):
    """A contact claimed for one attempt; the attempt row exists already."""

    contact_id: int
    number: str
    variables: dict[str, Any]
    attempt_id: int
    attempt_number: int
    origination_uuid: str


class Orphan(BaseModel):
    """A contact whose lease expired while its last attempt had no outcome: reconcile it."""

    contact_id: int
    attempt_id: int
    origination_uuid: str
    node: str | None
    node_core_uuid: str | None
    ended: bool
    answered: bool
    hangup_cause: str | None


class UnknownCampaign(LookupError):
    pass


_CAMPAIGN_COLUMNS = """c.id, c.name, c.tenant_id, c.caller_id_number, c.caller_id_name, c.gateway, c.flow, c.cps,
    c.max_concurrent, c.max_attempts, c.retry_busy, c.retry_no_answer, c.retry_failed, c.ring_timeout, c.status,
    c.queue, c.dial_ratio, c.abandon_after, c.abandon_message, c.max_abandon_rate, c.retry_abandoned,
    t.timezone, (SELECT nullif(l.calls_per_second, 0)::real FROM tenant_limits l WHERE l.tenant_id = c.tenant_id)
    AS tenant_cps"""


async def create_campaign(conn: asyncpg.Connection, spec: CampaignSpec) -> int:
    async with conn.transaction():
        campaign_id = await conn.fetchval(
            """INSERT INTO campaigns (name, tenant_id, caller_id_number, caller_id_name, gateway, flow, cps,
                   max_concurrent, max_attempts, retry_busy, retry_no_answer, retry_failed, ring_timeout,
                   queue, dial_ratio, abandon_after, abandon_message, max_abandon_rate, retry_abandoned)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
               RETURNING id""",
            spec.name, spec.tenant_id, spec.caller_id_number, spec.caller_id_name, spec.gateway, spec.flow, spec.cps,
            spec.max_concurrent, spec.max_attempts, spec.retry_busy, spec.retry_no_answer, spec.retry_failed,
            spec.ring_timeout, spec.queue, spec.dial_ratio, spec.abandon_after, spec.abandon_message,
            spec.max_abandon_rate, spec.retry_abandoned,
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO campaign_hours (campaign_id, weekday, opens, closes) VALUES ($1, $2, $3, $4)",
            [(campaign_id, s.weekday, s.opens, s.closes) for s in spec.schedule],
        )
    return int(campaign_id)


def _campaign(row: Any, spans: list[Span]) -> Campaign:
    return Campaign(**{k: row[k] for k in row.keys()}, schedule=spans)  # noqa: SIM118 (a Record iterates values)


async def _spans(conn: asyncpg.Connection, campaign_id: int) -> list[Span]:
    rows = await conn.fetch("SELECT weekday, opens, closes FROM campaign_hours WHERE campaign_id = $1", campaign_id)
    return [Span(weekday=r["weekday"], opens=r["opens"], closes=r["closes"]) for r in rows]


async def get_campaign(conn: asyncpg.Connection, name: str) -> Campaign:
    row = await conn.fetchrow(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns c JOIN tenants t ON t.id = c.tenant_id WHERE c.name = $1", name
    )
    if row is None:
        raise UnknownCampaign(f"no campaign named {name!r}")
    return _campaign(row, await _spans(conn, row["id"]))


async def active_campaigns(conn: asyncpg.Connection) -> list[Campaign]:
    """Running and paused campaigns (paused ones still need their in-flight attempts reconciled)."""
    rows = await conn.fetch(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns c JOIN tenants t ON t.id = c.tenant_id"
        " WHERE c.status IN ('running', 'paused')"
        " OR EXISTS (SELECT 1 FROM contacts k WHERE k.campaign_id = c.id AND k.state = 'dialing') ORDER BY c.id"
    )
    return [_campaign(row, await _spans(conn, row["id"])) for row in rows]


async def set_status(conn: asyncpg.Connection, name: str, status: str) -> None:
    done = await conn.execute("UPDATE campaigns SET status = $2, updated_at = now() WHERE name = $1", name, status)
    if done == "UPDATE 0":
        raise UnknownCampaign(f"no campaign named {name!r}")


async def load_contacts(conn: asyncpg.Connection, campaign_id: int, rows: list[ContactRow]) -> int:
    """Insert the rows (a number already in the campaign is left as it is); returns how many are new."""
    async with conn.transaction():
        before = await conn.fetchval("SELECT count(*) FROM contacts WHERE campaign_id = $1", campaign_id)
        await conn.executemany(
            "INSERT INTO contacts (campaign_id, number, variables) VALUES ($1, $2, $3::jsonb)"
            " ON CONFLICT (campaign_id, number) DO NOTHING",
            [(campaign_id, r.number, json.dumps(r.variables)) for r in rows],
        )
        after = await conn.fetchval("SELECT count(*) FROM contacts WHERE campaign_id = $1", campaign_id)
    return int(after - before)


async def add_dnc(conn: asyncpg.Connection, numbers: list[str], tenant_id: str | None, reason: str = "") -> None:
    await conn.executemany(
        "INSERT INTO dnc (tenant_id, number, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        [(tenant_id, n, reason) for n in numbers],
    )


async def claim(
    conn: asyncpg.Connection,
    campaign: Campaign,
    dialer: str,
    lease: float,
    limit: int,
    uuids: list[str] | None = None,
) -> tuple[list[Claimed], int]:
    """Claim up to ``limit`` due contacts (fewer when max concurrent is near) and write their attempt rows,
    with the origination UUIDs ``uuids`` in order when given (reserved for an agent already), else new ones.

    One transaction: contacts are locked ``FOR UPDATE SKIP LOCKED`` (other instances take others);
    a per-campaign advisory lock makes "count live calls, then claim" exact across instances. A
    contact on a do-not-call list is set ``dnc`` instead. Returns (claimed, contacts set dnc)."""
    claimed: list[Claimed] = []
    blocked = 0
    async with conn.transaction():
        # one claimer per tenant at a time: "count live calls, then claim" stays exact across instances
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('esl_app_dialer'), hashtext($1))", campaign.tenant_id)
        live = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE a.campaign_id = $1) AS campaign,
                      count(*) AS tenant, (SELECT max_concurrent FROM tenant_limits WHERE tenant_id = $2) AS tenant_max
               FROM attempts a JOIN campaigns k ON k.id = a.campaign_id
               WHERE k.tenant_id = $2 AND a.ended_at IS NULL AND a.outcome IS DISTINCT FROM 'not_originated'""",
            campaign.id, campaign.tenant_id,
        )  # fmt: skip
        room = min(limit, campaign.max_concurrent - int(live["campaign"]))
        if live["tenant_max"] is not None:
            room = min(room, int(live["tenant_max"]) - int(live["tenant"]))  # the tenant's limit (routing data)
        if room <= 0:
            return [], 0
        rows = await conn.fetch(
            """SELECT c.id, c.number, c.variables, c.attempts,
                      EXISTS (SELECT 1 FROM dnc d WHERE d.number = c.number
                              AND (d.tenant_id IS NULL OR d.tenant_id = $2)) AS blocked
               FROM contacts c
               WHERE c.campaign_id = $1 AND c.state = 'pending' AND c.next_attempt_at <= now()
               ORDER BY c.next_attempt_at, c.id LIMIT $3
               FOR UPDATE OF c SKIP LOCKED""",
            campaign.id, campaign.tenant_id, room,
        )  # fmt: skip
        fresh = iter(uuids or [])
        for row in rows:
            if row["blocked"]:
                await conn.execute("UPDATE contacts SET state = 'dnc', last_outcome = 'dnc' WHERE id = $1", row["id"])
                blocked += 1
                continue
            number = row["attempts"] + 1
            call_uuid = next(fresh, None) or str(uuidlib.uuid4())
            await conn.execute(
                "UPDATE contacts SET state = 'dialing', attempts = $2, lease_owner = $3,"
                " lease_until = now() + make_interval(secs => $4) WHERE id = $1",
                row["id"], number, dialer, lease,
            )  # fmt: skip
            attempt_id = await conn.fetchval(
                "INSERT INTO attempts (campaign_id, contact_id, attempt_number, origination_uuid, dialer)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                campaign.id, row["id"], number, call_uuid, dialer,
            )  # fmt: skip
            variables = json.loads(row["variables"])
            claimed.append(
                Claimed(contact_id=row["id"], number=row["number"], variables=variables, attempt_id=attempt_id,
                        attempt_number=number, origination_uuid=call_uuid)
            )  # fmt: skip
    return claimed, blocked


async def mark_sent(conn: asyncpg.Connection, attempt_id: int, node: str, core_uuid: str | None) -> None:
    """Written before the originate goes to ``node`` (Originator's ``on_attempt``)."""
    await conn.execute(
        "UPDATE attempts SET node = $2, node_core_uuid = $3, sent_at = now() WHERE id = $1 AND outcome IS NULL",
        attempt_id, node, core_uuid,
    )  # fmt: skip


async def renew(conn: asyncpg.Connection, contact_ids: list[int], dialer: str, lease: float) -> None:
    if contact_ids:
        await conn.execute(
            "UPDATE contacts SET lease_until = now() + make_interval(secs => $3)"
            " WHERE id = ANY($1::bigint[]) AND state = 'dialing' AND lease_owner = $2",
            contact_ids, dialer, lease,
        )  # fmt: skip


async def settle(
    conn: asyncpg.Connection,
    campaign: Campaign,
    attempt_id: int,
    outcome: Outcome,
    cause: str | None,
    *,
    answered: bool,
    ended: bool,
) -> Next | None:
    """Record an attempt's outcome and move its contact on (retry later, done, exhausted).
    None when the attempt was settled already (by another instance or the hangup recorder)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE attempts SET outcome = $2, hangup_cause = coalesce(hangup_cause, $3),
                      originated_at = coalesce(originated_at, CASE WHEN $4 THEN now() END),
                      answered_at = coalesce(answered_at, CASE WHEN $4 THEN now() END),
                      ended_at = coalesce(ended_at, CASE WHEN $5 THEN now() END)
               WHERE id = $1 AND outcome IS NULL RETURNING contact_id""",
            attempt_id, outcome, cause, answered, ended,
        )  # fmt: skip
        if row is None:
            return None
        attempts = await conn.fetchval("SELECT attempts FROM contacts WHERE id = $1", row["contact_id"])
        step = next_step(campaign.policy, outcome, int(attempts), dt.datetime.now(dt.UTC))
        await conn.execute(
            "UPDATE contacts SET state = $2, last_outcome = $3, next_attempt_at = coalesce($4, next_attempt_at),"
            " lease_owner = NULL, lease_until = NULL WHERE id = $1",
            row["contact_id"], step.state, outcome, step.at,
        )  # fmt: skip
    return step


async def not_originated(conn: asyncpg.Connection, attempt_id: int, detail: str, retry_in: float = 1.0) -> bool:
    """The call never existed anywhere: the row stays (history), does not count, the contact is due again."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE attempts SET outcome = 'not_originated', hangup_cause = $2, ended_at = now()"
            " WHERE id = $1 AND outcome IS NULL AND ended_at IS NULL RETURNING contact_id",
            attempt_id, detail[:200],
        )  # fmt: skip
        if row is None:
            return False
        await conn.execute(
            "UPDATE contacts SET state = 'pending', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL,"
            " next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
            row["contact_id"], retry_in,
        )  # fmt: skip
    return True


async def release(conn: asyncpg.Connection, contact_id: int) -> None:
    """Give the contact's lease up now: its attempt's fate is unknown, reconciliation decides."""
    await conn.execute("UPDATE contacts SET lease_until = now() WHERE id = $1 AND state = 'dialing'", contact_id)


async def record_hangup(
    conn: asyncpg.Connection, call_uuid: str, cause: str, answered: bool, abandoned: bool = False
) -> bool:
    """CHANNEL_HANGUP_COMPLETE of an attempt's call (any instance sees it): the call is over. With
    ``abandoned`` (its flow marked it), the attempt is settled ``abandoned`` in the same transaction:
    a campaign is never seen with the call ended and its contact not yet due again (``finish_if_done``).
    Returns True when this call abandoned the attempt, else whether it recorded the end."""
    async with conn.transaction():
        newly_abandoned = abandoned and await abandon(conn, call_uuid)
        done = await conn.execute(
            "UPDATE attempts SET ended_at = now(), hangup_cause = $2,"
            " answered_at = coalesce(answered_at, CASE WHEN $3 THEN now() END) "
            " WHERE origination_uuid = $1 AND ended_at IS NULL",
            uuidlib.UUID(call_uuid), cause, answered,
        )  # fmt: skip
    return newly_abandoned if abandoned else done != "UPDATE 0"


async def abandon(conn: asyncpg.Connection, call_uuid: str) -> bool:
    """The answered call ``call_uuid`` got no agent in time (its flow said so): outcome ``abandoned``
    (over ``answered``, or first), its contact due again after the campaign's ``retry_abandoned``.
    False when it was abandoned already (every instance hears the hangup) or is not an attempt."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE attempts a SET outcome = 'abandoned', answered_at = coalesce(a.answered_at, now()),
                      originated_at = coalesce(a.originated_at, now())
               FROM campaigns c WHERE a.origination_uuid = $1 AND c.id = a.campaign_id
                 AND (a.outcome IS NULL OR a.outcome = 'answered')
               RETURNING a.contact_id, c.max_attempts, c.retry_abandoned""",
            uuidlib.UUID(call_uuid),
        )  # fmt: skip
        if row is None:
            return False
        attempts = await conn.fetchval("SELECT attempts FROM contacts WHERE id = $1", row["contact_id"])
        zero = dt.timedelta()
        policy = RetryPolicy(max_attempts=row["max_attempts"], retry_busy=zero, retry_no_answer=zero,
                             retry_failed=zero, retry_abandoned=row["retry_abandoned"])  # fmt: skip
        step = next_step(policy, "abandoned", int(attempts), dt.datetime.now(dt.UTC))
        await conn.execute(
            "UPDATE contacts SET state = $2, last_outcome = 'abandoned',"
            " next_attempt_at = coalesce($3, next_attempt_at), lease_owner = NULL, lease_until = NULL WHERE id = $1",
            row["contact_id"], step.state, step.at,
        )  # fmt: skip
    return True


async def abandon_counts(conn: asyncpg.Connection, campaign_id: int, window: float) -> tuple[int, int]:
    """(answered calls, abandoned ones included; abandoned calls) answered in the last ``window`` seconds,
    every instance's: the abandon rate the campaign is held to."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE outcome IN ('answered', 'abandoned')) AS answered,
                  count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned
           FROM attempts WHERE campaign_id = $1 AND answered_at IS NOT NULL
             AND answered_at > now() - make_interval(secs => $2)""",
        campaign_id, window,
    )  # fmt: skip
    return int(row["answered"]), int(row["abandoned"])


async def node_restarted(conn: asyncpg.Connection, node: str, new_core_uuid: str | None) -> int:
    """Calls up on a node that restarted are gone: end them (no event will ever say so)."""
    done = await conn.execute(
        "UPDATE attempts SET ended_at = now(), hangup_cause = coalesce(hangup_cause, 'NODE_LOST')"
        " WHERE node = $1 AND ended_at IS NULL AND outcome IS NOT NULL AND node_core_uuid IS DISTINCT FROM $2",
        node, new_core_uuid,
    )  # fmt: skip
    return int(done.split()[-1])


async def orphans(conn: asyncpg.Connection, campaign_id: int, dialer: str, lease: float, limit: int) -> list[Orphan]:
    """Contacts whose lease expired while dialing (their dialer died, or gave the attempt up as unknown):
    taken over by this instance (a new lease) with their last attempt."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT c.id FROM contacts c WHERE c.campaign_id = $1 AND c.state = 'dialing'
                 AND c.lease_until < now() ORDER BY c.lease_until LIMIT $2 FOR UPDATE SKIP LOCKED""",
            campaign_id, limit,
        )  # fmt: skip
        ids = [r["id"] for r in rows]
        if not ids:
            return []
        await conn.execute(
            "UPDATE contacts SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)"
            " WHERE id = ANY($1::bigint[])",
            ids, dialer, lease,
        )  # fmt: skip
        attempts = await conn.fetch(
            """SELECT DISTINCT ON (contact_id) id, contact_id, origination_uuid, node, node_core_uuid,
                      ended_at IS NOT NULL AS ended, answered_at IS NOT NULL AS answered, hangup_cause, outcome
               FROM attempts WHERE contact_id = ANY($1::bigint[]) ORDER BY contact_id, id DESC""",
            ids,
        )
    return [
        Orphan(contact_id=a["contact_id"], attempt_id=a["id"], origination_uuid=str(a["origination_uuid"]),
               node=a["node"], node_core_uuid=a["node_core_uuid"], ended=a["ended"], answered=a["answered"],
               hangup_cause=a["hangup_cause"])
        for a in attempts if a["outcome"] is None
    ]  # fmt: skip


async def mark_originated(conn: asyncpg.Connection, attempt_id: int) -> None:
    await conn.execute("UPDATE attempts SET originated_at = coalesce(originated_at, now()) WHERE id = $1", attempt_id)


class Report(BaseModel):
    name: str
    status: str
    contacts: int
    states: dict[str, int]
    attempts: int
    answered: int
    failed: int
    in_flight: int
    remaining: int
    last_minute: int
    abandoned: int = 0
    abandon_rate: float = 0.0  # abandoned / answered (abandoned included), last 24 h
    queue: str | None = None


async def report(conn: asyncpg.Connection, name: str) -> Report:
    campaign = await get_campaign(conn, name)
    states = {r["state"]: r["n"] for r in await conn.fetch(
        "SELECT state, count(*) AS n FROM contacts WHERE campaign_id = $1 GROUP BY state", campaign.id)}  # fmt: skip
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE outcome IS DISTINCT FROM 'not_originated') AS attempts,
                  count(*) FILTER (WHERE outcome = 'answered') AS answered,
                  count(*) FILTER (WHERE outcome IN ('busy', 'no_answer', 'failed', 'final', 'lost')) AS failed,
                  count(*) FILTER (WHERE ended_at IS NULL AND outcome IS DISTINCT FROM 'not_originated') AS in_flight,
                  count(*) FILTER (WHERE created_at > now() - interval '60 seconds'
                                   AND outcome IS DISTINCT FROM 'not_originated') AS last_minute,
                  count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned,
                  count(*) FILTER (WHERE outcome IN ('answered', 'abandoned')
                                   AND answered_at > now() - interval '24 hours') AS live_24h,
                  count(*) FILTER (WHERE outcome = 'abandoned'
                                   AND answered_at > now() - interval '24 hours') AS abandoned_24h
           FROM attempts WHERE campaign_id = $1""",
        campaign.id,
    )
    return Report(
        name=name, status=campaign.status, contacts=sum(states.values()), states=states, attempts=row["attempts"],
        answered=row["answered"], failed=row["failed"], in_flight=row["in_flight"],
        remaining=states.get("pending", 0) + states.get("dialing", 0), last_minute=row["last_minute"],
        abandoned=row["abandoned"], abandon_rate=row["abandoned_24h"] / row["live_24h"] if row["live_24h"] else 0.0,
        queue=campaign.queue,
    )  # fmt: skip


async def finish_if_done(conn: asyncpg.Connection, campaign_id: int) -> bool:
    """A running campaign with nobody left to call (nor a call to settle) is done. One dialling into a
    queue also waits for its calls to end: an answered call may still turn out abandoned (and be retried)."""
    done = await conn.execute(
        "UPDATE campaigns c SET status = 'done', updated_at = now() WHERE id = $1 AND status = 'running'"
        " AND NOT EXISTS (SELECT 1 FROM contacts WHERE campaign_id = $1 AND state IN ('pending', 'dialing'))"
        " AND (c.queue IS NULL OR NOT EXISTS (SELECT 1 FROM attempts a WHERE a.campaign_id = $1"
        " AND a.ended_at IS NULL AND a.outcome IS DISTINCT FROM 'not_originated'))",
        campaign_id,
    )
    return done == "UPDATE 1"


async def recent(conn: asyncpg.Connection, campaign_id: int) -> tuple[int, int, int]:
    """(attempts started in the last 10 s, attempts and answered in the last 5 min), every instance's."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE created_at > now() - interval '10 seconds') AS last10,
                  count(*) AS last300, count(*) FILTER (WHERE outcome = 'answered') AS answered
           FROM attempts WHERE campaign_id = $1 AND created_at > now() - interval '5 minutes'
             AND outcome IS DISTINCT FROM 'not_originated'""",
        campaign_id,
    )
    return int(row["last10"]), int(row["last300"]), int(row["answered"])


async def unseen_ends(conn: asyncpg.Connection, campaign_id: int, older_than: float, limit: int) -> list[Any]:
    """Answered calls with no recorded end for a while (their hangup was missed: every instance was
    down or disconnected from the node then): to be asked of their node, so max concurrent stays true."""
    return await conn.fetch(
        """SELECT id, origination_uuid::text AS uuid, node FROM attempts
           WHERE campaign_id = $1 AND ended_at IS NULL AND outcome IS NOT NULL AND node IS NOT NULL
             AND coalesce(answered_at, created_at) < now() - make_interval(secs => $2)
           ORDER BY id LIMIT $3""",
        campaign_id, older_than, limit,
    )  # fmt: skip


async def mark_ended(conn: asyncpg.Connection, attempt_id: int, cause: str) -> None:
    await conn.execute(
        "UPDATE attempts SET ended_at = now(), hangup_cause = coalesce(hangup_cause, $2) WHERE id = $1"
        " AND ended_at IS NULL",
        attempt_id, cause,
    )  # fmt: skip
