"""The caller's side of a queue: ``call.enqueue("support")`` waits with music until an agent is
offered, bridges the caller's own session to the agent, and returns how it ended.

While the caller waits it hears the hold: music in slices (``playback`` with FreeSWITCH's scoped
``playback_timeout_sec``, so a slice ends by itself even if nobody is listening any more) and, between
slices, the announcement of its position and estimated wait (``say``, numbers computed here), on
entering and every ``announce_every_seconds``. An offer stops the hold with ``api uuid_break`` and the
bridge execute is written at once, behind the broken playback (event-lock keeps the order). The caller
leaves at max wait (outcome ``timeout``: the flow plays its fallback), on an exit digit (``exit``) or
by hanging up (``abandoned``): the leave script removes it from Redis at once, and frees an agent that
was being offered to it. A connection that closes with no hangup (the worker's end died, or was cut)
is not an abandon: the caller keeps its place while its lease lasts, for the call to come back.

In a resumable flow (``resumable=True``, docs/recovery.md) the wait is journaled as a few entries:
the checkpoint ``enqueue`` (the queue), the entry announcement (a ``playback``), one ``enqueue.wait``
step per hold (its music and announcements are not journaled one by one), and per offer the
checkpoint ``enqueue.offer`` (agent, contact) followed by its ``bridge``; leaving without an agent is
the checkpoint ``enqueue.left``. A call resumed after its worker died replays them: a bridge that was
placed is never placed again (its result is read from the channel and reported to Redis if the dead
process could not), an answered one ends the wait, and a wait in progress waits again in its place.
"""

from __future__ import annotations

import logging
import math
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import gevent
from gevent.event import Event
from pydantic import BaseModel

from ..call import BridgeResult
from ..cluster.dialstring import check_destination
from ..errors import CallEnded, CommandError, CommandTimeout, UnsafeArgumentError
from ..protocol import Expand
from ..recovery import Entry
from .service import Offer, QueueService, current_service

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger("esl_app.queue")

QueueOutcomeKind = Literal["answered", "timeout", "exit", "abandoned"]
SERVICE_LEVEL_SECONDS = 20.0  # answered within this many seconds of joining counts toward the service level

# the journal of a resumable flow (docs/recovery.md)
ENQUEUE = "enqueue"  # checkpoint: the flow entered the queue
OFFERED = "enqueue.offer"  # checkpoint: an offer's bridge follows
LEFT = "enqueue.left"  # checkpoint: the caller left without an agent (timeout, exit)
WAIT = "enqueue.wait"  # step: one hold (music and announcements, none journaled by itself)

# the position and wait announcement: FreeSWITCH's standard English prompts (sounds en/us/callie)
# and its say module for the numbers
YOU_ARE_NUMBER = "ivr/ivr-you_are_number.wav"
IN_LINE = "ivr/ivr-in_line.wav"
ESTIMATED_HOLD_TIME = "ivr/ivr-estimated_hold_time.wav"
MINUTE, MINUTES = "time/minute.wav", "time/minutes.wav"
SAY_LANGUAGE = "en"


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


def announcement(position: int, seconds: float | None) -> list[tuple[str, str]]:
    """The applications that tell a caller its place and estimated wait (whole minutes, rounded up)."""
    if position < 1:
        return []
    apps = [("playback", YOU_ARE_NUMBER), ("say", f"{SAY_LANGUAGE} NUMBER pronounced {int(position)}"),
            ("playback", IN_LINE)]  # fmt: skip
    if seconds is not None:
        minutes = max(1, math.ceil(seconds / 60))
        apps += [("playback", ESTIMATED_HOLD_TIME), ("say", f"{SAY_LANGUAGE} NUMBER pronounced {minutes}"),
                 ("playback", MINUTE if minutes == 1 else MINUTES)]  # fmt: skip
    return apps


