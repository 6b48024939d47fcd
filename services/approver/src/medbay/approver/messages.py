"""What people read in Telegram: plain text (no parse mode, so nothing needs escaping:
an alert's ``<b>`` or ``*`` shows as it is)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from medbay.approver.book import ApprovalRecord, Decision
from medbay.common.events import (
    ActionResult,
    AlertRaised,
    IssueOpened,
    IssueUpdated,
    Plan,
    Severity,
)
from medbay.common.records import BreakerState

MAX_CHARS = 4096
"""Telegram's limit on a message's text."""
MAX_REASON_CHARS = 500

APPROVE_LABEL = "✅ Approve"
REJECT_LABEL = "❌ Reject"

# Answers to button clicks (shown briefly at the top of the chat).
NOT_ALLOWED = "Sorry, you are not allowed to decide on Medbay plans."
NOT_VALID = "Sorry, this button is not valid. Nothing was changed."
UNKNOWN_PLAN = "Sorry, I don't know this plan (any more). Nothing was changed."
EXPIRED = "Sorry, this approval has expired: the plan is rejected."
FAILED = "Sorry, something went wrong; please try again."
DECIDED = {"approve": "Approved: the executor will run the plan.", "reject": "Rejected."}


def human_duration(seconds: float) -> str:
    """``45 s``, ``2 min 30 s``, ``1 h 5 min``: whole seconds, rounded up."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def window_text(window: timedelta) -> str:
    """An approval window as the expiry reason says it: ``15 minutes``, ``3 seconds``."""
    seconds = round(window.total_seconds())
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute" + ("" if minutes == 1 else "s")
    return f"{seconds} second" + ("" if seconds == 1 else "s")


