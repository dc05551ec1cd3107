"""The isolation benchmark's dialer mode runs end to end with tiny numbers (so it cannot rot): a real
supervisor, ``esl-app dialer``, fake outbound nodes and the inbound generator, in one short round.

(The figures come from ``python bench/isolation.py --dialer``, never from a timed test: nothing here
asserts a latency.)
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import redis
from data_fixtures import PG_DSN, REDIS_URL

from esl_app.pools.bench import main


def test_dialer_mode_floods_the_outbound_pool_with_the_dialers_answered_calls(capsys) -> None:
    argv = ["--dialer", "--json", "--rounds", "1", "--duration", "0.3", "--hold", "0.2", "--ring", "0.05",
            "--inbound-rate", "20", "--inbound-capacity", "20", "--outbound-capacity", "10", "--dialer-cps", "20",
            "--dsn", PG_DSN, "--redis", REDIS_URL]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    (only,) = result["rounds"]
    for phase in ("quiet", "flood"):
        assert only[phase]["outcomes"] == {"served": only[phase]["offered"]} and only[phase]["offered"] == 6
    assert result["errors"] == {}  # (warnings say the machine was slow: not asserted)
    # answered dialer calls ran the campaign's flow, which only the outbound pool routes (or their callee hung
    # up first, on a slow machine); the pool's own count of admitted calls agrees with what the nodes saw
    connected = only["nodes"].get("served", 0) + only["nodes"].get("cut_short", 0)
    assert connected > 0 and only["outbound_pool_accepted"] >= connected
    if only["drained"]:
        assert only["outbound_pool_accepted"] == connected
    assert only["nodes"]["placed"] >= only["nodes"]["answered"] >= connected
    assert result["dialer_exit_codes"] == [0]
    assert result["ratio"] > 0 and only["flood_cpu"]["cpu_per_s"]["dialers"] > 0

    async def schema_left() -> bool:
        conn = await asyncpg.connect(PG_DSN)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", result["schema"]))
        finally:
            await conn.close()

    assert not asyncio.run(schema_left())  # the scratch campaign is dropped
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert not list(client.scan_iter(match=result["redis_prefix"] + "*"))  # and its pacing buckets
    finally:
        client.close()
