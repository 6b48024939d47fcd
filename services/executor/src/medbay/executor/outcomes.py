"""How a plan ended, in honest words, and what people are told about it.

Each step ends as its ``ActionResult`` says (``success``, ``failure``, ``refused``,
``dry_run``, with ``verified`` for a fix); ``conclude`` turns the steps a plan
went through into its ``PlanOutcome`` (``medbay.common.events``):

- ``interrupted``: the executor stopped during a step (never run twice);
- ``verified``: a step's fix was seen to work;
- ``refused``: the plan stopped at a refused step (in dry-run too: it would be);
- ``dry_run``: dry-run, every step reported with what it would do (a step whose
  inspection shows it would fail is reported as a ``failure``, with ``dry_run``);
- ``alerted``: only ``alert_human`` steps ran, and one told a person;
- ``not_fixed``: a step was done but no fix was verified;
- ``failed``: every step that ran failed.

People are told (escalation, through ``escalate_to``) when a live plan fixed
nothing after its steps ran and none of its own ``alert_human`` steps got
through, when its ``alert_human`` step was refused, or when a breaker refused a
step (once per opening of the breaker: the service holds that claim). A plan
stopped by another refusal before anything ran (allowlist, cooldown, rate limit,
maintenance) is not escalated: the executor chose not to act, and the outcome
says why. ``escalation_message`` says what the
issue is, what was tried with each step's outcome, and why it stopped.

Plain code over values: the service does the publishing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

from medbay.common.events import Plan, PlanOutcome, PlanStep
from medbay.common.records import BreakerState
from medbay.executor.verify import above_is_bad, series_name

StepResult = Literal["success", "failure", "refused", "dry_run"]
"""How one step ended, as the executor counts it: an interrupted step is a
``failure`` with ``StepEnd.interrupted`` (``ActionResult.outcome`` says
``interrupted``)."""

MESSAGE_LIMIT = 4000
"""Characters of a message for people (``AlertRaised.message``)."""
DETAIL_LIMIT = 2000
"""Characters of a plan's outcome detail (``PlanFinished.detail``)."""
LINE_LIMIT = 300
"""Characters of one step's line in a detail or a message."""


def flatten(text: str) -> str:
    """``text`` on one line: its lines joined by "; " (by a space after a colon)."""
    flat = ""
    for line in filter(None, (" ".join(line.split()) for line in text.splitlines())):
        flat += line if not flat else (" " if flat.endswith(":") else "; ") + line
    return flat


