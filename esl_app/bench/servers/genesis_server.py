"""Baseline: genesis (asyncio) ``Outbound`` running the benchmark flow.

``events=False, linger=False`` so that the flow sends ``myevents`` and ``linger`` itself, like the
others (genesis' default is ``filter Unique-ID`` + ``event plain all``); executes block on the
CHANNEL_EXECUTE_COMPLETE of their own ``Event-UUID``.
"""

from __future__ import annotations

import asyncio
import logging

from genesis import Outbound

from ._common import PROMPT, parse_args, ready


async def flow(session) -> None:  # type: ignore[no-untyped-def]
    try:
        await session.send("myevents")
        await session.send("linger")
        await session.sendmsg("execute", "answer", block=True, lock=True)
        await session.sendmsg("execute", "playback", PROMPT, block=True, lock=True)
        await session.sendmsg("hangup", "", "NORMAL_CLEARING")
    except Exception:
        logging.debug("call ended early", exc_info=True)


async def amain() -> None:
    args = parse_args(__doc__ or "")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("genesis").setLevel(logging.ERROR)
    server = Outbound(flow, host=args.host, port=args.port, events=False, linger=False)
    await server.start(block=False)
    assert server.server is not None
    ready(server.server.sockets[0].getsockname()[1])
    await server.server.serve_forever()


if __name__ == "__main__":
    asyncio.run(amain())
