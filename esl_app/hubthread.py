"""One OS thread that owns a gevent hub, for everything gevent-based inside FreeSWITCH.

mod_python3 runs each call on its own FreeSWITCH thread. The data tiers (``esl_app.data``: Redis,
the asyncpg bridge, the in-process cache and limits) are built on gevent greenlets, and a greenlet
must never run, or be waited for, from another thread's hub. So they live on this one thread, and a
call thread hands it work (``call``) and blocks on a ``concurrent.futures.Future`` until it is done.
Nothing monkey-patches the process: FreeSWITCH's threads stay plain threads.

A warm decision is a cross-thread hand-off plus the in-memory lookup: no network wait on the hot
path (Redis and Postgres are read by this thread only on a miss, within the data's budget).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import gevent
from gevent.event import Event as Flag

log = logging.getLogger("esl_app.hubthread")

T = TypeVar("T")


class HubClosed(RuntimeError):
    """The hub thread was stopped: no more work can be handed to it."""


class HubThread:
    """A daemon thread running a gevent hub; ``call(fn, ...)`` runs ``fn`` in a greenlet there."""

    def __init__(self, name: str = "esl-app-hub") -> None:
        self.name = name
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Future[Any]]] = deque()
        self._ready = threading.Event()
        self._stopping = False
        self._async: Any = None  # the hub's async watcher: its send() is the one thread-safe wake-up
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.ident: int | None = None

    def start(self, timeout: float = 10.0) -> HubThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.name}: the hub thread did not start within {timeout} s")
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def on_hub(self) -> bool:
        """Whether the caller is this hub's own thread (then work runs inline, not handed over)."""
        return threading.get_ident() == self.ident

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        if self._stopping:
            raise HubClosed(f"{self.name} is stopped")
        future: Future[T] = Future()
        self._queue.append((fn, args, kwargs, future))  # deque.append is atomic
        self._async.send()
        return future

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 30.0, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the hub thread and return its result (or raise its error)."""
        if self.on_hub():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopping or not self._thread.is_alive():
            return
        self._stopping = True
        self._async.send()
        self._thread.join(timeout)

    # -- the hub thread ----------------------------------------------------------------------
    def _main(self) -> None:
        self.ident = threading.get_ident()
        hub = gevent.get_hub()  # this thread's own hub
        wake = Flag()
        self._async = hub.loop.async_()
        self._async.start(wake.set)
        self._ready.set()
        try:
            while True:
                wake.wait()
                wake.clear()
                while self._queue:
                    fn, args, kwargs, future = self._queue.popleft()
                    if future.set_running_or_notify_cancel():
                        gevent.spawn(self._run, fn, args, kwargs, future)
                if self._stopping:
                    break
        finally:
            self._async.close()
            while self._queue:
                self._queue.popleft()[3].set_exception(HubClosed(f"{self.name} stopped"))

    @staticmethod
    def _run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], future: Future[Any]) -> None:
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the waiting call thread, which re-raises it
            future.set_exception(exc)


_home: HubThread | None = None
_home_lock = threading.Lock()


def home_hub() -> HubThread | None:
    """The process's hub thread when running inside FreeSWITCH (None in the socket server)."""
    return _home


def ensure_home_hub() -> HubThread:
    """Start the process's hub thread once (thread-safe: two first calls may race for it)."""
    global _home
    with _home_lock:
        if _home is None or not _home.running:
            _home = HubThread().start()
        return _home


def stop_home_hub() -> None:
    global _home
    with _home_lock:
        hub, _home = _home, None
    if hub is not None:
        hub.stop()
