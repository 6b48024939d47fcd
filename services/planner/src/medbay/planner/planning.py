"""From an issue to a plan.

Which issue events get a plan: every ``IssueOpened``, and an ``IssueUpdated``
only when it escalated from warning to critical. The plan's id (also its
``event_id``) is derived from the issue event's id, so a redelivered issue
yields the same plan and JetStream drops the repeat.

Steps escalate: the executor runs a step only if the fix of the step before
could not be verified. With a model, the steps are the best-ranked action and
then the next ones at least ``min_step_probability`` likely to succeed, up to
``max_steps``; the confidence is the best action's probability. Without a model,
or for an issue kind the model knows no actions for, the rule table decides
(see ``rules``).

A step's target is the issue's resource unless the config names another for
the action (``action_targets``) or for the action on this host (``host_targets``).

A plan requires approval when a step is high-risk, when its confidence is under
``min_confidence`` (except a plan that only alerts a person: it changes
nothing), or when the ``require_approval`` policy matches its issue kind, one
of its actions or its host.

An action a person requested by hand (``ActionRequested``, a quick action)
becomes a one-step plan under the same approval rules: issue kind ``other``,
metric ``manual_request``, no threshold, confidence 1, model version
``manual``. Its id is derived from the request's, like an issue's plan.
"""

from __future__ import annotations

from typing import TypeGuard

from medbay.common.actions import ACTIONS, highest_risk
from medbay.common.approval import approval_reasons as common_approval_reasons
from medbay.common.events import (
    ActionName,
    ActionRequested,
    IssueChange,
    IssueOpened,
    IssueUpdated,
    Plan,
    PlanStep,
    Severity,
    derived_event_id,
)
from medbay.planner.config import PlannerConfig
from medbay.planner.features import ACTION_NAMES, plan_features
from medbay.planner.learning import MANUAL_VERSION
from medbay.planner.model import ModelBundle
from medbay.planner.rates import SuccessRates
from medbay.planner.rules import RULES, RULES_VERSION


def plan_id_for(issue_event_id: str) -> str:
    return derived_event_id("plan", issue_event_id)


def wants_plan(issue: IssueChange) -> TypeGuard[IssueOpened | IssueUpdated]:
    if isinstance(issue, IssueOpened):
        return True
    return (
        isinstance(issue, IssueUpdated)
        and issue.previous_severity == Severity.WARNING
        and issue.severity == Severity.CRITICAL
    )


def approval_reasons(
    config: PlannerConfig, kind: str, host: str, steps: list[PlanStep], confidence: float
) -> list[str]:
    """Why a plan needs approval (empty: it does not); the executor applies the same rules."""
    return common_approval_reasons(
        kind,
        host,
        steps,
        confidence,
        min_confidence=config.min_confidence,
        policy=config.require_approval,
    )


class Planner:
    """Makes plans from the current model (if any), the rule table and the success rates."""

    def __init__(
        self, config: PlannerConfig, rates: SuccessRates, model: ModelBundle | None = None
    ) -> None:
        self.config = config
        self.rates = rates
        self.model = model

    def targets(self, issue: IssueOpened | IssueUpdated) -> dict[ActionName, str]:
        resource = issue.resource or issue.metric
        return {a: self.config.target_for(a, issue.host, resource) for a in ACTION_NAMES}

    def plan(self, issue: IssueOpened | IssueUpdated) -> Plan:
        targets = self.targets(issue)
        features = plan_features(
            issue,
            lambda action: self.rates.evidence(
                issue.kind, action, targets[action], issue.severity.value
            ),
        )
        model = self.model
        ranked = model.rank(issue.kind, features) if model is not None else []
        if model is not None and ranked:
            best = ranked[0]
            later = [r for r in ranked[1:] if r.probability >= self.config.min_step_probability]
            chosen = [best, *later][: self.config.max_steps]
            actions = [r.action for r in chosen]
            confidence = best.probability
            version = model.version
            reason = f"{version}: " + ", ".join(
                f"{r.action} {r.probability:.2f}" for r in ranked[:4]
            )
        else:
            rule = RULES[issue.kind]
            actions = list(rule.actions)
            confidence = rule.confidence
            version = RULES_VERSION
            reason = f"{RULES_VERSION}: {rule.why}"
        steps = [
            PlanStep(
                action=a,
                target=targets[a],
                risk=ACTIONS[a].risk,
                estimated_seconds=ACTIONS[a].typical_seconds,
            )
            for a in actions
        ]
        held = approval_reasons(self.config, issue.kind, issue.host, steps, confidence)
        if held:
            reason += "; needs approval: " + "; ".join(held)
        plan_id = plan_id_for(issue.event_id)
        return Plan(
            event_id=plan_id,
            plan_id=plan_id,
            issue_fingerprint=issue.fingerprint,
            issue_event_id=issue.event_id,
            host=issue.host,
            issue_kind=issue.kind,
            metric=issue.metric,
            labels=issue.labels,
            value=issue.value,
            threshold=issue.threshold,
            severity=issue.severity,
            steps=steps,
            confidence=min(max(confidence, 0.0), 1.0),
            risk=highest_risk([s.risk for s in steps]),
            estimated_seconds=sum(s.estimated_seconds for s in steps),
            requires_approval=bool(held),
            reason=reason[:2000],
            model_version=version,
            features=features,
        )

    def plan_request(self, request: ActionRequested) -> Plan:
        spec = ACTIONS[request.action]
        step = PlanStep(
            action=request.action,
            target=request.target,
            params=request.params,
            risk=spec.risk,
            estimated_seconds=spec.typical_seconds,
        )
        reason = f"requested by {request.requested_by} via {request.channel}"
        if request.reason:
            reason += f": {request.reason}"
        held = approval_reasons(self.config, "other", request.host, [step], 1.0)
        if held:
            reason += "; needs approval: " + "; ".join(held)
        plan_id = plan_id_for(request.event_id)
        return Plan(
            event_id=plan_id,
            plan_id=plan_id,
            issue_fingerprint=derived_event_id("request", request.event_id)[:16],
            issue_event_id=request.event_id,
            host=request.host,
            issue_kind="other",
            metric="manual_request",
            value=0.0,
            severity=Severity.WARNING,
            steps=[step],
            confidence=1.0,
            risk=spec.risk,
            estimated_seconds=spec.typical_seconds,
            requires_approval=bool(held),
            reason=reason[:2000],
            model_version=MANUAL_VERSION,
        )
