"""``esl-app campaign``: create, load a CSV with bad rows (each named by line), start, pause, status, dnc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN
from dialer_fixtures import make_campaign, set_status

from esl_app.dialer import store
from esl_app.dialer.flow import campaign_call


def run(pg_schema: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ESL_APP_DATA_POSTGRES_DSN=PG_DSN, ESL_APP_DATA_POSTGRES_SCHEMA=pg_schema)
    return subprocess.run([sys.executable, "-m", "esl_app.cli", "campaign", *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_a_campaign_from_csv_to_status(admin: Any, pg_schema: str, tmp_path: Path) -> None:
    created = run(pg_schema, "create", "spring", "--tenant", "pilot", "--caller-id", "+12125550100",
                  "--gateway", "sofia/gateway/carrier", "--flow", "survey", "--cps", "5",
                  "--schedule", "mon-fri 09:00-17:00")  # fmt: skip
    assert created.returncode == 0, created.stderr
    csv = tmp_path / "contacts.csv"
    csv.write_text("number,name\n+1 212 555 0101,Ann\nbogus,Bob\n+12125550102,Cy\n12,Dee\n")
    loaded = run(pg_schema, "load", "spring", str(csv))
    assert loaded.returncode == 0, loaded.stderr
    assert f"{csv}:3: skipped: not a phone number: 'bogus'" in loaded.stderr
    assert f"{csv}:5: skipped:" in loaded.stderr
    assert "2 contact(s) added, 0 already there, 2 row(s) skipped" in loaded.stdout
    again = run(pg_schema, "load", "spring", str(csv))
    assert "0 contact(s) added, 2 already there" in again.stdout
    rows = admin.fetch("SELECT number, variables FROM contacts ORDER BY number")
    assert [(r["number"], json.loads(r["variables"])) for r in rows] == [
        ("+12125550101", {"name": "Ann"}), ("+12125550102", {"name": "Cy"})]  # fmt: skip
    assert admin.fetchval("SELECT count(*) FROM campaign_hours") == 5
    assert run(pg_schema, "start", "spring").returncode == 0
    assert admin.fetchval("SELECT status FROM campaigns WHERE name = 'spring'") == "running"
    assert run(pg_schema, "pause", "spring").returncode == 0
    status = run(pg_schema, "status", "spring", "--json")
    report = json.loads(status.stdout)
    assert report["status"] == "paused" and report["contacts"] == 2 and report["remaining"] == 2
    assert "remaining  2" in run(pg_schema, "status", "spring").stdout
    assert run(pg_schema, "dnc", "+12125550102", "--tenant", "pilot").returncode == 0
    assert admin.fetchval("SELECT tenant_id FROM dnc WHERE number = '+12125550102'") == "pilot"
    missing = run(pg_schema, "start", "autumn")
    assert missing.returncode == 2 and "no campaign named 'autumn'" in missing.stderr
    bad = run(pg_schema, "create", "x", "--tenant", "pilot", "--caller-id", "12${x}", "--gateway", "g", "--flow", "f")
    assert bad.returncode == 2 and "caller_id_number" in bad.stderr


class FakeCall:
    def __init__(self, variables: dict[str, str]) -> None:
        self.variables = variables

    def variable(self, name: str, default: str | None = None) -> str | None:
        return self.variables.get(name, default)


def test_a_flow_reads_its_campaign_and_contact() -> None:
    call = FakeCall({"esl_app_campaign": "3", "esl_app_contact": "41", "esl_app_attempt": "97",
                     "esl_app_flow": "survey", "esl_app_var_name": "Ann"})  # fmt: skip
    who = campaign_call(call)
    assert who is not None and (who.campaign_id, who.contact_id, who.attempt_id, who.flow) == (3, 41, 97, "survey")
    assert who.variable(call, "name") == "Ann"
    assert campaign_call(FakeCall({})) is None


class Follower:
    """``campaign status --follow`` in a subprocess; its progress-bar frames as they are drawn."""

    FRAME = re.compile(r"(\w+) +(\w+) +\[[#.]+\] (\d+)/(\d+) dialled (\d+) answered (\d+) failed (\d+) in flight (\d+)")

    def __init__(self, pg_schema: str, name: str) -> None:
        env = dict(os.environ, ESL_APP_DATA_POSTGRES_DSN=PG_DSN, ESL_APP_DATA_POSTGRES_SCHEMA=pg_schema)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "esl_app.cli", "campaign", "status", name, "--follow", "--interval", "0.05"],
            env=env, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.output = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(4096):
            self.output += chunk

    def frames(self) -> list[tuple[str, ...]]:
        """(status, finished, total, dialled, answered, failed, in flight) of every complete frame."""
        return [m.groups()[1:] for m in self.FRAME.finditer(self.output.decode())]

    def wait_for(self, frame: tuple[str, ...], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while frame not in self.frames():
            assert self.process.poll() is None, f"the follower ended early: {self.output!r}"
            assert time.monotonic() < deadline, f"no frame {frame} in {self.output!r}"
            time.sleep(0.02)


def test_status_follow_draws_the_bar_until_the_campaign_is_done_and_its_last_call_ended(
    admin: Any, pg_schema: str
) -> None:
    # the dialer's own steps on the database (claim, settle, the hangup), without nodes: the bar must follow them
    make_campaign(admin, numbers=["+15550007001", "+15550007002", "+15550007003"], max_attempts=1)
    set_status(admin, "spring", "running")
    campaign = admin.bridge.run(store.get_campaign(admin.conn, "spring"), timeout=10)

    def claim(n: int) -> list[store.Claimed]:
        claimed, _ = admin.bridge.run(store.claim(admin.conn, campaign, "test", 30.0, n), timeout=10)
        return claimed

    def settle(attempt: store.Claimed, outcome: str, *, answered: bool, ended: bool) -> None:
        cause = None if answered else "USER_BUSY"
        admin.bridge.run(store.settle(admin.conn, campaign, attempt.attempt_id, outcome, cause,  # type: ignore[arg-type]
                                      answered=answered, ended=ended), timeout=10)  # fmt: skip

    follower = Follower(pg_schema, "spring")
    try:
        follower.wait_for(("running", "0", "3", "0", "0", "0", "0"))
        first = claim(1)[0]
        follower.wait_for(("running", "0", "3", "1", "0", "0", "1"))  # dialling: in flight, not finished
        settle(first, "answered", answered=True, ended=True)
        follower.wait_for(("running", "1", "3", "1", "1", "0", "0"))
        busy, up = claim(2)
        settle(busy, "busy", answered=False, ended=True)  # max_attempts 1: exhausted
        settle(up, "answered", answered=True, ended=False)  # answered, the call still up
        assert admin.bridge.run(store.finish_if_done(admin.conn, campaign.id), timeout=10)
        follower.wait_for(("done", "3", "3", "3", "2", "1", "1"))
        time.sleep(0.2)  # several more polls: done, but a call is still up, so the bar stays
        assert follower.process.poll() is None
        admin.bridge.run(store.record_hangup(admin.conn, up.origination_uuid, "NORMAL_CLEARING", True), timeout=10)
        assert follower.process.wait(timeout=10) == 0
    finally:
        if follower.process.poll() is None:
            follower.process.kill()
        follower.process.wait(timeout=10)
        follower.reader.join(timeout=5)
    frames = follower.frames()
    assert frames[-1] == ("done", "3", "3", "3", "2", "1", "0")
    finished = [int(f[1]) for f in frames]
    assert finished == sorted(finished) and finished[0] == 0  # the bar only fills
    assert frames[-1][1] == "3" and "[" + "#" * 30 + "] 3/3" in follower.output.decode()
    assert follower.output.endswith(b"\n")  # the bar's line is finished when the command ends
