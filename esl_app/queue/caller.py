"""The caller's side of a queue: ``call.enqueue("support")`` waits with music until an agent is
offered, bridges the caller's own session to the agent, and returns how it ended.

While the caller waits, music plays (one ``playback`` at a time, looped here). An offer stops it with
``api uuid_break`` and the bridge execute is written at once, behind the broken playback (event-lock
keeps the order). The caller leaves at max wait (outcome ``timeout``: the flow plays its fallback),
on an exit digit (``exit``) or by hanging up (``abandoned``): the leave script removes it from Redis
at once, and frees an agent that was being offered to it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

import gevent
from gevent.event import Event
from pydantic import BaseModel

from ..call import BridgeResult
from ..errors import CallEnded, CommandError, CommandTimeout, UnsafeArgumentError
from .service import Offer, QueueService, current_service

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger("esl_app.queue")

QueueOutcomeKind = Literal["answered", "timeout", "exit", "abandoned"]
SERVICE_LEVEL_SECONDS = 20.0  # answered within this many seconds of joining counts toward the service level


class QueueOutcome(BaseModel):
    outcome: QueueOutcomeKind
    queue: str
    waited: float  # seconds from joining to leaving the queue (to the answered offer's bridge)
    agent: str | None = None  # the agent who answered
    digit: str | None = None  # the exit digit pressed
    offers: int = 0  # offers made to this caller (no-answers included)
    bridge: BridgeResult | None = None
    bridged_at: float | None = None  # wall time the answered offer's bridge execute was written
    bridge_ended_at: float | None = None  # wall time that bridge returned (before the agent was freed)


class _Music:
    """Music on hold: ``playback`` looped until stopped; ``stop`` breaks the one playing."""

    def __init__(self, call: Call, source: str) -> None:
        self.call = call
        self.source = source
        self.stopped = False
        self.playing = False
        self.greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while not self.stopped:
            self.playing = True
            try:
                # nobody waits on the music's completion: no LF waker writes (60 per playback, spec 9)
                self.call.execute("playback", self.source, wake=False)
            except (CallEnded, CommandError, CommandTimeout):
                return
            finally:
                self.playing = False

    def stop(self) -> None:
        """Break the playback without waiting: the bridge is written at once and FreeSWITCH queues it
        behind the playback (event-lock), which the break then ends. A break that reaches FreeSWITCH
        before the playback's sendmsg started breaks nothing, so it is repeated, from a greenlet,
        until the music's last playback has completed."""
        if self.stopped:
            return
        self.stopped = True
        if self.playing:
            gevent.spawn(self._until_stopped)

    def _break(self) -> bool:
        if not self.call.is_up:
            return False
        try:
            self.call.api("uuid_break", self.call.uuid)
            return True
        except (CallEnded, CommandError, CommandTimeout) as exc:
            log.debug("%s: uuid_break of the music: %s", self.call.uuid, exc)
            return False

    def _until_stopped(self) -> None:
        if not self._break():
            return
        for _ in range(100):
            self.greenlet.join(timeout=0.05)
            if self.greenlet.dead or not self._break():
                return


