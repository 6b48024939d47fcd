"""How a plan ends (``outcomes.conclude``) and what people are told: the rules alone."""

from __future__ import annotations

from datetime import UTC, datetime

from medbay.common.events import PlanStep
from medbay.common.records import BreakerState, RecordedAction
from medbay.executor.outcomes import (
    MESSAGE_LIMIT,
    StepEnd,
    StepResult,
    alert_message,
    conclude,
    escalation_message,
    first_line,
    issue_text,
    last_line,
    one_line,
)
from tests import factories
from tests.factories import step

RESTART = step("restart_service", "web")
CLEAR = step("clear_cache", "redis")
ALERT = step("alert_human", "oncall")


def end(
    index: int,
    s: PlanStep,
    outcome: StepResult,
    verified: bool | None = None,
    *,
    detail: str = "",
    rule: str | None = None,
    interrupted: bool = False,
) -> StepEnd:
    return StepEnd(index, s, outcome, verified, detail, rule, interrupted)


def test_a_verified_step_ends_the_plan_verified_and_nobody_is_told() -> None:
    tried = [
        end(0, RESTART, "success", False, detail="still 0"),
        end(1, CLEAR, "success", True, detail="back to 1"),
    ]
    assert tried[1].ends_plan and not tried[0].ends_plan
    found = conclude(tried, dry_run=False)
    assert found.outcome == "verified"
    assert found.detail == "fixed by step 2 (clear_cache redis): back to 1"
    assert found.steps_run == 2 and not found.escalated and found.escalation is None


def test_steps_done_but_nothing_verified_is_not_fixed_and_escalates() -> None:
    tried = [end(0, RESTART, "success", False, detail="no fresh sample")]
    found = conclude(tried, dry_run=False)
    assert found.outcome == "not_fixed"
    assert found.escalation == "no step's fix could be verified"
    assert "no fresh sample" in found.detail and not found.escalated


def test_every_step_failing_is_failed_and_escalates() -> None:
    tried = [
        end(0, RESTART, "failure", detail="exited within 1 s"),
        end(1, CLEAR, "failure", detail="connection refused"),
    ]
    found = conclude(tried, dry_run=False)
    assert found.outcome == "failed" and found.escalation == "every step failed"
    assert "2. clear_cache redis: failure: connection refused" in found.detail
    assert found.steps_run == 2


def test_a_refusal_ends_the_plan_refused_escalated_only_when_it_should_be() -> None:
    cooldown = end(0, RESTART, "refused", detail="cooldown: ran 3 s ago", rule="cooldown")
    found = conclude([cooldown], dry_run=False)
    assert found.outcome == "refused" and found.steps_run == 0
    assert found.escalation is None  # the executor chose not to act, and says why

    breaker = end(0, RESTART, "refused", detail="breaker open for 'web'", rule="breaker")
    found = conclude([breaker], dry_run=False)
    assert found.outcome == "refused"
    assert found.escalation == "the flap breaker of 'web' is open"

    after_a_try = [end(0, RESTART, "success", False), end(1, CLEAR, "refused", rule="allowlist")]
    assert conclude(after_a_try, dry_run=False).escalation is not None  # it acted, fixed nothing

    alert_refused = end(0, ALERT, "refused", detail="not allowlisted", rule="allowlist")
    found = conclude([alert_refused], dry_run=False)
    assert found.outcome == "refused" and found.escalation is not None
    assert not found.escalated  # a refused alert told nobody


def test_an_alert_that_went_out_is_alerted_one_that_failed_is_failed() -> None:
    found = conclude([end(0, ALERT, "success", detail="the alert went out")], dry_run=False)
    assert found.outcome == "alerted" and found.escalated and found.escalation is None

    found = conclude([end(0, ALERT, "failure", detail="HTTP 500")], dry_run=False)
    assert found.outcome == "failed" and not found.escalated
    assert found.escalation == "every step failed"

    tried = [end(0, RESTART, "success", False), end(1, ALERT, "success")]
    found = conclude(tried, dry_run=False)
    assert found.outcome == "not_fixed" and found.escalated and found.escalation is None


def test_dry_run_reports_every_step_and_names_those_that_would_fail() -> None:
    tried = [end(0, RESTART, "failure", detail="sh is not found"), end(1, ALERT, "dry_run")]
    found = conclude(tried, dry_run=True)
    assert found.outcome == "dry_run" and not found.escalated and found.escalation is None
    assert "step 1 (restart_service web) would fail: sh is not found" in found.detail
    refused = [end(0, RESTART, "refused", detail="not allowlisted", rule="allowlist")]
    assert conclude(refused, dry_run=True).outcome == "refused"