class _Hold:
    """What a waiting caller hears: music in slices of at most ``slice_seconds`` and, between them, the
    announcement (on starting when ``announce_now``, then every ``every`` seconds); ``stop`` breaks
    whatever plays. Nothing here is journaled: the hold is one journal step."""

    def __init__(
        self,
        call: Call,
        source: str,
        slice_seconds: int,
        announce: Callable[[], list[tuple[str, str]]] | None = None,
        every: float = 0.0,
        announce_now: bool = False,
    ) -> None:
        self.call = call
        self.source = source
        self.slice_seconds = slice_seconds
        self.announce = announce
        self.every = max(2.0, every)  # a music slice is 2 s at least (playback_timeout_sec)
        self.next_announcement = time.monotonic() + (0.0 if announce_now else self.every)
        self.stopped = False
        self.playing = False
        self.greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while not self.stopped:
            if self.announce is not None and time.monotonic() >= self.next_announcement:
                self.next_announcement = time.monotonic() + self.every
                for app, arg in self._announcement():
                    if self.stopped or not self._run(app, arg):
                        return
                continue
            seconds = self.slice_seconds
            if self.announce is not None:
                seconds = min(seconds, max(2, math.ceil(self.next_announcement - time.monotonic())))
            # scoped to this playback: the slice ends by itself, also when nobody is listening any more
            scope = Expand(f"%[playback_timeout_sec={int(seconds)},playback_timeout_as_success=true]")
            if not self._run("playback", scope + self.source):
                return

    def _announcement(self) -> list[tuple[str, str]]:
        assert self.announce is not None
        try:
            return self.announce()
        except Exception as exc:  # Redis away: the music goes on, the next announcement may work
            log.warning("%s: no queue announcement: %s", self.call.uuid, exc)
            return []

    def _run(self, app: str, arg: str | Expand) -> bool:
        self.playing = True
        try:
            # nobody waits on the hold's completions: no LF waker writes (60 per playback, spec 9)
            self.call.session.execute(app, arg, wake=False)
            return True
        except (CallEnded, CommandError, CommandTimeout):
            return False
        finally:
            self.playing = False

    def stop(self) -> None:
        """Break the playback without waiting: the bridge is written at once and FreeSWITCH queues it
        behind the playback (event-lock), which the break then ends. A break that reaches FreeSWITCH
        before the playback's sendmsg started breaks nothing, so it is repeated, from a greenlet,
        until the hold's last application has completed."""
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
            log.debug("%s: uuid_break of the hold: %s", self.call.uuid, exc)
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
    hold: _Hold | None = None
    watcher: gevent.Greenlet | None = None
    offers = 0
    started = time.monotonic()
    left = False
    greeted = False  # the entry announcement was played (or passed, by the process before a crash)
    held = False  # a hold started: its first position announcement was given

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
        waited = time.monotonic() - started
        digit = pressed[0] if pressed else None
        if reason != "abandoned":
            call.checkpoint(LEFT, outcome=reason, digit=digit, waited=round(waited, 1))
        return QueueOutcome(outcome=reason, queue=queue, waited=waited, digit=digit, offers=offers)

    def gone() -> QueueOutcome:
        if call.session.connection_lost:
            # not an abandon: the channel is likely up and comes back through the next socket, to wait
            # in its place; if it doesn't, its lease runs out and the sweep removes it
            call.session.raise_if_gone()
        return leave("abandoned")

    try:
        call.checkpoint(ENQUEUE, queue=queue)
        journal = call.journal
        if journal is not None and journal.active and journal.replaying:
            replayed = _replay(call, service, queue)
            if replayed.outcome is not None:
                left = True
                return replayed.outcome
            offers, greeted = replayed.offers, replayed.announced
            held = greeted
        joined = service.join(caller, queue, priority=priority, skills=skills)
        conf = joined.conf
        limit = max_wait if max_wait is not None else int(conf.get("max_wait_ms", "300000")) / 1000
        # a caller back after its worker died keeps its join time: its wait and max wait go on
        started = time.monotonic() - max(0, joined.now_ms - joined.joined_ms) / 1000
        deadline = started + limit
        ring = int(conf.get("ring_s", "20"))
        source = music or conf.get("music") or "local_stream://moh"
        every = int(conf.get("announce_every_ms", "0") or "0") / 1000

        def position() -> list[tuple[str, str]]:
            estimate = service.estimate(queue, caller)
            return announcement(estimate.position, estimate.seconds)

        if exit_digits:
            watcher = gevent.spawn(watch_digits)
        entry_announcement = conf.get("announcement")
        while True:
            if waiter.offer is None and hold is None and call.is_up:
                if entry_announcement and not greeted:
                    # once, on entering (an offer that came meanwhile waits for it to finish)
                    call.execute("playback", entry_announcement)
                    greeted = True
                    continue
                greeted = True
                call.journal_step(WAIT)
                hold = _Hold(call, source, service.hold_slice_seconds, position if every else None, every,
                             announce_now=not held)  # fmt: skip
                held = True
            remaining = deadline - time.monotonic()
            if waiter.offer is None and not waiter.lost:
                gevent.wait([waiter.event, hung_up, digit_pressed], timeout=max(0.0, remaining), count=1)
            if hung_up.is_set() or not call.is_up:
                return gone()
            if waiter.lost:  # this process stalled past the lease and the sweep removed the caller
                service.join(caller, queue, priority=priority, skills=skills)
            offer = waiter.take()
            if offer is None:
                if digit_pressed.is_set():
                    return leave("exit")
                if time.monotonic() >= deadline:
                    return leave("timeout")
                continue
            offers += 1
            if hold is not None:
                hold.stop()
                hold = None
            result = _offer(call, service, offer, ring, started)
            if result is not None:
                left = True
                return result.model_copy(update={"offers": offers})
            # no answer: the caller is back at its place; the next offer may already be here
    except CallEnded:
        if not left and not call.session.connection_lost:
            service.leave(caller, "abandoned")
            left = True
        if call.session.connection_lost:
            raise
        return QueueOutcome(outcome="abandoned", queue=queue, waited=time.monotonic() - started, offers=offers)
    finally:
        service.unregister(caller, waiter)
        if hold is not None:
            hold.stop()
        if watcher is not None:
            watcher.kill(block=False)