def one_line(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = flatten(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def last_line(text: str, limit: int = LINE_LIMIT) -> str:
    """The end of ``text`` on one line: what a failed command said last."""
    flat = flatten(text)
    return flat if len(flat) <= limit else "..." + flat[-(limit - 3) :]


def first_line(text: str, limit: int = LINE_LIMIT) -> str:
    """The first line of ``text``: what a notifier did, before the message it quotes."""
    return one_line(text.strip().split("\n", 1)[0], limit)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class StepEnd:
    """How one step of a plan ended."""

    index: int
    step: PlanStep
    outcome: StepResult
    verified: bool | None = None
    detail: str = ""
    """One line: the refusal, the error, what verification saw, what was sent."""
    rule: str | None = None
    """For a refusal, the rule that refused it (``breaker``, ``cooldown``, ...) if known."""
    interrupted: bool = False

    @property
    def ran(self) -> bool:
        """Whether it was started (a refused step was not)."""
        return self.outcome != "refused"

    @property
    def told_a_person(self) -> bool:
        return self.step.action == "alert_human" and self.outcome == "success"

    @property
    def ends_plan(self) -> bool:
        """No later step runs after it."""
        return (
            self.interrupted
            or self.verified is True
            or self.outcome == "refused"
            or self.told_a_person
        )

    def line(self) -> str:
        """``1. restart_service web: success (verified): service_up back to 1 ...``"""
        what: str = "interrupted" if self.interrupted else self.outcome
        if self.verified is not None:
            what += " (verified)" if self.verified else " (not verified)"
        text = f"{self.index + 1}. {self.step.action} {self.step.target}: {what}"
        return text + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class PlanEnd:
    """How a plan ended."""

    outcome: PlanOutcome
    detail: str
    steps_run: int
    escalated: bool = False
    """A person was told, by one of the plan's own steps or by an escalation."""
    escalation: str | None = None
    """Why people must be told (None: they need not be, or already were)."""


def _step_name(end: StepEnd) -> str:
    return f"step {end.index + 1} ({end.step.action} {end.step.target})"


def conclude(tried: Sequence[StepEnd], *, dry_run: bool) -> PlanEnd:
    """The outcome of a plan that went through ``tried`` (in order; at least one)."""
    assert tried, "a plan ends after at least one step"
    last = tried[-1]
    run = [t for t in tried if t.ran]
    steps_run = len(run)
    told = any(t.told_a_person for t in tried)
    acted = [t for t in run if t.step.action != "alert_human"]
    if last.interrupted:
        detail = f"{_step_name(last)} was interrupted: the executor stopped during it"
        return PlanEnd("interrupted", detail + "; it is not run twice", steps_run)
    if last.verified is True:
        return PlanEnd("verified", f"fixed by {_step_name(last)}: {last.detail}", steps_run)
    if last.outcome == "refused":
        detail = f"{_step_name(last)} refused: {last.detail}"
        escalation = None
        if last.rule == "breaker":
            escalation = f"the flap breaker of {last.step.target!r} is open"
        elif last.step.action == "alert_human" or (acted and not dry_run):
            escalation = f"{_step_name(last)} was refused: {last.detail}"
        return PlanEnd("refused", detail, steps_run, escalation=escalation)
    if dry_run:
        failing = [t for t in tried if t.outcome == "failure"]
        detail = f"dry-run: {len(tried)} step(s) reported, nothing done"
        if failing:
            detail += "; " + "; ".join(f"{_step_name(t)} would fail: {t.detail}" for t in failing)
        return PlanEnd("dry_run", detail, steps_run)
    if told and not acted:
        detail = f"a person was told by {_step_name(last)}: {last.detail}"
        return PlanEnd("alerted", detail, steps_run, True)
    done = [t for t in acted if t.outcome == "success"]
    if done:
        outcome: PlanOutcome = "not_fixed"
        detail = f"{len(done)} step(s) done, no fix verified (last: {done[-1].line()})"
        why = "no step's fix could be verified"
    else:
        outcome = "failed"
        failed = acted[-1] if acted else last
        detail = f"every step failed (last: {failed.line()})"
        why = "every step failed"
    if told:
        return PlanEnd(outcome, f"{detail}; a person was told by the plan", steps_run, True)
    return PlanEnd(outcome, detail, steps_run, escalation=why)


def issue_text(plan: Plan) -> str:
    """``service_up{service="web"} = 0, below its threshold 0.5 (critical)``."""
    series = series_name(plan.metric, plan.labels)
    if plan.threshold is None:
        return f"{series} = {plan.value:g}, an anomaly (no threshold) ({plan.severity.value})"
    side = "at or above" if above_is_bad(plan) else "below"
    threshold = f"{side} its threshold {plan.threshold:g}"
    return f"{series} = {plan.value:g}, {threshold} ({plan.severity.value})"


def planned_line(index: int, step: PlanStep) -> str:
    return f"{index + 1}. {step.action} {step.target} ({step.risk.value} risk)"


def breaker_line(target: str, breaker: BreakerState) -> str:
    return (
        f"Breaker open for {target!r} since {breaker.opened_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
        f" UTC ({breaker.reason}): nothing more is done to it until "
        f"`medbay breaker reset {shlex.quote(target)}`."
    )


def escalation_message(
    plan: Plan,
    tried: Sequence[StepEnd],
    why: str,
    breakers: Mapping[str, BreakerState] | None = None,
    *,
    planned: bool = True,
) -> str:
    """What people are told: the issue, what was tried (or, if nothing was and
    ``planned``, what the plan was), why it stopped, and the open breakers."""
    lines = [
        f"Medbay: {plan.issue_kind} on {plan.host} needs a person: {why}.",
        f"Issue: {issue_text(plan)}.",
    ]
    if tried:
        lines.append(f"Tried (plan {plan.plan_id}):")
        lines += [f"  {cut(t.line(), LINE_LIMIT)}" for t in tried]
    elif planned:
        lines.append(f"Nothing was run. The plan ({plan.plan_id}) was:")
        lines += [f"  {planned_line(i, s)}" for i, s in enumerate(plan.steps)]
    lines += [breaker_line(target, b) for target, b in sorted((breakers or {}).items())]
    return cut("\n".join(lines), MESSAGE_LIMIT)


def alert_message(plan: Plan, tried: Sequence[StepEnd], asked: str) -> str:
    """The message of a plan's own ``alert_human`` step: the plan's words (``asked``,
    may be empty), then the issue and what was tried before."""
    why = "the plan asks for one" + (f": {one_line(asked, 1000)}" if asked else "")
    return escalation_message(plan, tried, why, planned=False)
