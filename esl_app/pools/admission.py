"""Admission at the door: capacity and calls-per-second, decided when the connection is accepted.

``Admission.admit()`` is O(workers) integer arithmetic over the pool's scoreboard (``slots``), under
the scoreboard's lock so that the limits are exact across the pool's processes (the lock is held for
a few microseconds and never across I/O); it runs inside gevent's accept callback, before any
greenlet exists for the call.

A refused call still gets an explicit answer, because a connection that is simply closed lets the
dialplan carry on (spec 2.7) and one left in the accept queue is a silent caller (FreeSWITCH speaks
second). The whole answer is one write, pipelined without waiting for any reply:

    connect                                    (the first command must be connect, spec 2.2)
    sendmsg execute set esl_app_refused=<why>  (for the CDR, and the dialplan after ``socket``)
    sendmsg execute respond 503 ...            (the SIP answer Kamailio can fail over on)
    sendmsg hangup NORMAL_TEMPORARY_FAILURE

No ``exit``: it would end the socket before an async channel's park loop had run the queued
commands. On an async socket the three sendmsgs are queued to the channel and run on the park loop's
next tick; on a static socket each runs as it is read. Replies and the CHANNEL_DATA block are read
and thrown away until FreeSWITCH closes (the hangup ends the socket), so our close never turns into
a reset that could discard what we wrote.
"""

from __future__ import annotations

import contextlib
import os
import time
from fcntl import LOCK_EX, LOCK_UN, flock
from typing import Any, Literal

import gevent

from ..protocol import commands
from .slots import ACTIVE, FIELDS, HANDOFF_MS, PREV_COUNT, WINDOW, WINDOW_COUNT, SlotState, SlotTable, now_ms

Reason = Literal["capacity", "rate", "draining"]
REASONS: tuple[Reason, ...] = ("capacity", "rate", "draining")
REFUSED_VARIABLE = "esl_app_refused"
REFUSAL_RESPONSE = "503 Service Unavailable"
REFUSAL_CAUSE = "NORMAL_TEMPORARY_FAILURE"
DRAIN_TIMEOUT = 5.0  # how long a refused connection is read before it is closed anyway
# after a hand-off anywhere in the pool, for this long a refusal waits for the connect reply: the
# connection may be that call's second leg, which was admitted already and must not be refused
HANDOFF_WINDOW_MS = 10_000
# after a worker of the pool died holding calls, for this long likewise: its calls in resumable flows
# come back (the dialplan's next ``socket``) when the application FreeSWITCH was running ends, which
# for a bridge can be minutes later; they were admitted on their first worker and must not be refused
RESUME_WINDOW_MS = 15 * 60_000


def refusal_bytes(reason: str) -> bytes:
    """The pipelined refusal, as one buffer."""
    return b"".join(
        (
            commands.CONNECT,
            commands.execute("set", f"{REFUSED_VARIABLE}={reason}", event_lock=True),
            commands.execute("respond", REFUSAL_RESPONSE, event_lock=True),
            commands.hangup(REFUSAL_CAUSE),
        )
    )


REFUSALS: dict[str, bytes] = {reason: refusal_bytes(reason) for reason in REASONS}