class _Replayed(BaseModel):
    outcome: QueueOutcome | None = None  # the wait had ended (an answered bridge, a timeout, an exit)
    offers: int = 0
    announced: bool = False


def _replay(call: Call, service: QueueService, queue: str) -> _Replayed:
    """A resumed call: go through what its journal recorded of this wait, placing nothing again."""
    journal = call.journal
    assert journal is not None
    done = _Replayed()
    offered: dict[str, Any] | None = None
    while journal.active and journal.replaying:
        recorded, last = journal.next_recorded()
        if offered is not None:
            # the offer's bridge: recorded, or the application running when the worker died (its
            # result is on the channel now). Replayed, never placed again.
            done.offers += 1
            ring = int(service.queue_conf(queue).get("ring_s", "20"))
            if "dial" in offered:  # a ring-all offer: the same bridge as the first process placed
                result = call.bridge(str(offered["dial"]), timeout=ring, variables=RING_ALL_VARIABLES)
            else:
                result = call.bridge(str(offered["contact"]), timeout=ring)
            offer = Offer(caller=call.uuid, agent=str(offered["agent"]), contact=str(offered["contact"]), queue=queue,
                          t_event=time.time(), kind="resume", seq=0)  # fmt: skip
            waited = float(offered.get("waited", 0.0))
            if last:
                _settle(service, offer, result, waited, offered.get("legs"))
            if result.answered:
                winner = (offered.get("legs") or {}).get(result.other_leg_uuid or "")
                if winner:  # a ring-all offer: the agent who answered
                    offer = offer.answered_by(winner)
                done.outcome = QueueOutcome(outcome="answered", queue=queue, waited=waited, agent=offer.agent,
                                            offers=done.offers, bridge=result)  # fmt: skip
                return done
            offered = None
            continue
        done.announced = True  # the first process went past the entry announcement
        if recorded is None:
            # the hold (or the entry announcement) was running when the worker died: wait again
            journal.entries.append(Entry(app=WAIT))
        elif recorded.app == WAIT:
            journal.entries.append(recorded)
        elif recorded.app == "playback":
            call.execute("playback", service.queue_conf(queue).get("announcement") or "-")  # replayed, not played
        elif recorded.name == OFFERED:
            offered = call.checkpoint(OFFERED)
        elif recorded.name == LEFT:
            state = call.checkpoint(LEFT)
            done.outcome = QueueOutcome(outcome=state["outcome"], queue=queue, waited=float(state.get("waited", 0.0)),
                                        digit=state.get("digit"), offers=done.offers)  # fmt: skip
            return done
        else:
            call.journal_diverged(f"queue {queue!r}")
    return done