def test_an_interrupted_step_ends_the_plan_interrupted() -> None:
    tried = [end(0, RESTART, "failure", detail="interrupted", interrupted=True)]
    found = conclude(tried, dry_run=False)
    assert found.outcome == "interrupted" and "not run twice" in found.detail
    assert found.escalation is None and found.steps_run == 1


def test_the_issue_in_words_names_the_series_value_and_threshold() -> None:
    down = factories.plan(value=0.0, threshold=0.5)
    assert issue_text(down) == 'service_up{service="web"} = 0, below its threshold 0.5 (critical)'
    hot = factories.plan(metric="cpu_percent", labels={}, value=97.0, threshold=90.0)
    assert issue_text(hot) == "cpu_percent = 97, at or above its threshold 90 (critical)"
    odd = factories.plan(metric="load1", labels={}, value=7.5, threshold=None)
    assert "an anomaly (no threshold)" in issue_text(odd)


def test_the_escalation_says_the_issue_what_was_tried_and_why_it_stopped() -> None:
    plan = factories.plan(RESTART, CLEAR, host="db-1")
    tried = [
        end(0, RESTART, "success", False, detail="service_up still 0 after 60 s"),
        end(1, CLEAR, "refused", detail="cooldown: ran 3 s ago", rule="cooldown"),
    ]
    opened = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)
    breaker = BreakerState(
        opened_at=opened,
        reason="3 actions in 15 min: 3 restart_service",
        actions=[RecordedAction(action="restart_service", at=opened)],
    )
    text = escalation_message(plan, tried, "no step's fix could be verified", {"web": breaker})
    lines = text.splitlines()
    assert lines[0] == (
        "Medbay: service_down on db-1 needs a person: no step's fix could be verified."
    )
    assert lines[1] == 'Issue: service_up{service="web"} = 0, below its threshold 0.5 (critical).'
    assert lines[2] == f"Tried (plan {plan.plan_id}):"
    assert lines[3] == (
        "  1. restart_service web: success (not verified): service_up still 0 after 60 s"
    )
    assert lines[4] == "  2. clear_cache redis: refused: cooldown: ran 3 s ago"
    assert lines[5] == (
        "Breaker open for 'web' since 2026-03-04 13:30:00 UTC (3 actions in 15 min: "
        "3 restart_service): nothing more is done to it until `medbay breaker reset web`."
    )


def test_an_expired_plan_says_what_it_would_have_done() -> None:
    plan = factories.plan(RESTART, CLEAR)
    text = escalation_message(plan, [], "nobody decided on the plan in time")
    assert f"Nothing was run. The plan ({plan.plan_id}) was:" in text
    assert "  1. restart_service web (low risk)\n  2. clear_cache redis (low risk)" in text


def test_a_plans_own_alert_carries_its_words_and_what_came_before() -> None:
    plan = factories.plan(RESTART, ALERT)
    tried = [end(0, RESTART, "failure", detail="exited at once")]
    text = alert_message(plan, tried, "the web tier keeps dying")
    assert "needs a person: the plan asks for one: the web tier keeps dying." in text
    assert "1. restart_service web: failure: exited at once" in text
    alone = alert_message(factories.plan(ALERT), [], "")
    assert "the plan asks for one." in alone and "Nothing was run" not in alone


def test_a_message_stays_within_what_an_alert_may_carry() -> None:
    plan = factories.plan(*[RESTART] * 10)
    tried = [end(i, RESTART, "failure", detail="x" * 1000) for i in range(10)]
    text = escalation_message(plan, tried, "every step failed " * 300)
    assert len(text) <= MESSAGE_LIMIT


def test_a_steps_output_is_put_on_one_line() -> None:
    output = "stopped with SIGTERM:\n  PID 12 (sleep 300)\n\nstarted sleep 300 as PID 13;  alive"
    assert (
        one_line(output)
        == "stopped with SIGTERM: PID 12 (sleep 300); started sleep 300 as PID 13; alive"
    )
    assert one_line("x" * 400) == "x" * 297 + "..."
    assert last_line("head\n" + "y" * 400) == "..." + "y" * 297
    notified = "ran page: failed (exit status 1)\nalert: Medbay: disk on db-1 needs a person"
    assert first_line(notified) == "ran page: failed (exit status 1)"
