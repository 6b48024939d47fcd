"""The model on a small synthetic set: ranking, validation, replacement, reproduction."""

from __future__ import annotations

import numpy as np
import pytest

from medbay.common.events import Plan
from medbay.planner.config import ForestSettings, PlannerConfig
from medbay.planner.learning import Learner, TrainingRow
from medbay.planner.model import (
    NotEnoughData,
    fit,
    reproduce_ranking,
    split,
    train_and_validate,
)
from medbay.planner.modelfile import dumps, loads
from medbay.planner.planning import Planner
from tests.factories import IssueFactory, ResultFactory

CONFIG = PlannerConfig.model_validate(
    {
        "min_outcomes": 20,
        "host_targets": {
            "cache-*": {"clear_cache": "redis", "restart_service": "redis"},
            "app-*": {"clear_cache": "app-cache", "restart_service": "api"},
        },
    }
)


def learn(issue: IssueFactory, result: ResultFactory, plans: int = 60) -> tuple[Learner, Planner]:
    """Memory issues on cache hosts (clearing the cache works, restarting does not) and
    on app hosts (the other way round); both steps of each plan report."""
    learner = Learner(CONFIG)
    planner = Planner(CONFIG, learner.rates)
    for n in range(plans):
        host = f"cache-{n % 3}" if n % 2 else f"app-{n % 3}"
        plan = planner.plan(issue("memory", host=host, n=n, value=86 + n % 13))
        learner.remember(plan)
        for index, step in enumerate(plan.steps):
            works = (step.action == "clear_cache") == host.startswith("cache")
            outcome = "success" if works else "failure"
            learner.record(
                result(plan.plan_id, index, step.action, step.target, host=host, outcome=outcome)
            )
    return learner, planner


def test_the_model_ranks_the_action_that_works_here_first(issue, result):
    learner, planner = learn(issue, result)
    training = train_and_validate(learner.take_training_set(), CONFIG, None)
    bundle = training.bundle
    assert training.accepted and bundle.validation_accuracy is not None
    assert bundle.validation_accuracy >= 0.9
    assert bundle.candidates == {"memory": ("restart_service", "clear_cache")}
    planner.model = bundle
    cache = planner.plan(issue("memory", host="cache-1", n=1000))
    app = planner.plan(issue("memory", host="app-2", n=1001))
    assert cache.steps[0].action == "clear_cache" and cache.steps[0].target == "redis"
    assert app.steps[0].action == "restart_service" and app.steps[0].target == "api"
    for plan in (cache, app):
        assert plan.model_version == bundle.version
        assert 0.5 < plan.confidence <= 1.0
        assert plan.reason.startswith(bundle.version)


def test_kinds_and_targets_without_outcomes_fall_back_on_the_rules(issue, result):
    learner, planner = learn(issue, result)
    planner.model = train_and_validate(learner.rows, CONFIG, None).bundle
    assert planner.plan(issue("disk", host="cache-1")).model_version == "rules-v1"
    # nothing was tried on web-1's targets (the issue's resource, memory_percent)
    assert planner.plan(issue("memory", host="web-1")).model_version == "rules-v1"


def test_fast_probabilities_match_the_pipeline(issue, result):
    learner, _ = learn(issue, result)
    bundle = train_and_validate(learner.rows, CONFIG, None).bundle
    x = bundle.matrix([r.features for r in learner.rows], [r.action for r in learner.rows])
    expected = bundle.pipeline.predict_proba(x)[:, bundle.success_column]
    np.testing.assert_allclose(bundle.probabilities(x), expected, rtol=1e-12)


def test_a_plan_can_be_reproduced_from_its_features(issue, result):
    learner, planner = learn(issue, result)
    bundle = train_and_validate(learner.rows, CONFIG, None).bundle
    planner.model = bundle
    made = planner.plan(issue("memory", host="app-1", n=2000))
    # as read back from PLANS, with the model read back from the object store
    stored = Plan.model_validate_json(made.model_dump_json())
    ranking = reproduce_ranking(stored, loads(dumps(bundle)))
    assert ranking[0] == (made.steps[0].action, made.confidence)
    assert [r.action for r in ranking][: len(made.steps)] == [s.action for s in made.steps]
    # the rates have moved on since; the plan's features still give the same ranking
    for _ in range(20):
        learner.rates.record("memory", "clear_cache", "app-cache", True, "warning")
    assert reproduce_ranking(stored, bundle) == ranking
    with pytest.raises(ValueError, match="made by"):
        reproduce_ranking(stored.model_copy(update={"model_version": "rf-other"}), bundle)


def test_a_new_model_replaces_the_current_only_if_at_least_as_good(issue, result):
    learner, _ = learn(issue, result)
    rows = list(learner.rows)
    current = train_and_validate(rows, CONFIG, None)
    assert current.accepted and current.current_accuracy is None

    same = train_and_validate(rows, CONFIG, current.bundle)
    assert same.bundle.validation_accuracy == same.current_accuracy
    assert same.accepted

    # trees that cannot split learn nothing: judged on the same held-out outcomes
    stump = CONFIG.model_copy(update={"forest": ForestSettings(min_samples_leaf=1000)})
    worse = train_and_validate(rows, stump, current.bundle)
    assert worse.bundle.holdout == current.bundle.holdout
    assert worse.current_accuracy is not None and worse.bundle.validation_accuracy is not None
    assert worse.bundle.validation_accuracy < worse.current_accuracy
    assert not worse.accepted


def test_held_out_plans_stay_held_out(issue, result):
    learner, _ = learn(issue, result)
    train, held = split(learner.rows, 0.2)
    assert held and train
    assert not {r.plan_id for r in train} & {r.plan_id for r in held}
    assert split(list(reversed(learner.rows)), 0.2)[1] == list(reversed(held))


def test_not_enough_data(issue, result):
    learner, _ = learn(issue, result, plans=4)
    with pytest.raises(NotEnoughData, match="20 needed"):
        train_and_validate(learner.rows, CONFIG, None)
    only_successes = [TrainingRow("p", "memory", "clear_cache", "redis", "warning", {}, True)] * 30
    with pytest.raises(NotEnoughData, match="not both"):
        fit(only_successes, CONFIG)