def _settle(
    service: QueueService, offer: Offer, result: BridgeResult, waited: float, legs: dict[str, str] | None = None
) -> None:
    """Report the outcome of a bridge that ended while nobody listened (its process died). ``legs``: a
    ring-all offer's B-leg uuid -> agent, as journaled."""
    if legs:
        winner = legs.get(result.other_leg_uuid or "", "") if result.answered else ""
        if not result.answered:
            service.ring_outcome(offer, "no_answer")
            return
        if service.caller_state(offer.caller) == "offered":  # the others Idle; "" (unknown) frees them all
            service.ring_outcome(offer, "connected", winner=winner, in_sl=waited <= SERVICE_LEVEL_SECONDS)
        if winner:
            service.offer_outcome(offer.answered_by(winner), "ended")
        return
    if result.answered:
        if service.caller_state(offer.caller) == "offered":  # the dead process never saw it connect
            service.offer_outcome(offer, "connected", in_sl=waited <= SERVICE_LEVEL_SECONDS)
        service.offer_outcome(offer, "ended")
    else:
        service.offer_outcome(offer, "no_answer")


def _offer(call: Call, service: QueueService, offer: Offer, ring: int, started: float) -> QueueOutcome | None:
    """Bridge the caller to the offered agent. Returns the outcome once answered, None after a no-answer."""
    if len(offer.legs) > 1:
        return _ring_all(call, service, offer, ring, started)
    connected = Event()
    connected_at: list[float] = []

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
        connected_at.append(time.time())
        connected.set()
        service.offer_outcome(offer, "connected", in_sl=time.monotonic() - started <= SERVICE_LEVEL_SECONDS)

    watcher = gevent.spawn(watch_bridge)
    renewer = gevent.spawn(keep_lease)
    waited = time.monotonic() - started
    # journaled with the bridge: a call resumed after its worker died knows which agent it was
    # bridged to, and does not bridge again
    call.checkpoint(OFFERED, agent=offer.agent, contact=offer.contact, waited=round(waited, 1))
    bridged_at = time.time()
    try:
        # no LF waker: an agent's call ends long after its 60 ms burst, so those writes (~60 per offer,
        # the workers' largest CPU cost at 100 callers/s) only hurried a bridge that failed at once
        # its variables by one api, not three sets: six events fewer to read per offer (enqueue needs full)
        result = call.bridge(offer.contact, timeout=ring, wake=False, quiet_setup=True)
    except CallEnded:
        watcher.kill(block=False)
        renewer.kill(block=False)
        if call.session.connection_lost:
            raise  # the process lost the call, not the caller: the resumed call settles the offer
        # the caller hung up while ringing the agent, or during the call
        if connected.is_set():
            service.offer_outcome(offer, "ended")
        else:
            service.leave(offer.caller, "abandoned")
        raise
    bridge_ended_at = time.time()
    watcher.kill(block=False)
    renewer.kill(block=False)
    if result.answered:
        if not connected.is_set():
            service.offer_outcome(offer, "connected", in_sl=waited <= SERVICE_LEVEL_SECONDS)
        wrap = int(service.queue_conf(offer.queue).get("wrap_ms", "0") or "0") / 1000
        talk = bridge_ended_at - (connected_at[0] if connected_at else bridged_at)
        # the agent is free from FreeSWITCH's event on: the next offer's latency counts from there
        service.offer_outcome(offer, "ended", at=result.ended_at, handle_seconds=talk + wrap)
    else:
        service.offer_outcome(offer, "no_answer", at=result.ended_at)
    _record_latency(call, service, offer)
    if result.answered:
        return QueueOutcome(outcome="answered", queue=offer.queue, waited=waited, agent=offer.agent,
                            offers=1, bridge=result, bridged_at=bridged_at,
                            bridge_ended_at=bridge_ended_at)  # fmt: skip
    return None


