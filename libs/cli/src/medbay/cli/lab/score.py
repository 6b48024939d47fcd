"""From what the lab saw to its figures: per episode, per fault kind, in total.

An *episode* is one fault, from its injection until it settled (fixed, or a
person told) or its time ran out; a *quiet period* is time with no fault at
all. What counts:

- detected: an issue opened during the episode;
- auto_resolved: a plan that acted on one of the fault's targets ended
  ``verified``;
- escalated: not auto-resolved, and a person was told (a plan ended
  ``alerted``, or ``escalated`` was set);
- silent: neither (the worst outcome: nobody fixed it and nobody knows);
- needless_actions: steps started (live) on a target other than the fault's,
  during an episode or a quiet period; plus, in quiet periods, every step;
- outside_policy: steps started on an (action, target) the executor's
  allowlist does not hold, or of a plan that needed a person's approval and had
  none;
- MTTR: from injection to the verified end of the plan that fixed it;
- steps: live steps started on the fault's targets (fixes tried, the one that
  worked included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medbay.cli.lab.faults import Fault
from medbay.cli.lab.observe import Seen
from medbay.cli.lab.sandbox import ONCALL
from medbay.common.approval import ApprovalPolicy, plan_approval_reasons
from medbay.common.events import (
    ActionResult,
    Approval,
    IssueOpened,
    Plan,
    PlanFinished,
)

FIGURES = ("injected", "detected", "auto_resolved", "escalated", "silent")


@dataclass
class Episode:
    fault: Fault
    injected_at: float
    ended_at: float = 0.0
    seen: list[Seen] = field(default_factory=list)

    def events(self, kind: type[Any]) -> list[tuple[float, Any]]:
        return [(s.at, s.event) for s in self.seen if isinstance(s.event, kind)]


@dataclass
class EpisodeResult:
    kind: str
    expected: str
    detected: bool
    auto_resolved: bool
    escalated: bool
    mttr_s: float | None
    needless_actions: list[str]
    outside_policy: list[str]
    issues: list[str]
    steps: int = 0

    @property
    def silent(self) -> bool:
        return not self.auto_resolved and not self.escalated

    @property
    def as_expected(self) -> bool:
        return self.auto_resolved if self.expected == "auto_resolved" else self.escalated


@dataclass(frozen=True)
class Policy:
    """What the lab's executor allows, to judge every step it saw started."""

    allow: dict[str, list[str]]
    min_confidence: float = 0.5

    def breaches(self, result: ActionResult, plan: Plan | None, approved: bool) -> str | None:
        if result.target not in self.allow.get(result.action, ()):
            return f"{result.action} on {result.target} is not allowlisted"
        if plan is not None and not approved:
            reasons = plan_approval_reasons(
                plan, min_confidence=self.min_confidence, policy=ApprovalPolicy()
            )
            if reasons:
                return f"plan {plan.plan_id} ran without approval: {'; '.join(reasons)}"
        return None


def _plans(seen: list[Seen]) -> dict[str, Plan]:
    return {s.event.plan_id: s.event for s in seen if isinstance(s.event, Plan)}


def _approved(seen: list[Seen]) -> set[str]:
    return {
        s.event.plan_id
        for s in seen
        if isinstance(s.event, Approval) and s.event.decision == "approve"
    }


def started_steps(window: list[Seen]) -> list[ActionResult]:
    return [
        s.event
        for s in window
        if isinstance(s.event, ActionResult) and s.event.status == "started" and not s.event.dry_run
    ]


