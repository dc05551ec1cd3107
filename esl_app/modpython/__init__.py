"""esl-app inside FreeSWITCH: the mod_python3 entry points.

```xml
<action application="python" data="esl_app.modpython callflows.demo:app"/>
```

mod_python3 calls ``handler(session, args)`` on the call's own thread, ``fsapi`` for
``api python esl_app.modpython ...`` and ``runtime`` for ``pyrun`` / the ``startup-script``. It
re-imports this module on every call: it holds no state (``esl_app.modpython.host`` does, loaded
once). Nothing here monkey-patches the process. Details: docs/modpython.md.
"""

from __future__ import annotations

import logging
from typing import Any

from . import host

log = logging.getLogger("esl_app.modpython")


def handler(session: Any, args: str) -> None:
    """``<action application="python" data="esl_app.modpython MODULE:APP [pool=NAME]"/>``."""
    host.run_call(session, args)


def runtime(args: str) -> None:
    """``startup-script`` / ``pyrun esl_app.modpython MODULE:APP ...``: load and start each app now,
    so the first call finds its routing data warm."""
    for target in (args or "").split():
        host.load(target)


def fsapi(session: Any, stream: Any, env: Any, args: str) -> None:
    """``api python esl_app.modpython status`` | ``load MODULE:APP`` | ``stop``."""
    words = (args or "status").split()
    command, rest = words[0], words[1:]
    try:
        if command == "status":
            stream.write(host.status() + "\n")
        elif command == "load" and rest:
            for target in rest:
                loaded = host.load(target)
                stream.write(f"+OK {target} loaded in {loaded.startup_seconds:.3f} s\n")
        elif command == "stop":
            host.shutdown()
            stream.write("+OK stopped\n")
        else:
            stream.write("-ERR usage: status | load MODULE:APP... | stop\n")
    except Exception as exc:  # the console shows it; FreeSWITCH goes on
        log.exception("esl_app.modpython %s failed", args)
        stream.write(f"-ERR {type(exc).__name__}: {exc}\n")


__all__ = ["fsapi", "handler", "runtime"]
