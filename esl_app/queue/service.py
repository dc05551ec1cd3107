"""The ACD's live state in Redis, from greenlets: joins, leaves, offer outcomes, agent status, and the
offers themselves, delivered to the process that holds the caller.

Every event that can make a pair (a caller joins, an agent logs in, ends a call or its wrap-up, a
caller leaves an agent reserved) runs one Lua script that chooses the pairs atomically
(``scripts.py``) and PUBLISHes each one. The process that ran the script hands its own callers their
offer at once; every process also subscribes to the offers channel, so a caller waiting in another
process (or host) is woken by the message within a Redis round trip. Nothing polls for offers: a
wrap-up's end is a timer in the process that started it, and a slow sweep (``sweep_interval``) only
catches what a dead process left behind (its wrap-up timers, leases of offers it held, callers whose
lease ran out).

A waiting caller is vouched for by the process that holds it: every third of ``caller_lease_seconds``
one script renews the lease of all its callers. When that process dies, its callers keep their places
for the rest of the lease, long enough for FreeSWITCH to bring the call back through the dialplan's
next ``socket`` (the hold music is played in slices of ``hold_slice_seconds`` so it ends by itself);
the call then joins again with its own UUID and waits where it was. A caller that never comes back is
removed by the sweep (``expired``), and is never offered once its lease ran out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Literal

import gevent
import redis
from gevent.event import Event
from pydantic import BaseModel

from ..data.redis_tier import GeventConnection
from . import scripts
from .config import AcdConfig, skills_text

log = logging.getLogger("esl_app.queue")

AgentStatus = Literal["Available", "On Break", "Logged Out"]
LeaveReason = Literal["abandoned", "timeout", "exit"]
AGENT_STATUSES: tuple[str, ...] = ("Available", "On Break", "Logged Out")

_current: QueueService | None = None


class QueueError(Exception):
    """A queue or agent that is not configured, or a queue operation refused."""


class Offer(BaseModel):
    caller: str
    agent: str  # a ring-all offer: all its agents, comma-separated ("a1,a2,a3"), in tier order
    contact: str  # likewise their contacts, in the same order
    queue: str
    t_event: float  # wall time of the event that made the pair (its process's clock)
    kind: str  # join, free, requeue
    seq: int  # unique per offer

    @classmethod
    def parse(cls, message: str | bytes) -> Offer:
        text = message.decode() if isinstance(message, bytes) else message
        caller, agent, contact, queue, t_event, kind, seq = text.split("|")
        return cls(caller=caller, agent=agent, contact=contact, queue=queue, t_event=float(t_event), kind=kind,
                   seq=int(seq))  # fmt: skip

    @property
    def legs(self) -> list[tuple[str, str]]:
        """(agent, contact) per agent the offer rings: one, or every agent of a ring-all."""
        return list(zip(self.agent.split(","), self.contact.split(","), strict=True))

    def answered_by(self, agent: str) -> Offer:
        """This offer as the one agent who answered a ring-all holds it: what ``offer_outcome`` reports on."""
        contact = dict(self.legs)[agent]
        return self.model_copy(update={"agent": agent, "contact": contact})


class JoinResult(BaseModel):
    position: int  # 1-based place in the queue; 0 when it was offered at once
    joined_ms: int
    now_ms: int
    conf: dict[str, str]
    seq: int = 0  # offers up to this sequence number were made before this join: void for this caller


class Estimate(BaseModel):
    """What a waiting caller is told: its place, and how long it may still wait (None: no basis for
    a figure, no handle times yet or no agent available)."""

    position: int  # 1-based among the callers waiting; 0 when not waiting (being offered)
    seconds: float | None


class Waiter:
    """A caller waiting in this process: the offer arrives here (set once per offer)."""

    def __init__(self, caller: str) -> None:
        self.caller = caller
        self.queue: str | None = None  # set by join: the lease this process renews
        self.min_seq = 0  # offers up to this one are void (made before this caller joined again)
        self.lost = False  # the lease was found gone (this process stalled past it): join again
        self.offer: Offer | None = None
        self.event = Event()
        self.seen: set[int] = set()

    def deliver(self, offer: Offer) -> None:
        # each offer comes twice to the process that made it (directly, then by message): act once
        if offer.seq not in self.seen and offer.seq > self.min_seq:
            self.seen.add(offer.seq)
            self.offer = offer
            self.event.set()

    def take(self) -> Offer | None:
        offer, self.offer = self.offer, None
        self.event.clear()
        return offer


def current_service() -> QueueService:
    if _current is None:
        raise QueueError("no QueueService is running in this process (QueueService(...).start())")
    return _current


class QueueService:
    def __init__(
        self,
        redis_url: str,
        prefix: str = "esl-app:",
        *,
        sweep_interval: float = 1.0,
        lease_seconds: float = 60.0,
        caller_ttl_seconds: float = 86400.0,
        caller_lease_seconds: float = 45.0,
        hold_slice_seconds: int = 20,
        handle_samples: int = 20,
        latency_key: str | None = None,
    ) -> None:
        if hold_slice_seconds < 2:
            # FreeSWITCH ignores playback_timeout_sec below 2 (switch_ivr_play_file: "tmp > 1")
            raise QueueError(f"hold_slice_seconds must be at least 2, not {hold_slice_seconds!r}")
        if caller_lease_seconds <= 0 or handle_samples < 1:
            raise QueueError("caller_lease_seconds must be > 0 and handle_samples >= 1")
        self.prefix = prefix
        self.sweep_interval = sweep_interval
        self.lease_seconds = lease_seconds
        self.caller_ttl_ms = int(caller_ttl_seconds * 1000)
        # a caller's place outlives its process for this long: renewed every third of it, it must
        # cover a slice of music running on with nobody listening, plus the reconnect
        self.caller_lease_seconds = caller_lease_seconds
        self.hold_slice_seconds = int(hold_slice_seconds)
        self.handle_samples = handle_samples
        if caller_lease_seconds * 2 / 3 < hold_slice_seconds + 2:
            log.warning("caller_lease_seconds %.1f is short for hold_slice_seconds %d: a caller whose worker"
                        " died may lose its place before its call comes back", caller_lease_seconds,
                        hold_slice_seconds)  # fmt: skip
        # where a benchmark collects (kind, seconds) samples: event -> bridge execute written
        self.latency_key = latency_key
        pool = redis.ConnectionPool.from_url(redis_url, connection_class=GeventConnection, socket_timeout=10,
                                             socket_connect_timeout=5, max_connections=256)  # fmt: skip
        self.client = redis.Redis(connection_pool=pool)
        # the subscriber waits for messages indefinitely: its own connection, no read timeout
        self._sub_pool = redis.ConnectionPool.from_url(redis_url, connection_class=GeventConnection,
                                                       socket_timeout=None, socket_connect_timeout=5)  # fmt: skip
        self._join = self.client.register_script(scripts.JOIN)
        self._leave = self.client.register_script(scripts.LEAVE)
        self._offer = self.client.register_script(scripts.OFFER)
        self._ring = self.client.register_script(scripts.RING)
        self._agent_status = self.client.register_script(scripts.AGENT_STATUS)
        self._wake = self.client.register_script(scripts.WAKE)
        self._alive = self.client.register_script(scripts.ALIVE)
        self._reap = self.client.register_script(scripts.REAP)
        self.waiters: dict[str, Waiter] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._subscribed = Event()
        self.offers_seen = 0
        self._conf: dict[str, tuple[float, dict[str, str]]] = {}  # queue -> (read at, conf), for 5 s

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def channel(self) -> str:
        return self.prefix + "acd:offers"

    def start(self, install: bool = True) -> QueueService:
        """Subscribe to offers and start the sweep; ``install`` makes it this process's ``call.enqueue`` service."""
        global _current
        self._greenlets.append(gevent.spawn(self._subscriber))
        self._greenlets.append(gevent.spawn(self._keeper))
        if self.sweep_interval > 0:
            self._greenlets.append(gevent.spawn(self._sweeper))
        if not self._subscribed.wait(10):
            raise QueueError("could not subscribe to the offers channel in Redis")
        if install:
            _current = self
        return self

    def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
        gevent.killall(self._greenlets, timeout=2)
        self._greenlets.clear()
        self.client.close()
        self._sub_pool.disconnect()

    def _subscriber(self) -> None:
        while True:
            pubsub = redis.client.PubSub(self._sub_pool, ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                pubsub.get_message(timeout=5)  # the subscribe confirmation
                self._subscribed.set()
                while True:
                    message = pubsub.get_message(timeout=None)
                    if message and message["type"] == "message":
                        self._deliver([message["data"]])
            except gevent.GreenletExit:
                pubsub.close()
                raise
            except Exception as exc:
                log.warning("offers subscription lost (%s): resubscribing", exc)
                pubsub.close()
                gevent.sleep(0.2)
                self.wake_all()  # what was published meanwhile is offered again by the sweep's rules

    def _sweeper(self) -> None:
        while True:
            gevent.sleep(self.sweep_interval)
            try:
                self.reap_all()
                self.wake_all()
            except Exception as exc:
                log.warning("queue sweep failed: %s", exc)

    def _keeper(self) -> None:
        while True:
            gevent.sleep(self.caller_lease_seconds / 3)
            try:
                self.keep_alive()
            except Exception as exc:  # Redis away: the next round renews (a lease spans three)
                log.warning("renewing the callers' leases failed: %s", exc)

    def keep_alive(self) -> None:
        """Renew the lease of every caller this process holds (one script for all of them)."""
        held = [(w.queue, w) for w in list(self.waiters.values()) if w.queue]
        if not held:
            return
        args: list[str | int] = [self.prefix, int(self.caller_lease_seconds * 1000)]
        for queue, waiter in held:
            args += [queue, waiter.caller]  # type: ignore[list-item]
        for caller in self._alive(args=args):
            waiter = self.waiters.get(caller.decode())
            if waiter is not None:
                log.warning("%s: its queue lease ran out while it was held here: it joins again", waiter.caller)
                waiter.lost = True
                waiter.event.set()

    def reap_all(self) -> int:
        """Remove the waiting callers whose lease ran out; returns how many."""
        queues = sorted(q.decode() for q in self.client.smembers(self.prefix + "acd:queues"))
        return int(self._reap(args=[self.prefix, *queues])) if queues else 0

    # -- offers --------------------------------------------------------------------------------------
    def _deliver(self, messages: Iterable[str | bytes]) -> None:
        for message in messages:
            # every process gets every offer: one for a caller held elsewhere is not even parsed
            text = message.decode() if isinstance(message, bytes) else message
            waiter = self.waiters.get(text.partition("|")[0])
            if waiter is not None:
                self.offers_seen += 1
                waiter.deliver(Offer.parse(text))

    def register(self, caller: str) -> Waiter:
        waiter = self.waiters[caller] = Waiter(caller)
        return waiter

    def unregister(self, caller: str, waiter: Waiter | None = None) -> None:
        """Stop holding ``caller`` (``waiter``: only if it is still that one: the same call may already
        wait again through another connection of this process)."""
        if waiter is None or self.waiters.get(caller) is waiter:
            self.waiters.pop(caller, None)

    def record_latency(self, offer: Offer, seconds: float) -> None:
        if self.latency_key:
            self.client.rpush(self.latency_key, f"{offer.kind} {seconds:.6f}")

    # -- callers -------------------------------------------------------------------------------------
    def join(self, caller: str, queue: str, *, priority: int = 0, skills: dict[str, int] | None = None) -> JoinResult:
        if not 0 <= int(priority) <= 9:
            raise QueueError(f"priority must be 0..9 (9 is served first), not {priority!r}")
        try:
            result = self._join(args=[self.prefix, caller, queue, int(priority), skills_text(skills or {}),
                                      f"{time.time():.6f}", self.caller_ttl_ms,
                                      int(self.caller_lease_seconds * 1000)])  # fmt: skip
        except redis.ResponseError as exc:
            if "NOQUEUE" in str(exc):
                raise QueueError(f"unknown queue {queue!r}") from None
            raise
        position, joined, now, seq, *offers = result
        waiter = self.waiters.get(caller)
        if waiter is not None:
            waiter.queue, waiter.lost, waiter.min_seq = queue, False, int(seq)
            if waiter.offer is not None and waiter.offer.seq <= int(seq):
                waiter.take()  # by message, for the process that held this caller before it joined again
        self._deliver(offers)
        return JoinResult(position=int(position), joined_ms=int(joined), now_ms=int(now), conf=self.queue_conf(queue),
                          seq=int(seq))  # fmt: skip

    def queue_conf(self, queue: str) -> dict[str, str]:
        """The queue's settings as published (cached 5 s: an offer doesn't wait for a read)."""
        cached = self._conf.get(queue)
        if cached is None or time.monotonic() - cached[0] > 5.0:
            raw = self.client.hgetall(self._qkey(queue, "conf"))
            cached = self._conf[queue] = (time.monotonic(), {k.decode(): v.decode() for k, v in raw.items()})
        return cached[1]

    def caller_state(self, caller: str) -> str | None:
        """waiting, offered or bridged; None for a caller not (or no longer) in a queue."""
        state = self.client.hget(self.prefix + "acd:caller:" + caller, "state")
        return state.decode() if state else None

    def record_handle_time(self, queue: str, seconds: float) -> None:
        """An answered call's handle time (talk, plus the queue's wrap-up): the last ``handle_samples``
        are kept for the estimated wait."""
        key = self._qkey(queue, "handle")
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, f"{max(0.0, seconds):.3f}")
        pipe.ltrim(key, 0, self.handle_samples - 1)
        pipe.execute()

    def estimate(self, queue: str, caller: str) -> Estimate:
        """The caller's place and estimated wait: position x average handle time / available agents
        (the average over the queue's last ``handle_samples`` answered calls; available: the queue's
        agents whose status is Available, whatever their state). Agents free up at about
        available / AHT per second, and the caller needs ``position`` of them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrank(self._qkey(queue, "waiting"), caller)
        pipe.lrange(self._qkey(queue, "handle"), 0, -1)
        pipe.zrange(self._qkey(queue, "tiers"), 0, -1)
        rank, handles, agents = pipe.execute()
        position = 0 if rank is None else int(rank) + 1
        if not position or not handles or not agents:
            return Estimate(position=position, seconds=None)
        pipe = self.client.pipeline(transaction=False)
        for agent in agents:
            pipe.hget(self.prefix + "acd:agent:" + agent.decode(), "status")
        available = sum(1 for status in pipe.execute() if status == b"Available")
        if not available:
            return Estimate(position=position, seconds=None)
        average = sum(float(h) for h in handles) / len(handles)
        return Estimate(position=position, seconds=math.ceil(position * average / available))

    def leave(self, caller: str, reason: LeaveReason) -> bool:
        known, *offers = self._leave(args=[self.prefix, caller, reason, f"{time.time():.6f}"])
        self._deliver(offers)
        return bool(known)

    def offer_outcome(
        self,
        offer: Offer,
        outcome: Literal["connected", "ended", "no_answer", "renew"],
        *,
        in_sl: bool = False,
        at: float | None = None,
        handle_seconds: float | None = None,
    ) -> bool:
        """Report what became of an offer; False when the agent no longer holds this caller. ``at``: when
        it happened (wall time, e.g. FreeSWITCH's event), for the latency of the offer it makes.
        ``handle_seconds``: recorded as ``record_handle_time`` does, in the same round trip."""
        t_event = time.time() if at is None else at
        args = [self.prefix, offer.caller, offer.agent, outcome, f"{t_event:.6f}", "1" if in_sl else "0"]
        if handle_seconds is not None:
            args += [f"{max(0.0, handle_seconds):.3f}", str(self.handle_samples), offer.queue]
        first, *offers = self._offer(args=args)
        self._deliver(offers)
        if outcome == "ended" and int(first) > 0:
            wrap = (int(first) - int(time.time() * 1000)) / 1000
            # the wrap-up's end is an event too: offer the agent's next caller then (the sweep is the backstop)
            gevent.spawn_later(max(0.0, wrap) + 0.002, self._wrap_up_ended, offer.agent)
        return int(first) >= 0

    def ring_outcome(
        self,
        offer: Offer,
        outcome: Literal["connected", "no_answer", "renew"],
        *,
        winner: str = "",
        failed: Iterable[str] = (),
        in_sl: bool = False,
    ) -> bool:
        """Report what became of a ring-all offer: ``connected`` to ``winner`` (the others Idle at once,
        but the ``failed`` ones, whose own leg failed, get the no-answer handling), ``no_answer`` (all
        of them get it, the caller goes back to its place) or ``renew`` (the leases, while ringing).
        False when the winner no longer held this caller."""
        args = [self.prefix, offer.caller, outcome, winner, f"{time.time():.6f}", "1" if in_sl else "0",
                ",".join(failed), offer.agent]  # fmt: skip
        first, *offers = self._ring(args=args)
        self._deliver(offers)
        return int(first) >= 0

    # -- agents --------------------------------------------------------------------------------------
    def set_agent_status(self, agent: str, status: AgentStatus) -> None:
        if status not in AGENT_STATUSES:
            raise QueueError(f"agent status must be one of {AGENT_STATUSES}, not {status!r}")
        try:
            offers = self._agent_status(args=[self.prefix, agent, status, f"{time.time():.6f}"])
        except redis.ResponseError as exc:
            if "NOAGENT" in str(exc):
                raise QueueError(f"unknown agent {agent!r}") from None
            raise
        self._deliver(offers)

    def login(self, agent: str) -> None:
        self.set_agent_status(agent, "Available")

    def logout(self, agent: str) -> None:
        self.set_agent_status(agent, "Logged Out")

    def take_break(self, agent: str) -> None:
        self.set_agent_status(agent, "On Break")

    def agent(self, agent: str) -> dict[str, str]:
        raw = self.client.hgetall(self.prefix + "acd:agent:" + agent)
        if not raw:
            raise QueueError(f"unknown agent {agent!r}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def wake_agent(self, agent: str) -> None:
        queues = sorted(q.decode() for q in self.client.smembers(self.prefix + "acd:agentq:" + agent))
        if queues:
            self._deliver(self._wake(args=[self.prefix, f"{time.time():.6f}", *queues]))

    def _wrap_up_ended(self, agent: str) -> None:
        try:
            self.wake_agent(agent)
        except Exception as exc:  # Redis away or the service stopped: the sweep of any process catches up
            log.warning("offer after %s's wrap-up failed: %s", agent, exc)

    def wake_all(self) -> None:
        queues = sorted(q.decode() for q in self.client.smembers(self.prefix + "acd:queues"))
        if queues:
            self._deliver(self._wake(args=[self.prefix, f"{time.time():.6f}", *queues]))

    # -- configuration and status ------------------------------------------------------------------
    def _qkey(self, queue: str, part: str) -> str:
        return f"{self.prefix}acd:q:{queue}:{part}"

    def publish_config(self, config: AcdConfig) -> None:
        """Copy the configuration (from Postgres, ``load_config``) into Redis, in one transaction. Live
        state (status, state, waiting callers) is kept; tiers and skills are replaced."""
        pipe = self.client.pipeline(transaction=True)
        lease_ms = int(self.lease_seconds * 1000)
        for q in config.queues:
            pipe.sadd(self.prefix + "acd:queues", q.name)
            pipe.hset(self._qkey(q.name, "conf"), mapping={
                "strategy": q.strategy, "max_wait_ms": q.max_wait_seconds * 1000, "wrap_ms": q.wrap_up_seconds * 1000,
                "ring_s": q.ring_seconds, "na_delay_ms": q.no_answer_delay_seconds * 1000,
                "max_na": q.max_no_answer, "music": q.music, "announcement": q.announcement or "",
                "announce_every_ms": (q.announce_every_seconds or 0) * 1000, "lease_ms": lease_ms,
            })  # fmt: skip
            pipe.delete(self._qkey(q.name, "tiers"))
        for a in config.agents:
            key = self.prefix + "acd:agent:" + a.id
            pipe.hset(key, mapping={"contact": a.contact, "skills": skills_text(a.skills), "name": a.name})
            pipe.hsetnx(key, "status", "Logged Out")
            pipe.hsetnx(key, "state", "Idle")
            pipe.delete(self.prefix + "acd:agentq:" + a.id)
        for t in config.tiers:
            pipe.zadd(self._qkey(t.queue, "tiers"), {t.agent: t.score})
            pipe.sadd(self.prefix + "acd:agentq:" + t.agent, t.queue)
        pipe.execute()
        self.wake_all()

    def queue_status(self, queue: str) -> dict[str, object]:
        """Waiting callers, longest wait, counters and the states of the queue's agents."""
        conf = self.client.hgetall(self._qkey(queue, "conf"))
        if not conf:
            raise QueueError(f"unknown queue {queue!r}")
        now_s, now_us = self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        waiting = [c.decode() for c in self.client.zrange(self._qkey(queue, "waiting"), 0, -1)]
        joined = [self.client.hget(self.prefix + "acd:caller:" + c, "joined") for c in waiting]
        longest = max((now_ms - int(j) for j in joined if j), default=0) / 1000
        stats = {k.decode(): int(v) for k, v in self.client.hgetall(self._qkey(queue, "stats")).items()}
        agents = {}
        for agent in self.client.zrange(self._qkey(queue, "tiers"), 0, -1):
            raw = self.client.hgetall(self.prefix + "acd:agent:" + agent.decode())
            a = {k.decode(): v.decode() for k, v in raw.items()}
            state = a.get("state", "Idle")
            if state == "Wrap-up" and int(a.get("wrap_until", "0")) <= now_ms:
                state = "Idle"
            agents[agent.decode()] = {"status": a.get("status", "Logged Out"), "state": state}
        return {"queue": queue, "waiting": len(waiting), "longest_wait_seconds": longest, "callers": waiting,
                "stats": stats, "agents": agents}  # fmt: skip
