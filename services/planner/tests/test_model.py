"""The model on a small synthetic set: ranking, validation, replacement, reproduction,
exploration, and judging a model trained elsewhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medbay.common.events import ActionName, Plan
from medbay.planner.config import ForestSettings, PlannerConfig
from medbay.planner.exploration import explored_action
from medbay.planner.learning import Learner, TrainingRow
from medbay.planner.model import (
    NotEnoughData,
    RankedAction,
    fit,
    judge_adoption,
    reproduce_ranking,
    split,
    train_and_validate,
    unit_hash,
)
from medbay.planner.modelfile import dumps, loads
from medbay.planner.planning import Planner, plan_id_for
from services.planner.tests.conftest import make_catalog
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
CATALOG = make_catalog(
    {
        "redis": ["clear_cache", "restart_service"],
        "app-cache": ["clear_cache"],
        "api": ["restart_service"],
        "oncall": ["alert_human"],
    }
)


def plan_of(planner: Planner, *args: object) -> Plan:
    made = planner.plan(*args)  # type: ignore[arg-type]
    assert isinstance(made, Plan), made
    return made


def learn(issue: IssueFactory, result: ResultFactory, plans: int = 60) -> tuple[Learner, Planner]:
    """Memory issues on cache hosts (clearing the cache works, restarting does not) and
    on app hosts (the other way round); both steps of each plan report."""
    learner = Learner(CONFIG)
    planner = Planner(CONFIG, learner.rates)
    for n in range(plans):
        host = f"cache-{n % 3}" if n % 2 else f"app-{n % 3}"
        plan = plan_of(planner, issue("memory", host=host, n=n, value=86 + n % 13), CATALOG)
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
    cache = plan_of(planner, issue("memory", host="cache-1", n=1000), CATALOG)
    app = plan_of(planner, issue("memory", host="app-2", n=1001), CATALOG)
    assert cache.steps[0].action == "clear_cache" and cache.steps[0].target == "redis"
    assert app.steps[0].action == "restart_service" and app.steps[0].target == "api"
    for plan in (cache, app):
        assert plan.model_version == bundle.version
        assert 0.5 < plan.confidence <= 1.0
        assert plan.reason.startswith(bundle.version)


def test_kinds_and_targets_without_outcomes_fall_back_on_the_rules(issue, result):
    learner, planner = learn(issue, result)
    planner.model = train_and_validate(learner.rows, CONFIG, None).bundle
    assert plan_of(planner, issue("disk", host="cache-1"), CATALOG).model_version == "rules-v1"
    # nothing was tried on web-1's targets (there are none: a person is told)
    web = plan_of(planner, issue("memory", host="web-1"), CATALOG)
    assert web.model_version == "rules-v1" and web.steps[0].action == "alert_human"


def test_the_model_ranks_only_actions_the_executor_permits_here(issue, result):
    learner, planner = learn(issue, result)
    planner.model = train_and_validate(learner.rows, CONFIG, None).bundle
    # the executor no longer lets Medbay clear redis: the model's best action here
    no_clear = make_catalog({"redis": ["restart_service"], "oncall": ["alert_human"]})
    plan = plan_of(planner, issue("memory", host="cache-1", n=1000), no_clear)
    assert [(s.action, s.target) for s in plan.steps] == [("restart_service", "redis")]
    assert plan.features["targeted:clear_cache"] == 0.0
    assert plan.model_version == planner.model.version
    assert [r.action for r in reproduce_ranking(plan, planner.model)] == ["restart_service"]
    # even a model that needs no tries on the target ranks only what has one; plans
    # from before targets were checked have no targeted: features, and rank as then
    untried = dataclasses.replace(planner.model, min_target_tries=0)
    assert [r.action for r in untried.rank("memory", plan.features)] == ["restart_service"]
    old = {k: v for k, v in plan.features.items() if not k.startswith("targeted:")}
    assert {r.action for r in untried.rank("memory", old)} == {"restart_service", "clear_cache"}


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
    made = plan_of(planner, issue("memory", host="app-1", n=2000), CATALOG)
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


# --- exploration ----------------------------------------------------------------------

EXPLORING = CONFIG.model_copy(update={"explore_rate": 0.2})


def trained(issue: IssueFactory, result: ResultFactory, config: PlannerConfig) -> Planner:
    learner, _ = learn(issue, result)
    bundle = train_and_validate(learner.rows, CONFIG, None).bundle
    return Planner(config, learner.rates, bundle)


def test_a_few_model_plans_try_the_second_best_action_first(issue, result):
    planner = trained(issue, result, EXPLORING)
    assert planner.model is not None
    events = [issue("memory", host="cache-1", n=1000 + n) for n in range(100)]
    plans = [plan_of(planner, event, CATALOG, frozenset()) for event in events]
    exploring = [p for p in plans if "exploring" in p.reason]
    # chosen by the plan id, at the configured rate
    assert {p.plan_id for p in exploring} == {
        p.plan_id for p in plans if unit_hash("explore", p.plan_id) < 0.2
    }
    assert 5 <= len(exploring) <= 40
    for plan in plans:
        ranking = reproduce_ranking(plan, planner.model)
        assert [r.action for r in ranking] == ["clear_cache", "restart_service"]
        assert plan.confidence == ranking[0].probability
        if plan in exploring:
            # the second-best first, the best right after it
            assert [s.action for s in plan.steps] == ["restart_service", "clear_cache"]
            assert plan.reason.startswith(
                f"{planner.model.version}: exploring restart_service before clear_cache"
            )
        else:
            # restarting redis seldom works: it is not even a second step
            assert [s.action for s in plan.steps] == ["clear_cache"]
    # the same issue event gets the same plan
    again = plan_of(planner, events[plans.index(exploring[0])], CATALOG, frozenset())
    assert (again.plan_id, again.steps, again.reason) == (
        exploring[0].plan_id,
        exploring[0].steps,
        exploring[0].reason,
    )


def test_exploring_only_when_it_is_safe(issue, result):
    planner = trained(issue, result, EXPLORING)
    event = next(
        e
        for e in (issue("memory", host="cache-2", n=n) for n in range(2000, 3000))
        if unit_hash("explore", plan_id_for(e.event_id)) < 0.2
    )
    assert "exploring" in plan_of(planner, event, CATALOG, frozenset()).reason

    def with_config(**changes: object) -> Planner:
        config = PlannerConfig.model_validate(EXPLORING.model_dump() | changes)
        return Planner(config, planner.rates, planner.model)

    cases: dict[str, tuple[Planner, frozenset[str] | None]] = {
        "breakers unknown": (planner, None),
        "the target's breaker is open": (planner, frozenset({"redis"})),
        "the explored action needs approval": (
            with_config(require_approval={"actions": ["restart_service"]}),
            frozenset(),
        ),
        "the host needs approval": (
            with_config(require_approval={"hosts": ["cache-*"]}),
            frozenset(),
        ),
        "exploring off": (with_config(explore_rate=0.0), frozenset()),
        "one step only": (with_config(max_steps=1), frozenset()),
        "no model": (Planner(EXPLORING, planner.rates), frozenset()),
    }
    for case, (other, breakers) in cases.items():
        plan = plan_of(other, event, CATALOG, breakers)
        assert "exploring" not in plan.reason, case
        assert plan.steps[0].action == "clear_cache", case


def test_only_a_low_risk_second_best_action_with_a_target_is_explored():
    ids = [f"plan-{n}" for n in range(1000)]
    lucky = next(i for i in ids if unit_hash("explore", i) < 0.05)
    unlucky = next(i for i in ids if unit_hash("explore", i) >= 0.05)
    targets: dict[ActionName, str | None] = {
        "restart_service": "api",
        "scale_up": "api",
        "kill_process": "api",
    }

    def explored(second: str, plan_id: str = lucky) -> RankedAction | None:
        ranked = [RankedAction("restart_service", 0.9), RankedAction(second, 0.4)]  # type: ignore[arg-type]
        return explored_action(plan_id, ranked, targets, frozenset(), PlannerConfig())

    assert explored("scale_up") is None  # medium risk
    assert explored("kill_process") is None  # high risk
    targets["alert_human"] = "oncall"
    assert explored("alert_human") is None  # not a fix
    assert explored("clear_cache") is None  # no target here
    targets["clear_cache"] = "redis"
    assert explored("clear_cache") == ("clear_cache", 0.4)
    assert explored("clear_cache", unlucky) is None


# --- a model trained elsewhere ----------------------------------------------------------


def test_a_model_from_elsewhere_is_adopted_if_there_is_none_or_it_is_no_worse(issue, result):
    learner, _ = learn(issue, result)
    rows = list(learner.rows)
    lab_config = CONFIG.model_copy(update={"trained_on": "lab"})
    lab = train_and_validate(rows, lab_config, None).bundle
    assert lab.trained_on == "lab"
    assert judge_adoption(lab, None, rows, CONFIG).adopt

    current = train_and_validate(rows, CONFIG, None).bundle
    assert current.trained_on == "live"
    same = judge_adoption(lab, current, rows, CONFIG)
    assert same.adopt and same.accuracy == same.current_accuracy is not None

    stump = CONFIG.model_copy(update={"forest": ForestSettings(min_samples_leaf=1000)})
    worse = judge_adoption(train_and_validate(rows, stump, None).bundle, current, rows, CONFIG)
    assert worse.accuracy is not None and worse.current_accuracy is not None
    assert worse.accuracy < worse.current_accuracy and not worse.adopt
    # nothing held out to compare on: the current model stays
    assert not judge_adoption(lab, current, [], CONFIG).adopt
