"""When a plan needs a person's approval: one rule set for the planner and the executor.

The planner marks a plan ``requires_approval``; the executor never trusts that
mark alone and applies the same rules itself, with each step's risk taken from
the action catalog (a plan cannot make a reboot low-risk by saying so). A plan
needs approval when it says so, when a step is high-risk, when its confidence is
under ``min_confidence`` (unless it only alerts a person: that changes nothing),
or when ``require_approval`` matches its issue kind, one of its actions or its host.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from medbay.common.actions import ACTIONS, highest_risk
from medbay.common.events import ActionName, IssueKind, Plan, PlanStep, Risk


class ApprovalPolicy(BaseModel):
    """Plans for these issue kinds, with any of these actions, or on these hosts need approval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[IssueKind] = Field(default_factory=list)
    actions: list[ActionName] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list, description="Shell-style host patterns.")

    def matches(self, kind: str, actions: Sequence[str], host: str) -> list[str]:
        """Why the policy holds a plan: one phrase per matching rule (empty: it does not)."""
        why = []
        if kind in self.kinds:
            why.append(f"policy requires approval for {kind} issues")
        for action in dict.fromkeys(a for a in actions if a in self.actions):
            why.append(f"policy requires approval for {action}")
        for pattern in self.hosts:
            if fnmatch.fnmatchcase(host, pattern):
                why.append(f"policy requires approval on hosts {pattern}")
                break
        return why


def step_risk(step: PlanStep) -> Risk:
    """The higher of the step's stated risk and its action's risk in the catalog."""
    return highest_risk([step.risk, ACTIONS[step.action].risk])


def approval_reasons(
    kind: str,
    host: str,
    steps: Sequence[PlanStep],
    confidence: float,
    *,
    min_confidence: float,
    policy: ApprovalPolicy,
) -> list[str]:
    """Why a plan with these steps needs approval (empty: it does not)."""
    why = []
    risky = [s.action for s in steps if step_risk(s) == Risk.HIGH]
    if risky:
        why.append(f"high-risk {', '.join(dict.fromkeys(risky))}")
    changes_something = any(s.action != "alert_human" for s in steps)
    if changes_something and confidence < min_confidence:
        why.append(f"confidence {confidence:.2f} under {min_confidence:.2f}")
    return why + policy.matches(kind, [s.action for s in steps], host)


def plan_approval_reasons(
    plan: Plan, *, min_confidence: float, policy: ApprovalPolicy
) -> list[str]:
    """``approval_reasons`` for a whole plan, plus the planner's own mark."""
    why = approval_reasons(
        plan.issue_kind,
        plan.host,
        plan.steps,
        plan.confidence,
        min_confidence=min_confidence,
        policy=policy,
    )
    if plan.requires_approval:
        why.insert(0, "the planner asks for approval")
    return why
