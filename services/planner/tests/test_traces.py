"""Issues from a service's traces: the rules for ``error_rate``, ``latency`` and
``no_traffic`` (their targets are the service the issue is about), and the trace
figures an issue carries becoming features the model learns from."""

from __future__ import annotations

import random

import pytest

from medbay.planner.config import PlannerConfig
from medbay.planner.features import ACTION_NAMES, ISSUE_FEATURES, issue_features, tries_feature
from medbay.planner.learning import TrainingRow
from medbay.planner.model import fit, split
from medbay.planner.planning import NotPlanned, Planner
from medbay.planner.rates import SuccessRates
from services.planner.tests.conftest import KindIssueFactory, make_catalog

SIGNALS = {
    "requests_per_second": 120.0,
    "errors_per_second": 66.0,
    "error_ratio": 0.55,
    "latency_p95_ms": 310.0,
}
TRACE_FEATURES = [f for f in ISSUE_FEATURES if f.startswith("trace:")]


def planner(**config: object) -> Planner:
    return Planner(PlannerConfig.model_validate(config), SuccessRates())


def test_trace_figures_are_features(kind_issue: KindIssueFactory):
    carried = issue_features(kind_issue("error_rate", signals=SIGNALS))
    assert {f: carried[f] for f in TRACE_FEATURES} == {
        "trace:requests_per_second": 120.0,
        "trace:errors_per_second": 66.0,
        "trace:error_ratio": 0.55,
        "trace:latency_p95_ms": 310.0,
        "trace:present": 1.0,
    }
    some = issue_features(kind_issue("latency", signals={"latency_p95_ms": 4200.0}))
    assert some["trace:latency_p95_ms"] == 4200.0 and some["trace:present"] == 1.0
    assert some["trace:requests_per_second"] == 0.0
    none = issue_features(kind_issue("no_traffic"))
    assert {none[f] for f in TRACE_FEATURES} == {0.0}


def test_error_rate_restarts_the_service_it_is_about_and_records_the_figures(
    kind_issue: KindIssueFactory,
):
    catalog = make_catalog(
        {"web": ["restart_service"], "api": ["restart_service"], "oncall": ["alert_human"]}
    )
    # a host's configured restart target must not stand in for the failing service
    made = planner(action_targets={"restart_service": "web"}).plan(
        kind_issue("error_rate", signals=SIGNALS), catalog
    )
    assert not isinstance(made, NotPlanned)
    assert [(s.action, s.target) for s in made.steps] == [("restart_service", "api")]
    assert made.features["trace:errors_per_second"] == 66.0
    assert made.features["trace:present"] == 1.0
    assert made.reason == "rules-v1: service failing requests: restart it"


@pytest.mark.parametrize("kind", ["error_rate", "latency"])
def test_a_service_nothing_may_act_on_alerts_a_person(kind_issue: KindIssueFactory, kind: str):
    made = planner().plan(kind_issue(kind), make_catalog({"oncall": ["alert_human"]}))
    assert not isinstance(made, NotPlanned)
    assert [(s.action, s.target) for s in made.steps] == [("alert_human", "oncall")]
    assert str(made.steps[0].params["message"]).startswith(f"critical {kind} on h1: api ")


def test_latency_scales_up_a_target_covering_the_service(kind_issue: KindIssueFactory):
    catalog = make_catalog({"shop": (["scale_up"], ["api"]), "oncall": ["alert_human"]})
    made = planner().plan(kind_issue("latency"), catalog)
    assert not isinstance(made, NotPlanned)
    assert [(s.action, s.target) for s in made.steps] == [("scale_up", "shop")]


def test_no_traffic_tells_a_person_and_changes_nothing(kind_issue: KindIssueFactory):
    catalog = make_catalog({"api": ["restart_service", "scale_up"], "oncall": ["alert_human"]})
    made = planner().plan(kind_issue("no_traffic"), catalog)
    assert not isinstance(made, NotPlanned)
    assert [(s.action, s.target) for s in made.steps] == [("alert_human", "oncall")]
    assert not made.requires_approval
    unplanned = planner().plan(kind_issue("no_traffic"), make_catalog({"api": ["scale_up"]}))
    assert isinstance(unplanned, NotPlanned)


def test_the_model_learns_from_the_trace_figures(kind_issue: KindIssueFactory):
    """Failing requests while slow: more replicas help; failing while fast: a restart does."""
    rng = random.Random(3)
    rows = []
    for n in range(300):
        p95 = rng.choice([rng.uniform(50, 400), rng.uniform(3000, 8000)])
        signals = SIGNALS | {"latency_p95_ms": p95}
        features = issue_features(kind_issue("error_rate", n=n, signals=signals))
        features |= {tries_feature(a): 10.0 for a in ACTION_NAMES}
        for action in ("restart_service", "scale_up"):
            success = (action == "scale_up") == (p95 > 1000)
            rows.append(
                TrainingRow(f"p{n}", "error_rate", action, "api", "critical", features, success)
            )
    train, held = split(rows, 0.2)
    bundle = fit(train, PlannerConfig(), holdout=held)
    assert set(TRACE_FEATURES) <= set(bundle.issue_features)
    assert bundle.validation_accuracy is not None and bundle.validation_accuracy >= 0.9

    def best(p95: float) -> str:
        issue = kind_issue("error_rate", signals=SIGNALS | {"latency_p95_ms": p95})
        features = issue_features(issue) | {tries_feature(a): 10.0 for a in ACTION_NAMES}
        return bundle.rank("error_rate", features)[0].action

    assert (best(150), best(6000)) == ("restart_service", "scale_up")
