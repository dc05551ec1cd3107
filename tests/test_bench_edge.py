"""``esl-app bench-edge`` runs end to end (tiny sizes): the limited rounds refuse, the unlimited do not."""

from __future__ import annotations

import json

from esl_app.cli import main


def test_bench_edge_reports_both_modes(capsys):
    assert main(["bench-edge", "--calls", "40", "--rate", "20", "--limit", "5", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    unlimited, limited = report["rounds"]
    assert unlimited["refused"] == 0 and unlimited["answered"] == 40
    assert limited["refused"] >= 10 and limited["answered"] + limited["refused"] == 40
    assert limited["node_max_per_second"] <= 5 + 1  # +1: the fitted second boundaries may be off by a call
