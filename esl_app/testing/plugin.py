"""pytest plugin (registered through the ``pytest11`` entry point): fixtures for testing call flows.

```python
def test_sales(esl_call):
    result = esl_call(app, destination="1000", caller_id_number="1001", dtmf="1")
    assert result.verbs == ["answer", "playback", "play_and_get_digits", "bridge"]
    assert result.hangup_cause == "NORMAL_CLEARING"
```
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:  # imported lazily: loading the plugin must stay cheap for every pytest run
    from ..app import App
    from .simulate import SimulatedCall


Transport = Literal["socket", "modpython"]


class CallPlacer:
    """``esl_call(app, **script)``: one call in memory; ``esl_call.tcp(app, **script)`` over real TCP;
    ``esl_call.in_process(app, **script)`` through the mod_python3 transport (``esl_app.modpython``
    with the stand-in ``freeswitch`` module). ``transport`` picks what a plain ``esl_call(...)`` uses."""

    def __init__(self, transport: Transport = "socket") -> None:
        self.transport = transport
        self._servers: list[Any] = []
        self.calls: list[SimulatedCall] = []

    def __call__(self, app: App, destination: str | None = None, **fields: Any) -> SimulatedCall:
        from .simulate import simulate_call

        if self.transport == "modpython":
            return self.in_process(app, destination, **fields)
        if destination is not None:
            fields["destination"] = destination
        result = simulate_call(app, **fields)
        self.calls.append(result)
        return result

    def in_process(self, app: App, destination: str | None = None, **fields: Any) -> SimulatedCall:
        from .freeswitch import simulate_in_process

        if destination is not None:
            fields["destination"] = destination
        result = simulate_in_process(app, **fields)
        self.calls.append(result)
        return result

    def tcp(self, app: App, destination: str | None = None, **fields: Any) -> SimulatedCall:
        from ..transport import OutboundServer
        from .simulate import simulate_tcp_call

        if destination is not None:
            fields["destination"] = destination
        server = OutboundServer(app.handle, "127.0.0.1", 0, keepalive=app.session_settings.keepalive)
        server.start()
        self._servers.append(server)
        result = simulate_tcp_call(server.address, **fields)
        self.calls.append(result)
        return result

    def close(self) -> None:
        for server in self._servers:
            server.stop(deadline=5)


@pytest.fixture
def esl_call() -> Iterator[Callable[..., SimulatedCall]]:
    placer = CallPlacer()
    try:
        yield placer
    finally:
        placer.close()


@pytest.fixture(params=["socket", "modpython"])
def esl_call_any(request: pytest.FixtureRequest) -> Iterator[CallPlacer]:
    """``esl_call`` once over the Event Socket and once in-process (mod_python3): a test using it
    runs over both transports."""
    placer = CallPlacer(request.param)
    try:
        yield placer
    finally:
        placer.close()
