"""Outcomes, success rates and joining results to the plans they belong to."""

from __future__ import annotations

import pytest

from medbay.common.events import ActionRequested
from medbay.planner.config import PlannerConfig
from medbay.planner.learning import Learner, outcome_of
from medbay.planner.planning import Planner
from medbay.planner.rates import SuccessRates
from services.planner.tests.conftest import make_catalog

CATALOG = make_catalog(
    {"cache": ["clear_cache"], "api": ["restart_service", "scale_up"], "oncall": ["alert_human"]}
)
TARGETS = {"clear_cache": "cache", "restart_service": "api"}


@pytest.mark.parametrize(
    ("status", "outcome", "verified", "dry_run", "expected"),
    [
        ("finished", "success", True, False, True),
        ("finished", "success", None, False, None),  # not verified (yet)
        ("finished", "success", False, False, False),
        ("finished", "failure", None, False, False),
        ("finished", "failure", True, False, False),
        ("finished", "refused", False, False, None),
        ("finished", "dry_run", None, True, None),
        ("finished", "interrupted", None, False, None),  # how it went is not known
        ("started", None, None, False, None),
    ],
)
def test_what_an_outcome_teaches(result, status, outcome, verified, dry_run, expected):
    r = result("p1", 0, "clear_cache", "redis", outcome=outcome, verified=verified)
    r = r.model_copy(update={"status": status, "dry_run": dry_run})
    assert outcome_of(r) is expected


def test_rates_are_smoothed_level_by_level():
    rates = SuccessRates(prior_strength=2.0)
    assert rates.rate("memory", "clear_cache", "redis") == 0.5
    for success in (True, True, True, False):
        rates.record("memory", "clear_cache", "redis", success, "warning")
    # action 4/5 -> (3 + 2*0.5)/(4 + 2); kind and target pulled towards it
    overall = 4 / 6
    kind = (3 + 2 * overall) / 6
    target = (3 + 2 * kind) / 6
    assert rates.rate("memory", "clear_cache", "redis") == pytest.approx(target)
    assert rates.rate("memory", "clear_cache", "redis", "warning") == pytest.approx(
        (3 + 2 * target) / 6
    )
    # an unseen target falls back on what is known for the kind
    assert rates.rate("memory", "clear_cache", "other") == pytest.approx((0 + 2 * kind) / 2)
    rate, count = rates.evidence("memory", "clear_cache", "redis")
    assert rate == pytest.approx(target) and count == 4
    snap = rates.snapshot()
    assert snap["actions"]["clear_cache"] == {"successes": 3, "failures": 1, "rate": 0.75}
    assert snap["kinds"]["memory"]["clear_cache"]["rate"] == 0.75
    assert snap["targets"]["memory"]["clear_cache"]["redis"]["successes"] == 3


def test_learner_joins_results_to_plans_and_counts_each_step_once(issue, result, planned):
    config = PlannerConfig(min_outcomes=2, retrain_every=2, action_targets=TARGETS)
    learner = Learner(config)
    plan = planned(
        Planner(config, learner.rates).plan(issue("memory", severity="critical"), CATALOG)
    )
    learner.remember(plan)
    first = result(plan.plan_id, 0, "clear_cache", "cache", verified=False)
    assert learner.record(first) is False
    assert learner.record(first) is None  # redelivered
    assert learner.record(result(plan.plan_id, 1, "restart_service", "api")) is True
    assert [(r.action, r.success, r.severity) for r in learner.rows] == [
        ("clear_cache", False, "critical"),
        ("restart_service", True, "critical"),
    ]
    assert learner.rows[0].features == plan.features
    assert learner.training_due()
    assert len(learner.take_training_set()) == 2 and not learner.training_due()
    # a result of an unknown plan only updates the rates
    assert learner.record(result("unknown", 0, "clear_cache", "redis")) is True
    assert len(learner.rows) == 2
    assert learner.rates.by_action["clear_cache"].tries == 2


def test_a_real_result_after_an_interrupted_one_teaches(issue, result, planned):
    """A replica that took the plan over said the step was interrupted; the executor
    that ran it got through after all, and its result is the truth."""
    config = PlannerConfig(action_targets=TARGETS)
    learner = Learner(config)
    plan = planned(Planner(config, learner.rates).plan(issue("memory"), CATALOG))
    learner.remember(plan)
    cut_short = result(plan.plan_id, 0, "clear_cache", "cache", outcome="interrupted")
    assert learner.record(cut_short) is None
    assert learner.record(result(plan.plan_id, 0, "clear_cache", "cache")) is True
    assert [(r.action, r.success) for r in learner.rows] == [("clear_cache", True)]
    assert learner.record(cut_short) is None  # a late repeat changes nothing


def test_learner_keeps_only_recent_plans(issue, planned):
    config = PlannerConfig(recent_plans=100)
    learner = Learner(config)
    planner = Planner(config, learner.rates)
    plans = [planned(planner.plan(issue("cpu", n=n), CATALOG)) for n in range(101)]
    for plan in plans:
        learner.remember(plan)
    assert not learner.knows(plans[0].plan_id) and learner.knows(plans[-1].plan_id)


def test_steps_people_requested_teach_nothing(result):
    config = PlannerConfig()
    learner = Learner(config)
    request = ActionRequested(
        host="h1", action="clear_cache", target="redis", requested_by="ada", channel="cli"
    )
    plan = Planner(config, learner.rates).plan_request(request)
    learner.remember(plan)
    assert learner.record(result(plan.plan_id, 0, "clear_cache", "redis", kind="other")) is None
    assert not learner.rates.by_action and not learner.rows
