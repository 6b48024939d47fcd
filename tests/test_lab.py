"""The lab, short: every fault kind once and a 2-minute quiet period, on real parts.

It asserts outcomes, never timings: each fault ends as it should (fixed and
verified, or a person told), nothing was done to a healthy target, nothing
outside policy, and the quiet period raised nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medbay.cli.lab.faults import FAULTS

QUIET = "120s"


@pytest.mark.timeout(1800)
def test_every_fault_is_healed_or_escalated_and_the_quiet_raises_nothing(tmp_path: Path) -> None:
    report = tmp_path / "lab.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDBAY_", "OTEL_"))}
    argv = [sys.executable, "-m", "medbay.cli.main", "lab", "--rounds", "1", "--seed", "11"]
    argv += ["--quiet-period", QUIET, "--json", str(report), "--data-dir", str(tmp_path)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    assert report.exists(), done.stdout + done.stderr[-4000:]
    summary = json.loads(report.read_text())
    assert json.loads((tmp_path / "lab" / "latest.json").read_text()) == summary
    assert set(summary["faults"]) == {fault.kind for fault in FAULTS}
    wrong = [e for e in summary["episodes"] if not e["as_expected"]]
    assert not wrong, (wrong, done.stdout)
    totals = summary["totals"]
    assert totals["silent"] == 0
    assert totals["needless_actions"] == 0, summary["episodes"]
    assert totals["outside_policy"] == 0, summary["episodes"]
    assert totals["quiet_issues"] == 0, summary["quiet"]
    assert totals["quiet_plans"] == totals["quiet_actions"] == 0
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
