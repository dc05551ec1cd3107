"""The process-wide side of the mod_python3 transport: apps loaded once, calls run on their thread.

mod_python3 re-imports the handler's module (``esl_app.modpython``) on every call, so nothing there
survives; this module is imported by it and stays in ``sys.modules``, so the loaded apps, their
routing data and the hub thread live here for the life of the FreeSWITCH process.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..app import CALL_POOL, CALL_UUID, App
from ..call import Call
from ..errors import EslAppError
from ..hubthread import ensure_home_hub, stop_home_hub
from ..routing import RouteTable
from .logs import install_console_logging
from .session import InProcessSession

log = logging.getLogger("esl_app.modpython")


class TargetError(EslAppError):
    """The dialplan's ``data`` does not name an importable ``MODULE:APP``."""


@dataclass
class LoadedApp:
    target: str
    app: App
    loaded_at: float
    startup_seconds: float
    calls: int = 0
    active: int = 0
    refused: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_apps: dict[str, LoadedApp] = {}
_load_lock = threading.Lock()
loads = 0  # how many times an app was imported and started (tests: exactly once per target)


def parse_args(args: str) -> tuple[str, str | None]:
    """``MODULE:APP [pool=NAME]`` -> (target, pool)."""
    words = (args or "").split()
    if not words:
        raise TargetError('no app given: data="esl_app.modpython MODULE:APP" (e.g. callflows.demo:app)')
    target, pool = words[0], None
    for word in words[1:]:
        name, _, value = word.partition("=")
        if name == "pool" and value:
            pool = value
        else:
            raise TargetError(f"unknown argument {word!r} (expected pool=NAME)")
    return target, pool


def _import(target: str) -> App:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise TargetError(f"expected MODULE:APP (e.g. callflows.demo:app), got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise TargetError(f"{target!r} is not an esl_app.App (got {type(app).__name__})")
    return app


def load(target: str, app: App | None = None) -> LoadedApp:
    """The app ``target`` names, imported and started once per process (thread-safe: the first calls
    may arrive together; the others wait for its start). Startup hooks run on the hub thread, so the
    greenlets they start (routing data, Redis, the Postgres bridge) all belong to that one hub.
    ``app``: an App already at hand, registered under ``target`` (the test kit's way in)."""
    loaded = _apps.get(target)
    if loaded is not None:
        return loaded
    global loads
    with _load_lock:
        loaded = _apps.get(target)
        if loaded is not None:
            return loaded
        started = time.perf_counter()
        if not _apps:
            install_console_logging(freeswitch_module())
        app = app if app is not None else _import(target)
        hub = ensure_home_hub()
        hub.call(app.startup, timeout=None)
        loads += 1
        loaded = LoadedApp(target, app, time.time(), time.perf_counter() - started)
        _apps[target] = loaded
        log.info("esl_app.modpython: %s loaded and started in %.3f s", target, loaded.startup_seconds)
        return loaded


def freeswitch_module() -> Any:
    """The ``freeswitch`` module mod_python3 provides (the test kit installs a stand-in)."""
    module = sys.modules.get("freeswitch")
    if module is None:
        module = importlib.import_module("freeswitch")
    return module


def run_call(fs_session: Any, args: str) -> Call | None:
    """One call, on its own FreeSWITCH thread: guards, routing and the flow, as over the socket."""
    target, pool = parse_args(args)
    loaded = load(target)
    app = loaded.app
    table: RouteTable = app.table_for(pool)
    session = InProcessSession(fs_session, freeswitch_module(), app.session_settings)
    CALL_UUID.set(session.uuid)
    if pool is not None:
        CALL_POOL.set(pool)
    if session.gone():
        log.info("%s: the call ended before the handler ran", session.uuid)
        return None
    call = Call(session)
    with loaded.lock:
        over = app.max_calls is not None and loaded.active >= app.max_calls
        if over:
            loaded.refused += 1
        else:
            loaded.active += 1
            loaded.calls += 1
        app.active_calls = loaded.active
    if over:
        _refuse_over_capacity(call, loaded)
        return call
    try:
        app.drive(call, table)
    finally:
        with loaded.lock:
            loaded.active -= 1
            app.active_calls = loaded.active
        app.run_hangup_hooks(call)
    return call


def _refuse_over_capacity(call: Call, loaded: LoadedApp) -> None:
    log.warning("%s: over capacity (%d calls), refusing with 503", call.uuid, loaded.active)
    try:
        call.session.execute("respond", "503 Service Unavailable")
        call.session.hangup("NORMAL_TEMPORARY_FAILURE")
    except EslAppError as exc:
        log.warning("%s: refusing failed: %s", call.uuid, exc)


def status() -> str:
    """What ``api python esl_app.modpython status`` prints."""
    lines = []
    for target, loaded in sorted(_apps.items()):
        lines.append(
            f"{target}: started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(loaded.loaded_at))}"
            f" in {loaded.startup_seconds:.3f} s; calls {loaded.calls}, active {loaded.active},"
            f" refused {loaded.refused}"
        )
    return "\n".join(lines) or "no app loaded"


def shutdown() -> None:
    """Run every loaded app's shutdown hooks (on the hub thread) and stop the hub thread."""
    from ..hubthread import home_hub

    hub = home_hub()
    with _load_lock:
        apps = list(_apps.values())
        _apps.clear()
    for loaded in apps:
        try:
            if hub is not None:
                hub.call(loaded.app.shutdown, timeout=30)
            else:
                loaded.app.shutdown()
        except Exception:
            log.exception("shutting %s down failed", loaded.target)
    stop_home_hub()
