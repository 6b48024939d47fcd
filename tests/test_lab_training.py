"""``medbay lab --train``'s pieces that are plain logic: the outcomes it learns from,
the corpus it writes and the planner bench reads, the comparison it prints, and
when it fails. (The run itself is real faults for half an hour: it is measured, see
docs/lab.md, not run here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from medbay.cli.bench import load
from medbay.cli.lab.main import clean, safe
from medbay.cli.lab.observe import Seen
from medbay.cli.lab.run import learned_outcomes, learned_rows
from medbay.cli.lab.train import comparison, write_corpus
from medbay.common.events import Event, Plan
from tests.factories import issue, plan, result, step

CATALOG = {
    "mode": "live",
    "written_at": datetime(2026, 1, 5, tzinfo=UTC).isoformat(),
    "targets": {
        "logs": {
            "kind": "files",
            "actions": ["rotate_logs", "cleanup_disk"],
            "covers": ["/var/log"],
        },
        "web": {"kind": "process", "actions": ["restart_service"]},
        "oncall": {"kind": "notifier", "actions": ["alert_human"]},
    },
}


def seen(*events: Event) -> list[Seen]:
    return [Seen(float(i), e) for i, e in enumerate(events)]


def disk_episode(n: int, first: str, first_worked: bool) -> list[Event]:
    """A disk issue on h1's /var/log whose plan tried ``first`` then the other fix."""
    found = issue("disk", n=n)
    second = "rotate_logs" if first == "cleanup_disk" else "cleanup_disk"
    made = plan(
        step(first, "logs"),  # type: ignore[arg-type]
        step(second, "logs"),  # type: ignore[arg-type]
        issue_event_id=found.event_id,
        issue_kind="disk",
        model_version="rules-v1",
    )
    events: list[Event] = [found, made]
    events.append(result(made.plan_id, 0, first, "logs", kind="disk", status="started"))
    if first_worked:
        events.append(result(made.plan_id, 0, first, "logs", kind="disk"))
    else:
        events.append(result(made.plan_id, 0, first, "logs", kind="disk", verified=False))
        events.append(result(made.plan_id, 1, second, "logs", kind="disk"))
    return events


def test_the_outcomes_learnt_from_are_those_the_planner_counts() -> None:
    episode = disk_episode(0, "cleanup_disk", first_worked=False)
    made = episode[1]
    assert isinstance(made, Plan)
    manual = plan(model_version="manual")
    events = [
        *episode,
        episode[-1],  # a redelivered result counts once
        result(made.plan_id, 5, "rotate_logs", "logs", kind="disk", dry_run=True),
        manual,
        result(manual.plan_id, 0, "restart_service", "web"),  # asked for by hand
    ]
    rows = learned_rows(seen(*events))
    assert [(r["action"], r["success"]) for r in rows] == [
        ("cleanup_disk", False),
        ("rotate_logs", True),
    ]
    assert rows[0]["issue"]["kind"] == "disk" and rows[0]["model_version"] == "rules-v1"
    assert learned_outcomes(seen(*events)) == {"success": 1, "failure": 1}


def write_lab_corpus(path: Path, episodes: int = 12) -> Path:
    events: list[Event] = []
    for n in range(episodes):  # cleanup_disk never fixes these logs, rotate_logs does
        events += disk_episode(n, "cleanup_disk" if n % 2 else "rotate_logs", n % 2 == 0)
    write_corpus(learned_rows(seen(*events)), CATALOG, path)
    return path


def test_a_lab_corpus_is_a_world_the_planner_bench_learns_in(tmp_path: Path) -> None:
    bench = load("planner")
    world = bench.lab_world(write_lab_corpus(tmp_path / "outcomes.json"))
    [scenario] = {i.scenario.name: i.scenario for i in world.corpus(1, 20, "t")}.values()
    assert scenario.name == "disk h1 /var/log" and scenario.best == "rotate_logs"
    assert scenario.success == {"cleanup_disk": 1 / 8, "rotate_logs": 13 / 14}  # 0/6, 12/12
    incidents = world.corpus(1, 3, "t")
    assert [i.issue.event_id for i in incidents] == ["t-0", "t-1", "t-2"]
    argv = [sys.executable, "-m", "medbay.cli.main", "bench", "planner"]
    argv += ["--corpus", str(tmp_path / "outcomes.json"), "--sizes", "60", "--runs", "1"]
    argv += ["--test-incidents", "100", "--latency-issues", "50"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world: lab corpus outcomes.json" in done.stdout
    assert "top-1 accuracy on held-out incidents" in done.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "Expecting value"),
        ('{"schema": "other"}', "not a lab corpus (medbay.lab.outcomes/1"),
        ('{"schema": "medbay.lab.outcomes/1", "catalog": null}', "it holds no target catalog"),
        ("BAD_ACTION", "outcome 1: ValueError: action 'reboot_everything'"),
        ("NO_OUTCOMES", "it holds no outcomes"),
    ],
)
def test_a_file_that_is_not_a_lab_corpus_is_refused_with_what_is_wrong(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "outcomes.json"
    if content in ("BAD_ACTION", "NO_OUTCOMES"):
        data = json.loads(write_lab_corpus(path, 1).read_text())
        if content == "BAD_ACTION":
            data["outcomes"][0]["action"] = "reboot_everything"
        else:
            data["outcomes"] = []
        content = json.dumps(data)
    path.write_text(content)
    with pytest.raises(SystemExit) as refused:
        load("planner").lab_world(path)
    assert f"--corpus {path}: " in str(refused.value) and problem in str(refused.value)


def totals(**changes: int | float | None) -> dict[str, Any]:
    base: dict[str, Any] = {
        "injected": 4,
        "as_expected": 4,
        "fixable": 4,
        "fixable_auto_resolved": 4,
        "escalated": 0,
        "silent": 0,
        "steps": 4,
        "needless_actions": 0,
        "outside_policy": 0,
        "quiet_issues": 0,
        "mttr_median_s": 2.0,
        "mttr_p90_s": 4.9,
    }
    return base | changes


def test_the_comparison_puts_the_rule_table_and_the_model_side_by_side() -> None:
    rules = {"totals": totals(as_expected=3, fixable_auto_resolved=3, escalated=1, steps=5)}
    summary = {
        "totals": totals(),
        "planner": "rf-1, rules-v1",
        "model": {"version": "rf-1"},
        "rule_table": rules | {"planner": "rules-v1"},
    }
    lines = comparison(summary).splitlines()
    assert lines[0].split() == ["held-out", "faults", "rule", "table", "trained", "model", "rf-1"]
    rows = {line[:22].strip(): line[22:].split("  ") for line in lines[2:]}
    assert [c.strip() for c in rows["as expected"] if c.strip()] == ["3/4", "4/4"]
    assert [c.strip() for c in rows["fixes tried (steps)"] if c.strip()] == ["5", "4"]
    assert [c.strip() for c in rows["MTTR p50 / p90"] if c.strip()] == [
        "2.0 s / 4.9 s",
        "2.0 s / 4.9 s",
    ]


def test_a_run_fails_on_a_fault_not_as_expected_and_any_run_on_needless_actions() -> None:
    assert clean(totals()) and safe(totals())
    assert not clean(totals(as_expected=3)) and safe(totals(as_expected=3))
    for unsafe in ({"needless_actions": 1}, {"outside_policy": 1}, {"quiet_issues": 1}):
        assert not safe(totals(**unsafe)) and not clean(totals(**unsafe))