class Admission:
    """The door of one worker: admits against the pool-wide totals of ``slots``, counts in ``slot``.

    ``capacity``: calls at once in the whole pool. ``cps``: new calls per second in the whole pool
    (0: no limit), as a sliding one-second window (the previous second weighted by how much of it is
    still inside the window, plus the current one).
    """

    def __init__(
        self, capacity: int, cps: float = 0.0, *, slots: SlotTable | None = None, slot: int = 0, clock: Any = None
    ) -> None:
        self.capacity = capacity
        self.cps = cps
        self.slots = slots if slots is not None else SlotTable.local(1)
        self.slot = slot
        self.clock = clock or time.monotonic
        self.draining = False
        self._base = slot * FIELDS
        self._n = self.slots.slots
        self._lock_fd = self.slots.lock_fd
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.admitted = 0
        self.resumed = 0  # second legs of hand-offs: admitted without counting them again
        self.window = 0  # the calls-per-second window the latest admission was counted in
        if self.slots.get(slot, 1) == SlotState.FREE:  # a local table: this process is its only worker
            self.slots.claim(slot, os.getpid())
            self.slots.set(slot, 1, SlotState.READY)

    @property
    def active(self) -> int:
        """Calls admitted by this worker and not yet released."""
        return self.slots.view[self._base + ACTIVE]

    def admit(self) -> Reason | None:
        """Admit one call (counted until ``release()``), or return why not.

        Exact across the pool's processes: the totals are read and this worker's counts raised while
        holding the scoreboard's lock (``SlotTable.locked``; inlined here, it is the hot path)."""
        if self.draining:
            reason: Reason | None = "draining"
        else:
            fd = self._lock_fd
            if fd is None:
                reason = self._decide()
            else:
                flock(fd, LOCK_EX)
                try:
                    reason = self._decide()
                finally:
                    flock(fd, LOCK_UN)
        if reason is not None:
            self.refused[reason] += 1
            return reason
        self.admitted += 1
        return None

    def _decide(self) -> Reason | None:
        """Check capacity, then rate, over every slot; on admission count the call in this slot."""
        view = self.slots.view
        total = 0
        for i in range(ACTIVE, self._n * FIELDS, FIELDS):
            total += view[i]
        if total >= self.capacity:
            return "capacity"
        me = self._base
        if self.cps:
            now = self.clock()
            window = int(now)
            current = previous = 0
            for base in range(0, self._n * FIELDS, FIELDS):
                seen = view[base + WINDOW]
                if seen == window:
                    current += view[base + WINDOW_COUNT]
                    previous += view[base + PREV_COUNT]
                elif seen == window - 1:
                    previous += view[base + WINDOW_COUNT]
            if previous * (1.0 - (now - window)) + current >= self.cps:
                return "rate"
            self.window = window
            mine = view[me + WINDOW]
            if mine != window:
                view[me + PREV_COUNT] = view[me + WINDOW_COUNT] if mine == window - 1 else 0
                view[me + WINDOW_COUNT] = 0
                view[me + WINDOW] = window
            view[me + WINDOW_COUNT] += 1
        view[me + ACTIVE] += 1
        return None

    def release(self) -> None:
        view = self.slots.view
        if view[self._base + ACTIVE] > 0:
            view[self._base + ACTIVE] -= 1

    # -- hand-offs (a static call moved to an async socket connects a second time) --------------
    def handing_off(self) -> None:
        """A call of this worker is being handed off: its second leg may reach any worker soon."""
        self.slots.view[self._base + HANDOFF_MS] = now_ms()

    def handoff_in_flight(self) -> bool:
        """Whether a worker of the pool handed a call off recently (its second leg may be arriving)."""
        latest = self.slots.latest_handoff_ms()
        return latest > 0 and now_ms() - latest < HANDOFF_WINDOW_MS

    def may_be_returning(self) -> bool:
        """Whether a connection may be a call admitted before: a hand-off's second leg, or a call of a
        worker that died, resuming (``esl_app.recovery``). Its refusal waits for the connect reply."""
        if self.handoff_in_flight():
            return True
        died = self.slots.latest_death_ms()
        return died > 0 and now_ms() - died < RESUME_WINDOW_MS

    def uncount_rate(self, window: int) -> None:
        """An admitted connection was a hand-off's second leg: take it out of the calls-per-second
        count (its first leg was counted). Only this worker writes its slot, so no lock is needed."""
        if not self.cps:
            return
        view, me = self.slots.view, self._base
        if view[me + WINDOW] == window and view[me + WINDOW_COUNT] > 0:
            view[me + WINDOW_COUNT] -= 1
        elif view[me + WINDOW] == window + 1 and view[me + PREV_COUNT] > 0:
            view[me + PREV_COUNT] -= 1
        self.resumed += 1

    def admit_resumed(self, refused_for: Reason) -> None:
        """Admit a hand-off's second leg, or a resumed call, that the door had refused before its
        connect reply was in: the call was admitted on its first leg (or first worker), so neither
        capacity nor rate apply. It is counted here from now on (a dead worker's count is gone with
        its slot), so the pool may go over capacity by the calls coming back, for as long as they last."""
        self.slots.view[self._base + ACTIVE] += 1
        self.refused[refused_for] -= 1
        self.resumed += 1


def refuse(sock: Any, reason: str) -> None:
    """Write the refusal at once (never blocks: the caller may be the accept callback), then read
    the socket out in a greenlet until FreeSWITCH closes it."""
    data = REFUSALS.get(reason) or refusal_bytes(reason)
    try:
        written = os.write(sock.fileno(), data)  # a fresh socket's send buffer always has room
    except BlockingIOError:
        written = 0
    except OSError:
        with contextlib.suppress(OSError):
            sock.close()
        return
    gevent.spawn(_finish_refusal, sock, data[written:])


def _finish_refusal(sock: Any, rest: bytes) -> None:
    try:
        with gevent.Timeout(DRAIN_TIMEOUT, False):
            if rest:
                sock.sendall(rest)
            while sock.recv(65536):
                pass
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()
