"""The learning loop's bookkeeping: outcomes of executed steps joined to the
features of the plans they belong to.

What counts: a *finished* step whose outcome is ``success`` with the fix
verified is a success; outcome ``failure``, or a fix that could not be verified,
is a failure. Refused and dry-run steps, successes not (yet) verified, and
the steps of plans people requested by hand (there is no issue to verify them
against) teach nothing. Each step counts once however often its result is
delivered.

Every outcome updates the success rates. It becomes a training row only when
its plan is known (the planner keeps the recent plans it made, and rebuilds
them from PLANS at start-up): the row is the plan's recorded features, the
step's action and whether it worked.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from medbay.common.events import ActionName, ActionResult, Plan
from medbay.planner.config import PlannerConfig
from medbay.planner.rates import SuccessRates

MANUAL_VERSION = "manual"
"""The model version of plans made from requests people made by hand."""


def outcome_of(result: ActionResult) -> bool | None:
    """True (success), False (failure) or None (teaches nothing). An ``interrupted``
    step teaches nothing: how it went is not known, and if its executor got through
    after all, its own result for the step comes later and teaches."""
    if result.status != "finished" or result.dry_run:
        return None
    if result.outcome in ("refused", "dry_run", "interrupted", None):
        return None
    if result.outcome == "failure" or result.verified is False:
        return False
    return True if result.verified is True else None


@dataclass(frozen=True)
class TrainingRow:
    plan_id: str
    kind: str
    action: ActionName
    target: str
    severity: str
    features: dict[str, float]
    success: bool


class Learner:
    """Recent plans, outcomes seen, success rates and the training rows."""

    def __init__(self, config: PlannerConfig) -> None:
        self.config = config
        self.rates = SuccessRates(config.prior_strength)
        self.plans: OrderedDict[str, Plan] = OrderedDict()
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.rows: deque[TrainingRow] = deque(maxlen=config.max_training_outcomes)
        self.new_rows = 0
        """Training rows added since the last training set was taken."""

    def remember(self, plan: Plan) -> None:
        self.plans[plan.plan_id] = plan
        self.plans.move_to_end(plan.plan_id)
        while len(self.plans) > self.config.recent_plans:
            self.plans.popitem(last=False)

    def knows(self, plan_id: str) -> bool:
        return plan_id in self.plans

    def record(self, result: ActionResult) -> bool | None:
        """Learn from ``result``; returns its outcome, or None if it taught nothing new."""
        success = outcome_of(result)
        key = (result.plan_id, result.step_index)
        plan = self.plans.get(result.plan_id)
        if success is None or key in self.seen:
            return None
        if plan is not None and plan.model_version == MANUAL_VERSION:
            return None
        self.seen[key] = None
        if len(self.seen) > 10 * self.config.recent_plans:
            self.seen.popitem(last=False)
        severity = plan.severity.value if plan is not None else None
        self.rates.record(result.issue_kind, result.action, result.target, success, severity)
        if plan is not None and plan.features:
            self.rows.append(
                TrainingRow(
                    plan.plan_id,
                    plan.issue_kind,
                    result.action,
                    result.target,
                    plan.severity.value,
                    plan.features,
                    success,
                )
            )
            self.new_rows += 1
        return success

    def training_due(self) -> bool:
        return (
            self.new_rows >= self.config.retrain_every
            and len(self.rows) >= self.config.min_outcomes
        )

    def take_training_set(self) -> list[TrainingRow]:
        self.new_rows = 0
        return list(self.rows)
