"""When a plan needs a person (``medbay.common.approval``): the rules alone, no server."""

from __future__ import annotations

from medbay.common.approval import ApprovalPolicy, approval_reasons, plan_approval_reasons
from medbay.common.events import Plan, Risk
from tests import factories
from tests.factories import step

NO_POLICY = ApprovalPolicy()


def reasons(
    plan: Plan, min_confidence: float = 0.5, policy: ApprovalPolicy = NO_POLICY
) -> list[str]:
    return plan_approval_reasons(plan, min_confidence=min_confidence, policy=policy)


def test_a_confident_low_risk_plan_needs_nobody() -> None:
    assert reasons(factories.plan()) == []


def test_the_planners_mark_comes_first() -> None:
    found = reasons(factories.plan(requires_approval=True, confidence=0.1))
    assert found[0] == "the planner asks for approval"
    assert "confidence 0.10 under 0.50" in found


def test_risk_comes_from_the_catalog_not_the_plan() -> None:
    found = reasons(factories.plan(step("reboot", "web-1", Risk.LOW)))
    assert found == ["high-risk reboot"]


def test_low_confidence_holds_a_plan_unless_it_only_alerts() -> None:
    assert reasons(factories.plan(confidence=0.2)) == ["confidence 0.20 under 0.50"]
    assert reasons(factories.plan(step("alert_human", "oncall"), confidence=0.2)) == []


def test_the_policy_matches_kinds_actions_and_host_patterns() -> None:
    policy = ApprovalPolicy(kinds=["disk"], actions=["clear_cache"], hosts=["db-*", "web-?"])
    found = approval_reasons(
        "disk",
        "web-1",
        [step("clear_cache", "redis"), step("clear_cache", "memcached")],
        0.9,
        min_confidence=0.5,
        policy=policy,
    )
    assert found == [
        "policy requires approval for disk issues",
        "policy requires approval for clear_cache",
        "policy requires approval on hosts web-?",
    ]
    assert policy.matches("memory", ["restart_service"], "app-1") == []
