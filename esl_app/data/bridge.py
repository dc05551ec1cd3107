"""Where gevent meets asyncio — the only place in esl-app.

asyncpg needs an asyncio loop; the server is gevent and does not monkey-patch. So the loop runs in a
real OS thread (daemon), and:

- a greenlet submits a coroutine with ``asyncio.run_coroutine_threadsafe`` and waits on a gevent
  ``AsyncResult``; the future's completion is handed back to the gevent hub with
  ``hub.loop.run_callback_threadsafe``, which wakes the hub. The hub never blocks: other greenlets
  (other calls) run while the query is in flight, and a wait that times out leaves the query running
  (its result is still delivered to whoever asked for it through ``on_done``).
- asyncio code hands work to the gevent side with ``to_gevent(fn, *args)``: ``fn`` runs in the hub
  (it must not block; it may spawn greenlets).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
from gevent.event import AsyncResult

log = logging.getLogger("esl_app.data.bridge")

T = TypeVar("T")


class BridgeClosed(RuntimeError):
    pass


class Bridge:
    def __init__(self, name: str = "esl-app-asyncio") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Any = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self.loop is not None and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._hub = gevent.get_hub()  # callbacks from the asyncio thread are delivered to this hub
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(5)  # the loop exists within microseconds; this only runs at start
        if self.loop is None:
            raise RuntimeError("the asyncio thread did not start")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        # the thread only has to cancel its tasks and close; poll so the hub keeps running meanwhile
        deadline = timeout
        while thread.is_alive() and deadline > 0:
            gevent.sleep(0.005)
            deadline -= 0.005
        self.loop = None
        self._thread = None

    # -- gevent → asyncio ----------------------------------------------------------------------
    def submit(
        self, coro: Coroutine[Any, Any, T], on_done: Callable[[T | None, BaseException | None], None] | None = None
    ) -> AsyncResult:
        """Schedule ``coro`` on the asyncio loop; returns an ``AsyncResult`` greenlets can wait on.

        ``on_done(value, error)`` runs in the gevent hub when the coroutine finishes, even when nobody
        waits any more (a late answer still fills the caches)."""
        loop = self.loop
        if loop is None:
            coro.close()
            raise BridgeClosed("the asyncio thread is not running")
        hub = gevent.get_hub()
        result = AsyncResult()
        future = asyncio.run_coroutine_threadsafe(coro, loop)

        def settle(done: concurrent.futures.Future) -> None:
            if done.cancelled():
                value, error = None, BridgeClosed("cancelled")
            else:
                error = done.exception()
                value = None if error is not None else done.result()
            try:
                hub.loop.run_callback_threadsafe(_deliver, result, value, error, on_done)
            except Exception:  # the hub is gone (process exiting)
                log.debug("result dropped: the gevent hub is gone")

        future.add_done_callback(settle)
        return result

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` and wait for it in this greenlet (other greenlets keep running).
        Raises ``TimeoutError`` after ``timeout`` seconds (the coroutine goes on in the background)."""
        result = self.submit(coro)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise TimeoutError(f"no answer from the asyncio side within {timeout} s") from None

    # -- asyncio → gevent ----------------------------------------------------------------------
    def to_gevent(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the asyncio thread: run ``fn(*args)`` in the gevent hub (thread-safe, wakes the hub)."""
        hub = self._hub
        if hub is None:
            return
        try:
            hub.loop.run_callback_threadsafe(_guarded, fn, args)
        except Exception:
            log.debug("callback dropped: the gevent hub is gone")


def _deliver(
    result: AsyncResult,
    value: Any,
    error: BaseException | None,
    on_done: Callable[[Any, BaseException | None], None] | None,
) -> None:
    if on_done is not None:
        _guarded(on_done, (value, error))
    if error is not None:
        result.set_exception(error)
    else:
        result.set(value)


def _guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("callback %s failed", getattr(fn, "__qualname__", fn))
