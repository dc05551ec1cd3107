"""``esl-app campaign``: create, load a CSV with bad rows (each named by line), start, pause, status, dnc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from data_fixtures import *  # noqa: F403
from data_fixtures import PG_DSN

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