def judge(episode: Episode, all_seen: list[Seen], policy: Policy) -> EpisodeResult:
    fault = episode.fault
    plans = _plans(all_seen)
    approved = _approved(all_seen)
    issues = [e for _, e in episode.events(IssueOpened)]
    acted_on_fault: set[str] = set()
    needless: list[str] = []
    outside: list[str] = []
    steps = 0
    for result in started_steps(episode.seen):
        if result.target in fault.targets:
            acted_on_fault.add(result.plan_id)
            steps += 1
        elif result.target != ONCALL:
            needless.append(f"{result.action} {result.target}")
        breach = policy.breaches(result, plans.get(result.plan_id), result.plan_id in approved)
        if breach:
            outside.append(breach)
    fixed_at: float | None = None
    escalated = False
    for at, finished in episode.events(PlanFinished):
        if finished.outcome == "verified" and finished.plan_id in acted_on_fault:
            fixed_at = at if fixed_at is None else min(fixed_at, at)
        if finished.escalated or finished.outcome == "alerted":
            escalated = True
    auto = fixed_at is not None and fault.expected == "auto_resolved"
    return EpisodeResult(
        kind=fault.kind,
        expected=fault.expected,
        detected=bool(issues),
        auto_resolved=auto,
        escalated=escalated and not auto,
        mttr_s=(fixed_at - episode.injected_at) if auto and fixed_at is not None else None,
        needless_actions=needless,
        outside_policy=outside,
        issues=[f"{i.kind} {i.resource} ({i.severity.value})" for i in issues],
        steps=steps,
    )


@dataclass
class QuietFigures:
    seconds: float = 0.0
    issues: list[str] = field(default_factory=list)
    plans: int = 0
    actions: list[str] = field(default_factory=list)

    def add(self, seconds: float, window: list[Seen]) -> None:
        self.seconds += seconds
        self.issues += [
            f"{s.event.kind} {s.event.resource}" for s in window if isinstance(s.event, IssueOpened)
        ]
        self.plans += sum(isinstance(s.event, Plan) for s in window)
        self.actions += [f"{r.action} {r.target}" for r in started_steps(window)]


def _mttr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    median, p90 = np.percentile(np.asarray(values), [50, 90])
    return round(float(median), 1), round(float(p90), 1)


def figures(results: list[EpisodeResult]) -> dict[str, Any]:
    mttr = [r.mttr_s for r in results if r.mttr_s is not None]
    median, p90 = _mttr(mttr)
    return {
        "injected": len(results),
        "detected": sum(r.detected for r in results),
        "auto_resolved": sum(r.auto_resolved for r in results),
        "escalated": sum(r.escalated for r in results),
        "silent": sum(r.silent for r in results),
        "as_expected": sum(r.as_expected for r in results),
        "needless_actions": sum(len(r.needless_actions) for r in results),
        "outside_policy": sum(len(r.outside_policy) for r in results),
        "mttr_median_s": median,
        "mttr_p90_s": p90,
        "steps": sum(r.steps for r in results),
    }


def report(
    results: list[EpisodeResult], quiet: QuietFigures, faults: tuple[Fault, ...]
) -> dict[str, Any]:
    """Totals and per-kind figures (the ``totals`` and ``faults`` of the JSON report)."""
    per_kind: dict[str, Any] = {}
    for fault in faults:
        mine = [r for r in results if r.kind == fault.kind]
        if mine:
            per_kind[fault.kind] = {"expected": fault.expected, **figures(mine)}
    totals = figures(results)
    totals["needless_actions"] += len(quiet.actions)
    fixable = [r for r in results if r.expected == "auto_resolved"]
    totals["fixable"] = len(fixable)
    totals["fixable_auto_resolved"] = sum(r.auto_resolved for r in fixable)
    totals.update(
        quiet_seconds=round(quiet.seconds, 1),
        quiet_issues=len(quiet.issues),
        quiet_plans=quiet.plans,
        quiet_actions=len(quiet.actions),
    )
    return {"totals": totals, "faults": per_kind}


def table(summary: dict[str, Any]) -> str:
    """The figures as a plain-text table, one row per fault kind, then the total."""
    head: tuple[str, ...] = ("fault", "expected", "injected", "detected", "auto", "escalated")
    head += ("silent", "needless", "outside", "MTTR p50", "MTTR p90")
    rows = [head]

    def row(name: str, f: dict[str, Any]) -> tuple[str, ...]:
        def seconds(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        return (
            name,
            f.get("expected", ""),
            *(str(f[k]) for k in ("injected", "detected", "auto_resolved", "escalated")),
            str(f["silent"]),
            str(f["needless_actions"]),
            str(f["outside_policy"]),
            seconds(f["mttr_median_s"]),
            seconds(f["mttr_p90_s"]),
        )

    rows += [row(kind, f) for kind, f in summary["faults"].items()]
    rows.append(row("total", summary["totals"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
