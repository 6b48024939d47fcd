"""The lab, short: every fault kind once and a 2-minute quiet period, on real parts.

It asserts outcomes, never timings: each fault ends as it should (fixed and
verified, or a person told), nothing was done to a healthy target, nothing
outside policy, and the quiet period raised nothing. The lab runs beside the rest
of the suite: tests/conftest.py starts it as the session starts and runs this test
last, to wait for it and check its report (tests/lab_run.py).
"""

from __future__ import annotations

import json

import pytest

from medbay.cli.lab import duration
from medbay.cli.lab.faults import FAULTS, FAULTS_BY_KIND, Fault
from medbay.cli.lab.observe import Seen
from medbay.cli.lab.score import Episode, EpisodeResult, Policy, judge
from medbay.common.events import Event, PlanFinished
from tests.factories import plan, result, step
from tests.lab_run import LAB_RUN, TIMEOUT, start_lab


@pytest.mark.timeout(TIMEOUT)
def test_every_fault_is_healed_or_escalated_and_the_quiet_raises_nothing(
    request: pytest.FixtureRequest,
) -> None:
    run = request.config.stash.get(LAB_RUN, None)
    if run is None:  # the session did not start it (tests/conftest.py)
        run = start_lab()
        request.addfinalizer(run.stop)
    returncode = run.wait(TIMEOUT)
    assert run.report.exists(), run.stdout() + run.stderr()[-4000:]
    summary = json.loads(run.report.read_text())
    assert json.loads((run.data_dir / "lab" / "latest.json").read_text()) == summary
    assert set(summary["faults"]) == {fault.kind for fault in FAULTS}
    wrong = [e for e in summary["episodes"] if not e["as_expected"]]
    assert not wrong, (wrong, run.stdout())
    totals = summary["totals"]
    assert totals["silent"] == 0
    assert totals["needless_actions"] == 0, summary["episodes"]
    assert totals["outside_policy"] == 0, summary["episodes"]
    assert totals["quiet_issues"] == 0, summary["quiet"]
    assert totals["quiet_plans"] == totals["quiet_actions"] == 0
    assert returncode == 0, run.stdout() + run.stderr()[-4000:]


# --- how an episode is judged (plain logic, on events built to order) ------------------------


def finished(plan_id: str, outcome: str, escalated: bool = False) -> PlanFinished:
    return PlanFinished(
        plan_id=plan_id,
        issue_fingerprint="f" * 16,
        issue_kind="service_down",
        host="lab",
        outcome=outcome,
        steps_run=1,
        escalated=escalated,
        dry_run=False,
    )


def judged(fault: Fault, *events: Event) -> EpisodeResult:
    seen = [Seen(10.0 + i, e) for i, e in enumerate(events)]
    episode = Episode(fault, injected_at=5.0, ended_at=100.0, seen=seen)
    policy = Policy(allow={"restart_service": ["lab-web"], "alert_human": ["oncall"]})
    return judge(episode, seen, policy)


KILLED = FAULTS_BY_KIND["service_killed"]


def test_a_verified_fix_on_the_faults_target_is_auto_resolved_with_its_mttr() -> None:
    p = plan(step("restart_service", "lab-web"))
    got = judged(
        KILLED,
        p,
        result(p.plan_id, 0, "restart_service", "lab-web", status="started"),
        finished(p.plan_id, "verified"),
    )
    assert (got.auto_resolved, got.escalated, got.silent, got.mttr_s) == (True, False, False, 7.0)
    assert got.as_expected and not got.needless_actions and not got.outside_policy


def test_acting_on_another_target_is_needless_and_off_the_allowlist_is_outside_policy() -> None:
    p = plan(step("restart_service", "lab-worker"))
    got = judged(
        KILLED,
        p,
        result(p.plan_id, 0, "restart_service", "lab-worker", status="started"),
        finished(p.plan_id, "verified"),
    )
    assert not got.auto_resolved and got.silent and not got.as_expected
    assert got.needless_actions == ["restart_service lab-worker"]
    assert got.outside_policy == ["restart_service on lab-worker is not allowlisted"]


def test_a_plan_that_needed_approval_and_ran_without_it_is_outside_policy() -> None:
    p = plan(step("restart_service", "lab-web"), confidence=0.2)
    got = judged(KILLED, p, result(p.plan_id, 0, "restart_service", "lab-web", status="started"))
    assert got.outside_policy and "without approval" in got.outside_policy[0]


def test_an_escalation_is_counted_only_when_a_person_was_told() -> None:
    silent = FAULTS_BY_KIND["host_silent"]
    p = plan(step("alert_human", "oncall"))
    assert judged(silent, p, finished(p.plan_id, "refused")).silent
    told = judged(silent, p, finished(p.plan_id, "alerted", escalated=True))
    assert told.escalated and told.as_expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds
