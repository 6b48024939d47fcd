"""From an issue to a plan.

Which issue events get a plan: every ``IssueOpened``, and an ``IssueUpdated``
only when it escalated from warning to critical. The plan's id (also its
``event_id``) is derived from the issue event's id, so a redelivered issue
yields the same plan and JetStream drops the repeat.

Steps escalate: the executor runs a step only if the fix of the step before
could not be verified. With a model, the steps are the best-ranked action and
then the next ones at least ``min_step_probability`` likely to succeed, up to
``max_steps``; the confidence is the best action's probability. A few model
plans explore: they try the second-best action first (see ``exploration``).
Without a model, or for an issue the model ranks no action for, the rule table
decides (see ``rules``); with ``rule_explore_rate``, a share of those plans try
another safe action first.

Every step names a target the executor's ``TargetCatalog`` permits its action
on (see ``targets``). The model ranks only such actions; a rule step without
one is dropped, and the reason says which and why. A rule left with no step
falls back to alerting a person where the rule says so; otherwise the issue is
not planned (``NotPlanned``, with why).

A plan requires approval when a step is high-risk, when its confidence is under
``min_confidence`` (except a plan that only alerts a person: it changes
nothing), or when the ``require_approval`` policy matches its issue kind, one
of its actions or its host.

An action a person requested by hand (``ActionRequested``, a quick action)
becomes a one-step plan under the same approval rules: issue kind ``other``,
metric ``manual_request``, no threshold, confidence 1, model version
``manual``. Its id is derived from the request's, like an issue's plan. Its
target is the one the person named: the executor refuses it, visibly, if it
is not one of its targets.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
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
from medbay.common.records import TargetCatalog
from medbay.planner.config import PlannerConfig
from medbay.planner.exploration import explored_action, explored_rule_action
from medbay.planner.features import plan_features
from medbay.planner.learning import MANUAL_VERSION
from medbay.planner.model import ModelBundle, RankedAction
from medbay.planner.rates import SuccessRates
from medbay.planner.rules import FALLBACK, FALLBACK_CONFIDENCE, RULES, RULES_VERSION
from medbay.planner.targets import TargetChoice, choose_targets, step_params


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


@dataclass(frozen=True)
class NotPlanned:
    """An issue that gets no plan: no step has a target, and there is no fallback."""

    reason: str
    """A short label, for counting."""
    why: str


@dataclass(frozen=True)
class _Decision:
    steps: list[PlanStep]
    confidence: float
    version: str
    reason: str


class Planner:
    """Makes plans from the current model (if any), the rule table, the success
    rates and the executor's target catalog."""

    def __init__(
        self, config: PlannerConfig, rates: SuccessRates, model: ModelBundle | None = None
    ) -> None:
        self.config = config
        self.rates = rates
        self.model = model

    def targets(
        self, issue: IssueOpened | IssueUpdated, catalog: TargetCatalog
    ) -> dict[ActionName, TargetChoice]:
        return choose_targets(self.config, catalog, issue)

    def explores(self) -> bool:
        """Whether some plans may explore (so the open breakers are worth reading)."""
        by_model = self.model is not None and self.config.explore_rate > 0
        return by_model or self.config.rule_explore_rate > 0

    def plan(
        self,
        issue: IssueOpened | IssueUpdated,
        catalog: TargetCatalog,
        open_breakers: Collection[str] | None = None,
    ) -> Plan | NotPlanned:
        """The plan for ``issue``; ``open_breakers`` (targets whose flap breaker is
        open; None: not known) only matter to exploring."""
        choices = self.targets(issue, catalog)
        targets = {a: c.target for a, c in choices.items()}
        severity = issue.severity.value
        features = plan_features(
            issue,
            lambda action: self.rates.evidence(issue.kind, action, targets[action], severity),
            lambda action: targets[action] is not None,
        )
        plan_id = plan_id_for(issue.event_id)
        model = self.model
        ranked = model.rank(issue.kind, features) if model is not None else []
        decision: _Decision | NotPlanned
        if model is not None and ranked:
            decision = self._by_model(model.version, ranked, issue, plan_id, targets, open_breakers)
        else:
            decision = self._by_rules(issue, choices, plan_id, open_breakers)
        if isinstance(decision, NotPlanned):
            return decision
        steps, reason = decision.steps, decision.reason
        held = approval_reasons(self.config, issue.kind, issue.host, steps, decision.confidence)
        if held:
            reason += "; needs approval: " + "; ".join(held)
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
            confidence=min(max(decision.confidence, 0.0), 1.0),
            risk=highest_risk([s.risk for s in steps]),
            estimated_seconds=sum(s.estimated_seconds for s in steps),
            requires_approval=bool(held),
            reason=reason[:2000],
            model_version=decision.version,
            features=features,
        )

    def _by_model(
        self,
        version: str,
        ranked: list[RankedAction],
        issue: IssueOpened | IssueUpdated,
        plan_id: str,
        targets: dict[ActionName, str | None],
        open_breakers: Collection[str] | None,
    ) -> _Decision:
        best = ranked[0]
        later = [r for r in ranked[1:] if r.probability >= self.config.min_step_probability]
        chosen = [best, *later][: self.config.max_steps]
        ranking = ", ".join(f"{r.action} {r.probability:.2f}" for r in ranked[:4])
        steps = self._steps([r.action for r in chosen], targets, issue)
        second = explored_action(plan_id, ranked, targets, open_breakers, self.config)
        if second is not None:
            order = [second, best, *(r for r in later if r != second)][: self.config.max_steps]
            exploring = self._steps([r.action for r in order], targets, issue)
            if not any(
                approval_reasons(self.config, issue.kind, issue.host, s, best.probability)
                for s in (steps, exploring)
            ):
                why = f"{version}: exploring {second.action} before {best.action}; {ranking}"
                return _Decision(exploring, best.probability, version, why)
        return _Decision(steps, best.probability, version, f"{version}: {ranking}")

    def _by_rules(
        self,
        issue: IssueOpened | IssueUpdated,
        choices: dict[ActionName, TargetChoice],
        plan_id: str,
        open_breakers: Collection[str] | None,
    ) -> _Decision | NotPlanned:
        rule = RULES[issue.kind]
        targets = {a: c.target for a, c in choices.items()}
        kept = [a for a in rule.actions if targets[a] is not None]
        missing = [a for a in rule.actions if targets[a] is None]
        dropped = [f"{a} dropped: {choices[a].why}" for a in missing]
        reason = "; ".join([f"{RULES_VERSION}: {rule.why}", *dropped])
        if kept:
            steps = self._steps(kept, targets, issue)
            tried = explored_rule_action(plan_id, kept[0], targets, open_breakers, self.config)
            if tried is not None and kept != [FALLBACK]:
                order = [tried, *(a for a in kept if a != tried)]
                exploring = self._steps(order, targets, issue)
                if not any(
                    approval_reasons(self.config, issue.kind, issue.host, s, rule.confidence)
                    for s in (steps, exploring)
                ):
                    why = f"{RULES_VERSION}: exploring {tried} before {kept[0]}; {reason}"
                    return _Decision(exploring, rule.confidence, RULES_VERSION, why)
            return _Decision(steps, rule.confidence, RULES_VERSION, reason)
        fallback = choices[FALLBACK]
        if rule.alert and fallback.target is not None:
            note = f"Medbay may not {' or '.join(missing)} here"
            steps = self._steps([FALLBACK], targets, issue, note)
            reason += f"; alerting {fallback.target} instead"
            return _Decision(steps, FALLBACK_CONFIDENCE, RULES_VERSION, reason)
        if rule.alert:
            dropped.append(f"{FALLBACK} (the fallback) dropped: {fallback.why}")
        return NotPlanned("no_target", "; ".join(dropped))

    @staticmethod
    def _steps(
        actions: list[ActionName],
        targets: dict[ActionName, str | None],
        issue: IssueOpened | IssueUpdated,
        note: str = "",
    ) -> list[PlanStep]:
        steps = []
        for action in actions:
            target = targets[action]
            assert target is not None, "only actions with a target become steps"
            spec = ACTIONS[action]
            steps.append(
                PlanStep(
                    action=action,
                    target=target,
                    params=step_params(action, issue, note),
                    risk=spec.risk,
                    estimated_seconds=spec.typical_seconds,
                )
            )
        return steps

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