def clock(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


def plan_text(plan: Plan, *, trace_id: str, deadline: datetime) -> str:
    """The question: the issue, the steps with their risk, confidence, duration, trace id."""
    measured = f"{plan.metric}{_labels(plan.labels)} = {plan.value:g}"
    measured += (
        " (no threshold: an anomaly)"
        if plan.threshold is None
        else f" (threshold {plan.threshold:g})"
    )
    lines = [
        f"⚠️ Approval needed: {plan.issue_kind} on {plan.host} ({plan.severity.value})",
        measured,
        "",
        "Steps (each runs only if the one before did not fix it):",
        *(
            f"{index}. {step.action} {step.target}: risk {step.risk.value}, "
            f"~{human_duration(step.estimated_seconds)}"
            for index, step in enumerate(plan.steps, 1)
        ),
        "",
        f"Confidence {plan.confidence:.0%}, overall risk {plan.risk.value}, "
        f"~{human_duration(plan.estimated_seconds)} in all",
    ]
    if plan.reason:
        reason = plan.reason
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        lines.append(f"Why: {reason}")
    lines += [
        "",
        f"Plan: {plan.plan_id}",
        f"Trace: {trace_id or 'unknown'}",
        f"Decide by {clock(deadline)}",
    ]
    return _fit("\n".join(lines))


def decision_line(decision: Decision) -> str:
    when = clock(decision.decided_at)
    if decision.channel == "expiry":
        why = f" ({decision.reason})" if decision.reason else ""
        return f"⌛ Expired{why}: rejected at {when}"
    verb = "✅ Approved" if decision.decision == "approve" else "❌ Rejected"
    via = "" if decision.channel == "telegram" else f" via {decision.channel}"
    return f"{verb} by {decision.decided_by}{via} at {when}"


def final_text(record: ApprovalRecord) -> str:
    """The question as it was asked, with the answer below it."""
    plan = record.parsed_plan()
    assert plan is not None and record.deadline is not None and record.decision is not None
    question = plan_text(plan, trace_id=record.trace_id, deadline=record.deadline)
    return _fit(question, suffix="\n\n" + decision_line(record.decision))


def alert_text(alert: AlertRaised) -> str:
    """An alert for people: what the executor says, about which issue, from which plan."""
    head = f"🚨 Alert: {alert.issue_kind} on {alert.host}\n{alert.message}"
    return _fit(head, suffix=f"\n\nPlan: {alert.plan_id}")


def already_decided(decision: Decision) -> str:
    """The answer to a click on a plan that someone (or the expiry) decided before."""
    when = clock(decision.decided_at)
    if decision.channel == "expiry":
        return f"Already rejected: the approval expired at {when}."
    verb = "approved" if decision.decision == "approve" else "rejected"
    return f"Already {verb} by {decision.decided_by} at {when}."


def pending_text(records: Sequence[ApprovalRecord], now: datetime) -> str:
    """``/pending``: open approvals, soonest deadline first, with the time left."""
    waiting = sorted(
        (r for r in records if r.pending and r.deadline is not None),
        key=lambda r: (r.deadline, r.plan_id),
    )
    if not waiting:
        return "Nothing is waiting for approval."
    lines = [f"Waiting for approval ({len(waiting)}):"]
    for record in waiting:
        plan = record.parsed_plan()
        assert plan is not None and record.deadline is not None
        left = (record.deadline - now).total_seconds()
        steps = ", then ".join(f"{s.action} {s.target}" for s in plan.steps)
        time_left = f"{human_duration(left)} left" if left > 0 else "expiring now"
        lines.append(
            f"• {plan.issue_kind} on {plan.host}: {steps} (risk {plan.risk.value}); "
            f"{time_left}; plan {plan.plan_id}"
        )
    return _fit("\n".join(lines))


@dataclass(frozen=True)
class StatusSnapshot:
    """What ``/status`` shows; None where the source does not exist (yet)."""

    open_issues: list[IssueOpened | IssueUpdated] | None
    running_plans: list[Plan] | None
    last_results: list[ActionResult] | None
    breakers: dict[str, BreakerState] | None
    waiting: int = 0


def status_text(status: StatusSnapshot, *, limit: int = 10) -> str:
    lines: list[str] = []
    if status.open_issues is None:
        lines.append("Open issues: unknown (no detector has run yet)")
    elif not status.open_issues:
        lines.append("No open issues.")
    else:
        lines.append(f"Open issues ({len(status.open_issues)}):")
        for issue in status.open_issues[:limit]:
            icon = "🔴" if issue.severity == Severity.CRITICAL else "🟠"
            crossed = "" if issue.threshold is None else f" (threshold {issue.threshold:g})"
            lines.append(
                f"{icon} {issue.kind} on {issue.host}/{issue.resource}: "
                f"{issue.metric} = {issue.value:g}{crossed}, since {clock(issue.first_seen)}"
            )
        _more(lines, status.open_issues, limit)
    lines.append("")
    if status.running_plans:
        lines.append(f"Running plans ({len(status.running_plans)}):")
        for plan in status.running_plans[:limit]:
            steps = ", then ".join(f"{s.action} {s.target}" for s in plan.steps)
            lines.append(f"• {plan.issue_kind} on {plan.host}: {steps}; plan {plan.plan_id}")
        _more(lines, status.running_plans, limit)
    else:
        lines.append("No plan is running.")
    lines.append(
        f"Waiting for approval: {status.waiting}" + (" (/pending)" if status.waiting else "")
    )
    lines.append("")
    if status.last_results is None:
        lines.append("Last actions: unknown (no executor has run yet)")
    elif not status.last_results:
        lines.append("No actions yet.")
    else:
        lines.append("Last actions:")
        for result in status.last_results[:limit]:
            verified = {True: ", verified", False: ", not verified", None: ""}[result.verified]
            lines.append(
                f"• {clock(result.finished_at or result.started_at)} {result.action} "
                f"{result.target} on {result.host}: {result.outcome}{verified}"
            )
    lines.append("")
    if not status.breakers:
        lines.append("No breaker is open.")
    else:
        lines.append(f"Open breakers ({len(status.breakers)}):")
        for target, breaker in sorted(status.breakers.items()):
            lines.append(f"• {target}: open since {clock(breaker.opened_at)}: {breaker.reason}")
    return _fit("\n".join(lines))


def _more(lines: list[str], items: Sequence[object], limit: int) -> None:
    if len(items) > limit:
        lines.append(f"… and {len(items) - limit} more")


def _fit(text: str, suffix: str = "") -> str:
    """``text`` + ``suffix`` within Telegram's limit, cutting ``text`` if need be."""
    room = MAX_CHARS - len(suffix)
    if len(text) > room:
        text = text[: room - 1] + "…"
    return text + suffix
