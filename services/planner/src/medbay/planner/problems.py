"""One plan per problem: issues of one kind on one resource of a host are one problem.

Two rules may see one problem at once: an error burst on a service crosses both
the error-rate and the error-share rule, each opening its own ``error_rate`` issue
(their fingerprints differ by metric). Planning both would restart the service
twice for one burst. So while an issue with a plan is open, another issue of the
same host, kind and resource waits here instead of being planned. When the
planned one resolves, the others usually follow within a few samples; one still
open a grace period later (the planner's ``problem_grace_seconds``: the burst went
on after the first rule cleared) is planned then.

Plain bookkeeping over the issue events the planner reads, in memory: a restarted
planner starts afresh (then at worst one problem gets two plans).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from medbay.common.events import IssueEvent, IssueResolved

ProblemKey = tuple[str, str, str]
"""(host, kind, resource)"""
W = TypeVar("W")

MAX_WAITING = 16
"""Issues kept waiting per problem (the oldest is dropped past it)."""


def problem_of(issue: IssueEvent) -> ProblemKey:
    return issue.host, issue.kind, issue.resource


class Problems(Generic[W]):
    """The planned open issue of each problem, and the issues waiting behind it, each
    held as a ``W`` (what the planner needs to plan it later)."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self._planned: dict[ProblemKey, str] = {}
        """The fingerprint of the open issue that was planned, by problem."""
        self._waiting: dict[ProblemKey, dict[str, W]] = {}
        self._due: dict[str, tuple[float, W]] = {}
        """Issues whose problem's planned issue resolved: when to plan them, by fingerprint."""

    def covering(self, issue: IssueEvent) -> str | None:
        """The fingerprint of another open, planned issue of ``issue``'s problem."""
        planned = self._planned.get(problem_of(issue))
        return planned if planned not in (None, issue.fingerprint) else None

    def wait(self, issue: IssueEvent, held: W) -> None:
        """Keep ``issue`` until the issue covering it resolves."""
        waiting = self._waiting.setdefault(problem_of(issue), {})
        waiting[issue.fingerprint] = held
        if len(waiting) > MAX_WAITING:
            del waiting[next(iter(waiting))]

    def planned(self, issue: IssueEvent) -> None:
        self._planned[problem_of(issue)] = issue.fingerprint

    def resolved(self, issue: IssueResolved, now: float) -> None:
        """Forget ``issue``; if it was its problem's planned one, the issues that waited
        behind it become due ``grace_seconds`` after ``now`` (monotonic seconds)."""
        key = problem_of(issue)
        self._due.pop(issue.fingerprint, None)
        waiting = self._waiting.get(key, {})
        waiting.pop(issue.fingerprint, None)
        if self._planned.get(key) == issue.fingerprint:
            del self._planned[key]
            for fingerprint, held in waiting.items():
                self._due[fingerprint] = (now + self.grace_seconds, held)
            waiting.clear()
        if not waiting:
            self._waiting.pop(key, None)

    def due(self, now: float) -> list[W]:
        """The issues still open ``grace_seconds`` after their problem's planned issue
        resolved: to plan now (each is returned once)."""
        ready = [fingerprint for fingerprint, (at, _) in self._due.items() if at <= now]
        return [self._due.pop(fingerprint)[1] for fingerprint in ready]
