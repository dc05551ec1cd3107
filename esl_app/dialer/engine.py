"""``esl-app dialer``: one instance of the outbound dialer (gevent; Postgres through the asyncpg bridge).

Every round (``tick``), for each running campaign inside its calling window:

1. take up to ``batch`` tokens from the campaign's Redis token bucket (calls per second, shared by
   every instance); a campaign dialling into a queue also reserves one origination UUID per call its
   queue's idle agents allow (``AgentPacing``, the ratio and extra calls set by ``policy.progressive``);
2. claim that many due contacts (``FOR UPDATE SKIP LOCKED``, within max concurrent, do-not-call
   checked), writing each attempt row with its origination UUID in the same transaction;
3. originate each through the cluster on an outbound node; ``on_attempt`` writes the node (and its
   Core-UUID) on the row before the command is sent;
4. settle the attempt from the BACKGROUND_JOB (answered, or the cause); CHANNEL_HANGUP_COMPLETE,
   seen by every instance, records when and how each call ended.

An instance that dies leaves contacts ``dialing`` under a lease. Once it expires any instance
reconciles the last attempt: a recorded hangup settles it; a node that knows the UUID means the call
is up (settled at its hangup); a node that restarted since means it is lost; a node that never got
the command, or says the UUID does not exist and did not restart, means it was never placed: the
contact is dialled again, once.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid as uuidlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import gevent
import gevent.pool
import redis

from ..cluster import ClusterRegistry, ClusterSettings, OriginateAttempt, Originator, Role, socket_target
from ..cluster.originate import NO_NODE
from ..cluster.restart import Restart
from ..data.bridge import Bridge
from ..data.redis_tier import GeventConnection
from . import metrics, store
from .pacing import AgentPacing, TokenBucket, abandoned_key
from .policy import LOST_CAUSE, PURE_PROGRESSIVE, Progressive, classify, in_window, progressive
from .settings import DialerSettings

log = logging.getLogger("esl_app.dialer")
T = TypeVar("T")


class _NodePaced:
    """The registry as the Originator sees it, with ``pick`` skipping nodes whose share of calls per
    second (``node_cps`` x weight, one Redis bucket per node for every dialer) is spent this instant."""

    def __init__(self, registry: ClusterRegistry, bucket: TokenBucket, node_cps: float) -> None:
        self._registry, self._bucket, self._node_cps = registry, bucket, node_cps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def pick(self, role: Role | str, *, exclude: Any = ()) -> Any:
        skipped = set(exclude)
        while True:
            node = self._registry.pick(role, exclude=skipped)
            if node is None or not self._node_cps:
                return node
            if self._bucket.take(f"node:{node.name}", self._node_cps * node.weight, 1):
                return node
            skipped.add(node.name)

    def room(self, role: Role, wanted: int) -> int:
        """How many of ``wanted`` calls the eligible nodes' buckets could take now (looked at, not taken):
        the dialer claims no more contacts than the nodes can start, so none is claimed in vain."""
        if not self._node_cps:
            return wanted
        total = 0
        for status in self._registry.snapshot():
            if status.state != "up" or role.value not in status.roles or total >= wanted:
                continue
            rate = self._node_cps * status.weight
            got = self._bucket.take(f"node:{status.name}", rate, wanted - total)
            self._bucket.give_back(f"node:{status.name}", rate, got)
            total += got
        return total


class Dialer:
    def __init__(
        self,
        settings: DialerSettings,
        cluster_settings: ClusterSettings,
        dsn: str,
        schema: str,
        redis_url: str,
        *,
        redis_prefix: str = "esl:dialer:",
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.dsn, self.schema = dsn, schema
        # gevent sockets: waiting for Redis yields to the hub (the process is not monkey-patched)
        pool = redis.ConnectionPool.from_url(redis_url, connection_class=GeventConnection, socket_timeout=2.0,
                                             socket_connect_timeout=2.0)  # fmt: skip
        self.bucket = TokenBucket(redis.Redis(connection_pool=pool), redis_prefix)
        self.agents = AgentPacing(self.bucket.client, settings.queue_prefix)
        # campaign id -> its dial ratio and allowance of extra calls (queue campaigns, every reconcile round)
        self.progress: dict[int, Progressive] = {}
        self._unknown_queues: set[str] = set()
        self.bridge = Bridge(f"dialer-{self.name}")
        self.registry = ClusterRegistry(cluster_settings, client_factory=self._client_factory())
        self.paced = _NodePaced(self.registry, self.bucket, settings.node_cps)
        self.originator = Originator(self.paced)  # type: ignore[arg-type]
        self.pool: asyncpg.Pool | None = None
        self.campaigns: dict[int, store.Campaign] = {}
        self.dialing: dict[int, int] = {}  # contact id -> campaign id: originates in progress here
        # call uuid -> (campaign, contact, attempt, node): a dead instance's call, up, settled at its hangup
        self.adopted: dict[str, tuple[int, int, int, str]] = {}
        self.target = socket_target(settings.socket_host, settings.socket_port)
        self._greenlets: list[gevent.Greenlet] = []
        self._calls = gevent.pool.Group()  # one greenlet per attempt or hangup being recorded
        self.stopped = gevent.event.Event()

    # -- plumbing --------------------------------------------------------------------------------
    def _client_factory(self) -> Callable[..., Any]:
        from ..transport.inbound import InboundClient

        def factory(*args: Any, events: tuple[str, ...] = ("HEARTBEAT",), on_event: Any = None, **kw: Any) -> Any:
            # every instance hears every attempt's hangup: a dead instance's calls are still recorded
            def both(event: Any) -> None:
                if on_event is not None:
                    on_event(event)
                if event.name == "CHANNEL_HANGUP_COMPLETE" and event.get("variable_esl_app_attempt"):
                    self._calls.spawn(self._hangup, event)

            return InboundClient(*args, events=(*events, "CHANNEL_HANGUP_COMPLETE"), on_event=both, **kw)

        return factory

    def db(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on a pooled connection (asyncio thread); this greenlet waits."""

        async def run() -> T:
            assert self.pool is not None
            async with self.pool.acquire() as conn:
                return await fn(conn, *args, **kwargs)

        return self.bridge.run(run(), timeout=30.0)

    def start(self) -> Dialer:
        self.bridge.start()

        async def open_pool() -> asyncpg.Pool:
            server = {"search_path": self.schema, "application_name": f"esl-app dialer {self.name}"[:63]}
            return await asyncpg.create_pool(self.dsn, min_size=2, max_size=10, server_settings=server)

        self.pool = self.bridge.run(open_pool(), timeout=30)
        self.registry.on_restart(self._node_restarted)
        self.registry.start()
        self._refresh()
        for loop in (self._campaign_loop, self._pace_loop, self._renew_loop, self._reconcile_loop):
            self._greenlets.append(gevent.spawn(self._forever, loop))
        log.info("dialer %s started", self.name)
        return self

    def stop(self) -> None:
        gevent.killall(self._greenlets, block=True, timeout=2)
        # attempts still originating keep their rows and leases: reconciled like a crash's
        self._calls.kill(block=True, timeout=2)
        self.registry.stop()
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                self.bridge.run(pool.close(), timeout=5)
            except Exception:
                log.debug("pool close failed", exc_info=True)
        self.bridge.stop()
        self.stopped.set()

    def _forever(self, loop: Callable[[], float]) -> None:
        """Run one round of ``loop`` after another; a failing round is logged and retried."""
        while True:
            try:
                pause = loop()
            except Exception:
                log.exception("dialer %s: %s failed", self.name, loop.__name__)
                pause = 1.0
            gevent.sleep(pause)

    # -- campaigns -------------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.campaigns = {c.id: c for c in self.db(store.active_campaigns)}

    def _campaign_loop(self) -> float:
        self._refresh()
        return self.settings.status_refresh

    def _pace_loop(self) -> float:
        now = dt.datetime.now(dt.UTC)
        for campaign in list(self.campaigns.values()):
            if campaign.status != "running" or not in_window(campaign.schedule, campaign.timezone, now):
                continue
            key = f"campaign:{campaign.id}"
            wanted = self.paced.room(Role.OUTBOUND, self.settings.batch)
            granted = self.bucket.take(key, campaign.cps, wanted)
            allowed = granted
            if granted and campaign.tenant_cps:
                # the tenant's own rate (routing data's tenant_limits) binds all its campaigns together
                allowed = self.bucket.take(f"tenant:{campaign.tenant_id}", campaign.tenant_cps, granted)
            queue, uuids = campaign.queue, None
            if allowed and queue:
                uuids = self._reserve(campaign, queue, allowed)  # the calls its idle agents allow
            claimed: list[store.Claimed] = []
            blocked = 0
            try:
                if uuids is None or uuids:
                    claimed, blocked = self.db(store.claim, campaign, self.name, self.settings.lease,
                                               allowed if uuids is None else len(uuids), uuids)  # fmt: skip
            finally:
                self.bucket.give_back(key, campaign.cps, granted - len(claimed))
                if campaign.tenant_cps:
                    self.bucket.give_back(f"tenant:{campaign.tenant_id}", campaign.tenant_cps, allowed - len(claimed))
                if queue and uuids:
                    used = {c.origination_uuid for c in claimed}
                    self.agents.release(queue, *(u for u in uuids if u not in used))
            metrics.TOKENS.labels(campaign.name).inc(len(claimed))
            if blocked:
                metrics.DNC.labels(campaign.name).inc(blocked)
            for contact in claimed:
                self.dialing[contact.contact_id] = campaign.id
                self._calls.spawn(self._dial, campaign, contact)
        return self.settings.tick

    def _reserve(self, campaign: store.Campaign, queue: str, wanted: int) -> list[str]:
        """The origination UUIDs of the calls the campaign's queue has agents for now (reserved)."""
        plan = self.progress.get(campaign.id, PURE_PROGRESSIVE)
        # a reservation outlives the ring and the wait for an agent: then it is a dead dialer's
        ttl = campaign.ring_timeout + campaign.abandon_after + 10.0
        try:
            uuids = [str(uuidlib.uuid4()) for _ in range(wanted)]
            reading = self.agents.reserve(queue, plan.ratio, plan.extra, uuids, ttl)
        except redis.ResponseError as exc:
            if "NOQUEUE" not in str(exc):
                raise
            if queue not in self._unknown_queues:
                self._unknown_queues.add(queue)
                log.error("campaign %s: queue %r is not in Redis (esl-app queue load): not dialling",
                          campaign.name, queue)  # fmt: skip
            return []
        self._unknown_queues.discard(queue)
        metrics.QUEUE_IDLE.labels(campaign.name).set(reading.idle)
        return reading.granted

    # -- one attempt -----------------------------------------------------------------------------
    def _variables(self, campaign: store.Campaign, contact: store.Claimed) -> dict[str, object]:
        variables: dict[str, object] = {f"esl_app_var_{k}": v for k, v in contact.variables.items()}
        variables.update(
            esl_app_campaign=campaign.id, esl_app_contact=contact.contact_id, esl_app_attempt=contact.attempt_id,
            esl_app_flow=campaign.flow, origination_caller_id_number=campaign.caller_id_number,
            origination_caller_id_name=campaign.caller_id_name or campaign.caller_id_number,
            # +OK only once answered (not on early media): "placed" means "answered" for the policy
            ignore_early_media="true",
        )  # fmt: skip
        if campaign.queue:
            # what ``dialer.flow.into_queue`` needs: the queue, the abandon window and message
            variables.update(esl_app_queue=campaign.queue, esl_app_abandon_after=campaign.abandon_after,
                             esl_app_abandon_message=campaign.abandon_message or "")  # fmt: skip
        return variables

    def _dial(self, campaign: store.Campaign, contact: store.Claimed) -> None:
        metrics.IN_FLIGHT.labels(campaign.name).inc()
        try:
            self._dial_once(campaign, contact)
        except Exception:
            # the row stays without an outcome: reconciliation settles it once the lease is released
            log.exception("dialer %s: attempt %s failed", self.name, contact.attempt_id)
            self.db(store.release, contact.contact_id)
        finally:
            self.dialing.pop(contact.contact_id, None)
            metrics.IN_FLIGHT.labels(campaign.name).dec()

    def _dial_once(self, campaign: store.Campaign, contact: store.Claimed) -> None:
        def written_down(attempt: OriginateAttempt) -> None:
            # before the command reaches the node: a crash after this line is reconciled against that node
            core = self.registry.health(attempt.node).core_uuid
            self.db(store.mark_sent, contact.attempt_id, attempt.node, core)

        result = self.originator.originate(
            f"{campaign.gateway}/{contact.number}", self.target, role=Role.OUTBOUND,
            variables=self._variables(campaign, contact), timeout=campaign.ring_timeout,
            origination_uuid=contact.origination_uuid, on_attempt=written_down,
        )  # fmt: skip
        node = result.node or "-"
        if result.status == "placed":
            self.db(store.settle, campaign, contact.attempt_id, "answered", None, answered=True, ended=False)
            metrics.ATTEMPTS.labels(campaign.name, node, "answered").inc()
        elif result.status == "failed" and all(a.outcome in ("refused", "not_sent") for a in result.attempts):
            # no node created the call (NO_NODE_AVAILABLE, every node refused): not an attempt
            self.db(store.not_originated, contact.attempt_id, result.cause or NO_NODE)
            metrics.NOT_ORIGINATED.labels(campaign.name).inc()
            if campaign.queue:
                self.agents.release(campaign.queue, contact.origination_uuid)
        elif result.status == "failed":
            if campaign.queue:
                self.agents.release(campaign.queue, contact.origination_uuid)
            outcome = classify(result.cause)
            self.db(store.settle, campaign, contact.attempt_id, outcome, result.cause, answered=False, ended=True)
            metrics.ATTEMPTS.labels(campaign.name, node, outcome).inc()
        else:
            log.warning("dialer %s: attempt %s on %s unknown (%s): reconciling", self.name, contact.attempt_id,
                        node, result.detail)  # fmt: skip
            self.db(store.release, contact.contact_id)

    # -- events ----------------------------------------------------------------------------------
    def _hangup(self, event: Any) -> None:
        call_uuid = event.get("Unique-ID") or ""
        cause = event.get("Hangup-Cause") or "NORMAL_CLEARING"
        answered = (event.get("Caller-Channel-Answered-Time") or "0") not in ("", "0")
        try:
            # the call's own variables: a queue call's abandon is recorded even for a campaign stopped meanwhile
            queue = event.get("variable_esl_app_queue")
            marked = bool(queue) and self._marked_abandoned(call_uuid)
            if self.db(store.record_hangup, call_uuid, cause, answered, marked) and marked:
                self._count_abandon(_int(event.get("variable_esl_app_campaign")), call_uuid)
            if queue:
                self.agents.release(queue, call_uuid)
            adopted = self.adopted.pop(call_uuid, None)
            if adopted is not None:
                campaign = self.campaigns.get(adopted[0])
                if campaign is not None:
                    outcome = classify(cause, answered=answered)
                    self.db(store.settle, campaign, adopted[2], outcome, cause, answered=answered, ended=True)
        except Exception:
            log.exception("dialer %s: recording the hangup of %s failed", self.name, call_uuid)

    def _marked_abandoned(self, call_uuid: str) -> bool:
        """Its flow found no agent in time (``dialer.flow.into_queue`` set the mark before the message)."""
        return bool(self.agents.client.exists(abandoned_key(self.agents.prefix, call_uuid)))

    def _count_abandon(self, campaign_id: int, call_uuid: str) -> None:
        known = self.campaigns.get(campaign_id)
        name = known.name if known else str(campaign_id)
        metrics.ABANDONED.labels(name).inc()
        log.info("campaign %s: call %s abandoned (no agent in time)", name, call_uuid)

    def _node_restarted(self, restart: Restart) -> None:
        ended = self.db(store.node_restarted, restart.node, restart.new_core_uuid)
        for call_uuid, (campaign_id, _, attempt_id, node) in list(self.adopted.items()):
            campaign = self.campaigns.get(campaign_id)
            if node == restart.node and campaign is not None:
                # adopted calls have no outcome yet; their node died with them: no hangup will come
                self.adopted.pop(call_uuid, None)
                self.db(store.settle, campaign, attempt_id, "lost", LOST_CAUSE, answered=False, ended=True)
        if ended:
            log.warning("dialer %s: node %s restarted: %d call(s) ended with it", self.name, restart.node, ended)

    # -- leases and reconciliation ---------------------------------------------------------------
    def _renew_loop(self) -> float:
        ids = list(self.dialing) + [contact for _, contact, _, _ in self.adopted.values()]
        self.db(store.renew, ids, self.name, self.settings.lease)
        return self.settings.lease / 3

    def _reconcile_loop(self) -> float:
        for campaign in list(self.campaigns.values()):
            for orphan in self.db(store.orphans, campaign.id, self.name, self.settings.lease, 200):
                if orphan.contact_id in self.dialing:
                    continue  # ours and still originating (a lease renewal came late)
                self._reconcile(campaign, orphan)
            self.db(store.finish_if_done, campaign.id)
            self._measure(campaign)
            self._sweep_unseen_ends(campaign)
        return self.settings.reconcile_interval

    def _sweep_unseen_ends(self, campaign: store.Campaign) -> None:
        for row in self.db(store.unseen_ends, campaign.id, self.settings.unseen_end_after, 50):
            if row["node"] not in self.registry.monitors or self.registry.state(row["node"]).value == "down":
                continue
            if self.registry.call_exists(row["node"], row["uuid"], timeout=2.0) is False:
                self.db(store.mark_ended, row["id"], "END_NOT_SEEN")

    def _measure(self, campaign: store.Campaign) -> None:
        last10, last300, answered = self.db(store.recent, campaign.id)
        metrics.ANSWER_RATIO.labels(campaign.name).set(answered / last300 if last300 else 0.0)
        if campaign.status == "running":
            metrics.PACING_ERROR.labels(campaign.name).set((last10 - campaign.cps * 10) / (campaign.cps * 10))
        if campaign.queue:
            answered_calls, abandoned = self.db(store.abandon_counts, campaign.id, self.settings.abandon_window)
            plan = progressive(campaign.dial_ratio, answered_calls, abandoned, campaign.max_abandon_rate)
            self.progress[campaign.id] = plan
            metrics.ABANDON_RATE.labels(campaign.name).set(plan.rate)
            metrics.DIAL_RATIO.labels(campaign.name).set(plan.ratio if plan.extra else 1.0)

    def _reconcile(self, campaign: store.Campaign, orphan: store.Orphan) -> None:
        queued = orphan.ended and orphan.answered and campaign.queue is not None
        if queued and self._marked_abandoned(orphan.origination_uuid):
            # its flow marked it abandoned; the hangup was recorded by an instance that died before settling
            if self.db(store.abandon, orphan.origination_uuid):
                self._count_abandon(campaign.id, orphan.origination_uuid)
            return
        if orphan.ended:
            outcome = classify(orphan.hangup_cause, answered=orphan.answered)
            self.db(store.settle, campaign, orphan.attempt_id, outcome, orphan.hangup_cause,
                    answered=orphan.answered, ended=True)  # fmt: skip
            log.info("reconciled attempt %s: ended %s (%s)", orphan.attempt_id, orphan.hangup_cause, outcome)
            return
        if orphan.node is None or orphan.node not in self.registry.monitors:
            # the originate was never sent to any node
            self.db(store.not_originated, orphan.attempt_id, "dialer died before sending")
            log.info("reconciled attempt %s: never sent, dialling again", orphan.attempt_id)
            return
        exists = self.registry.call_exists(orphan.node, orphan.origination_uuid, timeout=2.0)
        if exists is None:
            return  # the node cannot be asked now: the lease runs out again and the next round asks
        if exists:
            self.db(store.mark_originated, orphan.attempt_id)
            self.adopted[orphan.origination_uuid] = (campaign.id, orphan.contact_id, orphan.attempt_id, orphan.node)
            log.info("reconciled attempt %s: up on %s, settled at its hangup", orphan.attempt_id, orphan.node)
            return
        core = self.registry.health(orphan.node).core_uuid
        if orphan.node_core_uuid is not None and core is not None and core != orphan.node_core_uuid:
            self.db(store.settle, campaign, orphan.attempt_id, "lost", LOST_CAUSE, answered=False, ended=True)
            log.info("reconciled attempt %s: %s restarted since, the call is lost", orphan.attempt_id, orphan.node)
            return
        # the node is the same and does not know the UUID, no hangup was recorded: never placed
        if self.db(store.not_originated, orphan.attempt_id, f"{orphan.node} does not know the call"):
            log.info("reconciled attempt %s: not on %s, dialling again", orphan.attempt_id, orphan.node)


def _int(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0