def _record_latency(call: Call, service: QueueService, offer: Offer) -> None:
    """The event that made the pair -> this bridge's execute written. Called once the agents are
    settled: the figure is a benchmark's, it must not delay the next offer."""
    sent = getattr(call.session, "last_execute", None)
    if sent is not None and sent[0] == "bridge":
        service.record_latency(offer, sent[1] - offer.t_event)


# a ring-all leg ended with one of these was cancelled (another agent answered, or the caller left):
# no penalty for its agent (mod_callcenter's outbound_agent_thread_run does the same)
_CANCELLED = frozenset({"LOSE_RACE", "ORIGINATOR_CANCEL", "NONE", ""})
# set on every channel of an agent's leg; origination_uuid names only the first (a user registered
# on two phones gets two channels), so the agent of another is read back from this
AGENT_VARIABLE = "esl_app_queue_agent"
# one agent's early media must not reach the caller nor end the race (mod_callcenter sets it too)
RING_ALL_VARIABLES = {"ignore_early_media": "true"}


def ring_all_dial_string(legs: list[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """``[origination_uuid=U1,esl_app_queue_agent=1001]user/1001,[...]user/1002``: FreeSWITCH rings the
    legs at once and bridges the first to answer. Each leg's uuid is chosen here, so the B-leg named
    by CHANNEL_BRIDGE tells which agent answered. Returns the dial string and uuid -> agent. A contact
    that is not exactly one endpoint (``,`` ``|`` ``:_:``, brackets, ``$``...) is refused: it would ring
    or set more than its agent's leg. Agent ids are ``[A-Za-z0-9_.@-]`` (AgentConfig)."""
    uuids = [str(uuidlib.uuid4()) for _ in legs]
    dial = ",".join(
        f"[origination_uuid={u},{AGENT_VARIABLE}={agent}]{check_destination(contact)}"
        for u, (agent, contact) in zip(uuids, legs, strict=True)
    )
    return dial, {u: agent for u, (agent, _) in zip(uuids, legs, strict=True)}


def _ring_all(call: Call, service: QueueService, offer: Offer, ring: int, started: float) -> QueueOutcome | None:
    """Ring every agent of a ring-all offer with one bridge. The first to answer gets the caller; the
    moment its CHANNEL_BRIDGE arrives the others (cancelled by FreeSWITCH) are Idle again, so they can
    take the next caller while this call lasts. Nobody answers: they all get the no-answer handling and
    the caller keeps its place. Returns the outcome once answered, None after a no-answer."""
    try:
        dial, agents = ring_all_dial_string(offer.legs)
    except UnsafeArgumentError as exc:  # config is validated: only a hand-edited Redis gets here
        log.error("%s: ring-all offer %s not dialled: %s", offer.caller, offer.agent, exc)
        service.ring_outcome(offer, "no_answer")
        return None
    # journaled with the bridge (the dial string, since its leg uuids are chosen here): a call resumed
    # after its worker died knows whom it rang, and does not ring them again
    call.checkpoint(OFFERED, agent=offer.agent, contact=offer.contact, dial=dial, legs=agents,
                    waited=round(time.monotonic() - started, 1))  # fmt: skip
    held: list[Offer] = []  # the offer as the agent who answered holds it, once known
    settling = Event()  # CHANNEL_BRIDGE came: the watcher is reporting who answered

    def who_answered(b_leg: str) -> str | None:
        if b_leg in agents:
            return agents[b_leg]
        try:  # another channel of an agent's leg (a second registration): ask it
            agent = call.api("uuid_getvar", b_leg, AGENT_VARIABLE).strip()
        except (CallEnded, CommandError, CommandTimeout) as exc:
            log.debug("%s: uuid_getvar of the answering leg %s: %s", offer.caller, b_leg, exc)
            return None
        return agent if agent in agents.values() else None

    def connect(b_leg: str | None, causes: list[str]) -> None:
        if held or not b_leg:
            return
        agent = who_answered(b_leg)
        if held:  # the other greenlet settled it meanwhile
            return
        if agent is None:
            log.error("%s: ring-all answered by a leg of no agent of the offer: %s", offer.caller, b_leg)
            return
        held.append(offer.answered_by(agent))
        # a leg that failed by itself before the answer (busy, rejected) is penalised as mod_callcenter does
        failed = [agents[u] for u, _, cause in (c.partition(";") for c in causes)
                  if u in agents and u != b_leg and cause.upper() not in _CANCELLED]  # fmt: skip
        in_sl = time.monotonic() - started <= SERVICE_LEVEL_SECONDS
        if not service.ring_outcome(offer, "connected", winner=agent, failed=failed, in_sl=in_sl):
            log.warning("%s: %s answered, but its reservation had run out", offer.caller, agent)

    def keep_lease() -> None:
        while True:
            gevent.sleep(service.lease_seconds / 3)
            if held:
                service.offer_outcome(held[0], "renew")
            else:
                service.ring_outcome(offer, "renew")

    def watch_bridge() -> None:
        try:
            event = call.session.wait_for_event(lambda e: e.name == "CHANNEL_BRIDGE", ring + 5)
        except Exception:
            return
        settling.set()
        b_leg = event.get("Other-Leg-Unique-ID") or event.get("Bridge-B-Unique-ID")
        connect(b_leg, event.headers.get_array("variable_originate_causes"))

    def stop() -> None:
        renewer.kill(block=False)
        if settling.is_set():  # let it finish: cut mid-script, the losers would wait for their lease
            watcher.join(timeout=10)
        watcher.kill(block=False)

    watcher = gevent.spawn(watch_bridge)
    renewer = gevent.spawn(keep_lease)
    waited = time.monotonic() - started
    bridged_at = time.time()
    try:
        result = call.bridge(dial, timeout=ring, variables=RING_ALL_VARIABLES, wake=False,
                             quiet_setup=True)  # as _offer's  # fmt: skip
    except CallEnded:
        stop()
        if call.session.connection_lost:
            raise  # the process lost the call, not the caller: the resumed call settles the offer
        if held:  # the caller hung up during the call
            service.offer_outcome(held[0], "ended")
        else:  # while ringing: every agent is released (LEAVE frees all the offer's agents)
            service.leave(offer.caller, "abandoned")
        raise
    bridge_ended_at = time.time()
    stop()
    if result.answered:
        if not held:  # CHANNEL_BRIDGE was missed: the bridge's own variables name the B-leg
            connect(result.other_leg_uuid, [])
        if held:
            service.offer_outcome(held[0], "ended")
            agent = held[0].agent
        else:  # cannot tell who answered: free them all rather than hold them a lease (the caller's
            service.ring_outcome(offer, "connected")  # record then expires with its TTL)
            agent = None
        _record_latency(call, service, offer)
        return QueueOutcome(outcome="answered", queue=offer.queue, waited=waited, agent=agent,
                            offers=1, bridge=result, bridged_at=bridged_at,
                            bridge_ended_at=bridge_ended_at)  # fmt: skip
    service.ring_outcome(offer, "no_answer")
    _record_latency(call, service, offer)
    return None


__all__ = ["QueueOutcome", "announcement", "enqueue"]