def enqueue(
    call: Call,
    queue: str,
    *,
    priority: int = 0,
    skills: dict[str, int] | None = None,
    max_wait: float | None = None,
    exit_digits: str = "",
    music: str | None = None,
    service: QueueService | None = None,
) -> QueueOutcome:
    service = service or current_service()
    if call.mode != "async" or not call.session.full:
        # the music is stopped with api uuid_break and exit digits come as events: neither on a static socket
        raise UnsafeArgumentError("enqueue needs an async socket with 'full' (socket '<host>:<port> async full')")
    if exit_digits and not all(d in "0123456789*#" for d in exit_digits):
        raise UnsafeArgumentError(f"exit digits must be DTMF digits, not {exit_digits!r}")
    caller = call.uuid
    waiter = service.register(caller)
    hung_up = call.session.hung_up
    digit_pressed = Event()
    pressed: list[str] = []
    music_player: _Music | None = None
    watcher: gevent.Greenlet | None = None
    offers = 0
    started = time.monotonic()
    left = False

    def watch_digits() -> None:
        while True:
            try:
                digit = call.session.next_dtmf(3600)
            except CallEnded:
                return
            if digit and digit in exit_digits:
                pressed.append(digit)
                digit_pressed.set()
                return

    def leave(reason: Literal["abandoned", "timeout", "exit"]) -> QueueOutcome:
        nonlocal left
        left = True
        service.leave(caller, reason)
        return QueueOutcome(outcome=reason, queue=queue, waited=time.monotonic() - started,
                            digit=pressed[0] if pressed else None, offers=offers)  # fmt: skip

    try:
        joined = service.join(caller, queue, priority=priority, skills=skills)
        conf = joined.conf
        limit = max_wait if max_wait is not None else int(conf.get("max_wait_ms", "300000")) / 1000
        # a caller reconnected after its worker died keeps its join time, and so its max wait
        deadline = started + limit - max(0, joined.now_ms - joined.joined_ms) / 1000
        ring = int(conf.get("ring_s", "20"))
        source = music or conf.get("music") or "local_stream://moh"
        if exit_digits:
            watcher = gevent.spawn(watch_digits)
        announcement = conf.get("announcement")
        while True:
            if waiter.offer is None and music_player is None:
                if announcement and offers == 0 and call.is_up:
                    # once, on entering (an offer that came meanwhile waits for it to finish)
                    call.execute("playback", announcement)
                    announcement = None
                    continue
                music_player = _Music(call, source)
            remaining = deadline - time.monotonic()
            if waiter.offer is None:
                gevent.wait([waiter.event, hung_up, digit_pressed], timeout=max(0.0, remaining), count=1)
            if hung_up.is_set() or not call.is_up:
                return leave("abandoned")
            offer = waiter.take()
            if offer is None:
                if digit_pressed.is_set():
                    return leave("exit")
                if time.monotonic() >= deadline:
                    return leave("timeout")
                continue
            offers += 1
            if music_player is not None:
                music_player.stop()
                music_player = None
            result = _offer(call, service, offer, ring, started)
            if result is not None:
                left = True
                return result.model_copy(update={"offers": offers})
            # no answer: the caller is back at its place; the next offer may already be here
    except CallEnded:
        if not left:
            service.leave(caller, "abandoned")
            left = True
        return QueueOutcome(outcome="abandoned", queue=queue, waited=time.monotonic() - started, offers=offers)
    finally:
        service.unregister(caller)
        if music_player is not None:
            music_player.stop()
        if watcher is not None:
            watcher.kill(block=False)


def _offer(call: Call, service: QueueService, offer: Offer, ring: int, started: float) -> QueueOutcome | None:
    """Bridge the caller to the offered agent. Returns the outcome once answered, None after a no-answer."""
    connected = Event()

    def keep_lease() -> None:
        # the agent's reservation lasts one lease unless renewed: while it rings and while the call
        # lasts, renewed here; if this process dies, the agent is free again within a lease
        while True:
            gevent.sleep(service.lease_seconds / 3)
            service.offer_outcome(offer, "renew")

    def watch_bridge() -> None:
        try:
            call.session.wait_for_event(lambda e: e.name == "CHANNEL_BRIDGE", ring + 5)
        except Exception:
            return
        connected.set()
        service.offer_outcome(offer, "connected", in_sl=time.monotonic() - started <= SERVICE_LEVEL_SECONDS)

    watcher = gevent.spawn(watch_bridge)
    renewer = gevent.spawn(keep_lease)
    waited = time.monotonic() - started
    bridged_at = time.time()
    try:
        # no LF waker: an agent's call ends long after its 60 ms burst, so those writes (~60 per offer,
        # the workers' largest CPU cost at 100 callers/s) only hurried a bridge that failed at once
        result = call.bridge(offer.contact, timeout=ring, wake=False)
    except CallEnded:
        watcher.kill(block=False)
        renewer.kill(block=False)
        # the caller hung up while ringing the agent, or during the call
        if connected.is_set():
            service.offer_outcome(offer, "ended")
        else:
            service.leave(offer.caller, "abandoned")
        raise
    bridge_ended_at = time.time()
    sent = getattr(call.session, "last_execute", None)
    watcher.kill(block=False)
    renewer.kill(block=False)
    if result.answered:
        if not connected.is_set():
            service.offer_outcome(offer, "connected", in_sl=waited <= SERVICE_LEVEL_SECONDS)
        # the agent is free from FreeSWITCH's event on: the next offer's latency counts from there
        service.offer_outcome(offer, "ended", at=result.ended_at)
    else:
        service.offer_outcome(offer, "no_answer", at=result.ended_at)
    if sent is not None and sent[0] == "bridge":
        # the event that made the pair -> this bridge execute written (after the agent is freed: the
        # figure is a benchmark's, it must not delay the next offer)
        service.record_latency(offer, sent[1] - offer.t_event)
    if result.answered:
        return QueueOutcome(outcome="answered", queue=offer.queue, waited=waited, agent=offer.agent,
                            offers=1, bridge=result, bridged_at=bridged_at,
                            bridge_ended_at=bridge_ended_at)  # fmt: skip
    return None
