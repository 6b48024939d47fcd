"""Incidents: each issue with its plans, approvals, results, outcomes and alerts, as
one timeline.

An incident is keyed by the issue's fingerprint; plans, results, plan outcomes
(``PlanFinished``) and alerts name it (``issue_fingerprint``), approvals name their
plan. Events of different streams arrive in any order (an approval may come before
its plan, a result before its issue), so every part is optional and joined whenever
it turns up: an approval whose plan is not known yet waits, bounded, until the plan
arrives.

An issue that is resolved and opens again stays the same incident (the same
fingerprint): each opening starts an episode (opened ... resolved, with the plans
made for it, their approvals and results), and the incident counts how often it
recurred. A quick action (a plan made from an action someone asked for) is an
incident of its own, described by what was asked, for which target and by whom.

What was done about an incident (its ``status``) is said honestly: a plan is over
only when the executor says how it ended (``PlanFinished``), and only ``verified``
means fixed; an issue no plan was made for (in its current opening) reads
``not_planned``. See ``incident_status``.

Each timeline entry keeps the W3C trace its event was published in: the issue, its
plan, the decision and the executor's steps share the trace of the metric sample that
revealed the problem, so a trace id finds them (``trace``).

Bounded by ``history_hours`` (an incident with no event since is dropped) and by
``max_incidents`` (the least recently active go first); a timeline keeps its
latest ``max_timeline_events`` entries.

Memory: a timeline keeps each event as the JSON it was stored as, with the few
fields that lists, filters and statuses need beside it, and parses it again only
when asked for it. A parsed event takes about four times the memory of its JSON.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, NamedTuple

from pydantic import Field, TypeAdapter

from medbay.common.events import (
    ActionResult,
    AlertRaised,
    Approval,
    IssueEvent,
    IssueKind,
    IssueOpened,
    IssueResolved,
    IssueUpdated,
    Plan,
    PlanFinished,
    PlanOutcome,
    Severity,
)
from medbay.gateway.schemas import (
    Episode,
    IncidentDetail,
    IncidentState,
    IncidentStatus,
    IncidentSummary,
    IssueState,
    IssueSummary,
    PendingApproval,
    PlanProgress,
    PlanStatus,
    QuickActionInfo,
    TimelineEntry,
    TraceEvent,
)

TimelineEvent = (
    IssueOpened
    | IssueUpdated
    | IssueResolved
    | Plan
    | Approval
    | ActionResult
    | PlanFinished
    | AlertRaised
)
PlanEvent = ActionResult | PlanFinished | AlertRaised
"""What the executor publishes about a plan: each names the plan's issue and host."""
_PARSE: TypeAdapter[TimelineEvent] = TypeAdapter(
    Annotated[TimelineEvent, Field(discriminator="type")]
)


MANUAL_METRIC = "manual_request"
MANUAL_VERSION = "manual"
"""The metric and model version of a plan the planner made from an ``ActionRequested``."""
_REQUESTED = re.compile(
    r"requested by (?P<who>.+?) via (?P<channel>\w+)(?:: (?P<reason>.*))?", re.DOTALL
)
_HELD = re.compile(r"; needs approval: .*$", re.DOTALL)


def quick_action_of(plan: Plan) -> QuickActionInfo | None:
    """What a quick action's plan does and who asked for it; None for any other plan."""
    if plan.metric != MANUAL_METRIC or plan.model_version != MANUAL_VERSION or not plan.steps:
        return None
    step = plan.steps[0]
    found = _REQUESTED.match(_HELD.sub("", plan.reason))
    return QuickActionInfo(
        action=step.action,
        target=step.target,
        requested_by=None if found is None else found["who"],
        channel=None if found is None else found["channel"],
        reason="" if found is None else (found["reason"] or ""),
    )


@dataclass(frozen=True)
class IncidentFilter:
    host: str | None = None
    kind: IssueKind | None = None
    severity: Severity | None = None
    state: IncidentState | None = None
    since: datetime | None = None
    """Only those with activity at or after this time."""
    kinds: frozenset[str] | None = None
    """Only those of one of these kinds."""
    resource: str | None = None
    """Only those about this resource (a service, a mount)."""


class _Entry(NamedTuple):
    """One timeline entry; ordered by time, then arrival."""

    at: datetime
    seq: int
    stream: str
    event_id: str
    raw: bytes
    trace_id: str | None


class _Result(NamedTuple):
    at: datetime
    host: str
    outcome: str | None
    raw: bytes


class _Identity(NamedTuple):
    """What an incident is about when no issue event of it is known."""

    host: str
    kind: IssueKind
    severity: Severity | None


@dataclass(slots=True)
class _PlanTrack:
    plan_id: str
    since: datetime
    """The time of the earliest event about the plan."""
    plan: bytes | None = None
    planned_at: datetime | None = None
    needs_approval: bool = False
    decision: Approval | None = None
    results: dict[tuple[int, str], bytes] = field(default_factory=dict)
    """(step index, started/finished) -> the result's JSON."""
    interrupted_steps: set[tuple[int, str]] = field(default_factory=set)
    """The keys of ``results`` that hold an ``interrupted`` result (it gives way)."""
    ended: PlanOutcome | None = None
    """How the plan ended, as its ``PlanFinished`` says; None until that arrives."""
    finished: bytes | None = None
    """The ``PlanFinished``'s JSON."""
    alerts: list[bytes] = field(default_factory=list)
    """The JSON of each ``AlertRaised`` for the plan."""

    def outcome(self) -> PlanOutcome | None:
        """How the plan ended: the executor's word, else a rejection; None: not over."""
        if self.ended is not None:
            return self.ended
        if self.decision is not None and self.decision.decision == "reject":
            return "expired" if self.decision.channel == "expiry" else "rejected"
        return None

    def status(self) -> PlanStatus:
        outcome = self.outcome()
        if outcome in ("rejected", "expired"):
            return "rejected"
        if outcome is not None:
            return "finished"
        if self.results:  # and the executor has not said it is over: steps may follow
            return "running"
        if self.needs_approval and self.decision is None:
            return "pending_approval"
        return "queued"

    def progress(self) -> PlanProgress:
        keys = sorted(self.results, key=lambda k: (k[0], k[1] != "started"))
        return PlanProgress(
            plan=None if self.plan is None else Plan.model_validate_json(self.plan),
            plan_id=self.plan_id,
            status=self.status(),
            decision=self.decision,
            results=[ActionResult.model_validate_json(self.results[k]) for k in keys],
            outcome=self.outcome(),
            finished=None
            if self.finished is None
            else PlanFinished.model_validate_json(self.finished),
            alerts=[AlertRaised.model_validate_json(raw) for raw in self.alerts],
        )


def incident_status(plan: PlanStatus | None, outcome: PlanOutcome | None) -> IncidentStatus:
    """What was done about an incident, from its latest plan's status and outcome
    (both None: no plan was made for the issue)."""
    if outcome is not None:
        return outcome
    if plan is None:
        return "not_planned"
    if plan in ("pending_approval", "queued"):
        return plan
    return "running"  # "finished" and "rejected" always come with an outcome


@dataclass(slots=True)
class _Incident:
    fingerprint: str
    last_activity: datetime
    issue: IssueEvent | None = None
    """The latest issue event."""
    identity: _Identity | None = None
    """From its first plan or result, for while no issue event is known."""
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    plans: dict[str, _PlanTrack] = field(default_factory=dict)
    timeline: list[_Entry] = field(default_factory=list)
    dropped: int = 0
    openings: int = 0
    """How often the issue opened (first time, and after each resolution)."""
    quick_action: QuickActionInfo | None = None

    @property
    def state(self) -> IncidentState:
        if self.issue is None:
            return "unknown"
        return "resolved" if isinstance(self.issue, IssueResolved) else "open"

    def current_plan(self) -> _PlanTrack | None:
        """The latest plan, unless the issue opened again after it was made: then none
        was made for this opening (yet)."""
        latest = max(self.plans.values(), key=lambda t: t.since, default=None)
        if latest is None or self.openings < 2 or self.opened_at is None:
            return latest  # a first opening's plans are its own, whatever the clocks say
        return latest if latest.since >= self.opened_at else None

    def about(self) -> tuple[str, IssueKind, Severity | None, str | None]:
        """Host, kind, severity and resource."""
        if self.issue is not None:
            i = self.issue
            return i.host, i.kind, i.severity, i.resource
        assert self.identity is not None  # an incident exists because something named it
        return self.identity.host, self.identity.kind, self.identity.severity, None

    def knows(self, event_id: str) -> bool:
        return any(entry.event_id == event_id for entry in self.timeline)


ENDINGS: dict[PlanOutcome, str] = {
    "verified": "fixed, and the fix was verified",
    "not_fixed": "not fixed: no fix could be verified",
    "failed": "failed: nothing was fixed",
    "refused": "refused by the executor: nothing was fixed",
    "dry_run": "dry run: nothing was done",
    "alerted": "a person was alerted",
    "interrupted": "interrupted: not fixed",
    "rejected": "rejected",
    "expired": "expired: nobody decided in time",
}
"""How each plan outcome reads in a timeline summary."""


def summarize(event: TimelineEvent) -> str:
    """One readable line for a timeline entry."""
    if isinstance(event, IssueOpened):
        threshold = "" if event.threshold is None else f" (threshold {event.threshold:g})"
        return (
            f"{event.severity.value} {event.kind} on {event.host} {event.resource}: "
            f"{event.metric}={event.value:g}{threshold}, by {event.detector}"
        )
    if isinstance(event, IssueUpdated):
        return (
            f"severity {event.previous_severity.value} -> {event.severity.value}: "
            f"{event.metric}={event.value:g}"
        )
    if isinstance(event, IssueResolved):
        return f"resolved: {event.metric}={event.value:g}"
    if isinstance(event, Plan):
        steps = ", then ".join(f"{s.action} {s.target}" for s in event.steps)
        approval = ", needs approval" if event.requires_approval else ""
        return (
            f"plan {event.plan_id}: {steps} (confidence {event.confidence:.2f},"
            f" risk {event.risk.value}, {event.model_version}{approval})"
        )
    if isinstance(event, Approval):
        verb = "approved" if event.decision == "approve" else "rejected"
        reason = f": {event.reason}" if event.reason else ""
        return f"{verb} by {event.decided_by} via {event.channel}{reason}"
    if isinstance(event, PlanFinished):
        detail = f" ({event.detail})" if event.detail else ""
        told = ", a person was alerted" if event.escalated and event.outcome != "alerted" else ""
        return f"plan {event.plan_id} ended: {ENDINGS[event.outcome]}{detail}{told}"
    if isinstance(event, AlertRaised):
        return f"alert sent to {event.target}"
    what = f"step {event.step_index + 1} {event.action} {event.target}"
    if event.status == "started":
        return f"{what} started"
    verified = {True: ", verified", False: ", not verified", None: ""}[event.verified]
    return f"{what}: {event.outcome}{verified}"


@dataclass
class _Episode:
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    opened: bool = False
    entries: list[TimelineEntry] = field(default_factory=list)
    plan_ids: list[str] = field(default_factory=list)

    @property
    def state(self) -> IncidentState:
        if self.resolved_at is not None:
            return "resolved"
        return "open" if self.opened else "unknown"


def _plan_id(event: TimelineEvent) -> str | None:
    return None if isinstance(event, IssueEvent) else event.plan_id


def episodes(timeline: list[TimelineEntry], plans: dict[str, _PlanTrack]) -> list[Episode]:
    """The timeline (oldest first) by episode, newest first: an issue opening after it was
    resolved starts one. A plan's approval and results stay in its plan's episode, even
    when they come after the issue resolved; entries before the first opening held (the
    timeline's oldest were dropped) make an episode whose opening is unknown."""
    found: list[_Episode] = []
    plan_episode: dict[str, _Episode] = {}
    for entry in timeline:
        event = entry.event
        current = found[-1] if found else None
        if isinstance(event, IssueOpened) and (
            current is None or current.resolved_at is not None or not current.opened
        ):
            if current is not None and not current.opened and current.resolved_at is None:
                current.opened, current.opened_at = True, event.first_seen  # its own opening
            else:
                current = _Episode(opened_at=event.first_seen, opened=True)
                found.append(current)
        elif current is None:
            current = _Episode()
            found.append(current)
        plan_id = _plan_id(event)
        episode = current
        if plan_id is not None:
            episode = plan_episode.setdefault(plan_id, current)
            if plan_id not in episode.plan_ids:
                episode.plan_ids.append(plan_id)
        episode.entries.append(entry)
        if isinstance(event, IssueResolved) and episode.resolved_at is None:
            episode.resolved_at = event.last_seen
    return [
        Episode(
            number=number,
            state=e.state,
            opened_at=e.opened_at,
            resolved_at=e.resolved_at,
            plans=[plans[p].progress() for p in e.plan_ids if p in plans],
            timeline=e.entries,
        )
        for number, e in reversed(list(enumerate(found, 1)))
    ]


def issue_summary(issue: IssueEvent, incident: _Incident) -> IssueSummary:
    resolved = isinstance(issue, IssueResolved)
    state: IssueState = "resolved" if resolved else "open"
    return IssueSummary(
        fingerprint=issue.fingerprint,
        host=issue.host,
        kind=issue.kind,
        resource=issue.resource,
        metric=issue.metric,
        labels=issue.labels,
        severity=issue.severity,
        state=state,
        detail=issue.detail,
        value=issue.value,
        threshold=issue.threshold,
        detector=issue.detector,
        score=issue.score,
        first_seen=incident.opened_at or issue.first_seen,
        last_seen=issue.last_seen,
        resolved_at=incident.resolved_at if resolved else None,
        updated_at=issue.timestamp,
    )


class IncidentBook:
    def __init__(self, *, max_incidents: int, max_timeline_events: int, max_results: int) -> None:
        self.max_incidents = max_incidents
        self.max_timeline_events = max_timeline_events
        self._incidents: OrderedDict[str, _Incident] = OrderedDict()
        """Least recently active first."""
        self._plan_incident: dict[str, str] = {}
        self._waiting_approvals: OrderedDict[str, tuple[Approval, bytes, str | None]] = (
            OrderedDict()
        )
        """Approvals whose plan is not known yet, by plan id."""
        self._pending: dict[str, str] = {}
        """Plans waiting for a decision: plan id -> fingerprint."""
        self._results: deque[_Result] = deque(maxlen=max_results)
        """Finished step results, as they arrived."""
        self._traces: dict[str, set[str]] = {}
        """Trace id -> the incidents with timeline entries published in that trace."""
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._incidents)

    # --- applying events -----------------------------------------------------------

    def apply(
        self,
        event: TimelineEvent,
        stream: str,
        raw: bytes | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Take in ``event``; ``raw`` is its JSON as stored (made from it if not given),
        ``trace_id`` the trace it was published in."""
        raw = event.model_dump_json().encode() if raw is None else raw
        if isinstance(event, Approval):
            self._apply_approval(event, stream, raw, trace_id)
            return
        fingerprint = (
            event.fingerprint if isinstance(event, IssueEvent) else event.issue_fingerprint
        )
        incident = self._touch(fingerprint, event.timestamp)
        if incident.knows(event.event_id):
            return
        if isinstance(event, IssueEvent):
            self._apply_issue(incident, event)
        elif isinstance(event, Plan):
            self._apply_plan(incident, event, raw)
        else:
            self._apply_plan_event(incident, event, raw)
        self._record(incident, event.timestamp, stream, event.event_id, raw, trace_id)
        self._evict()

    def _apply_issue(self, incident: _Incident, issue: IssueEvent) -> None:
        if isinstance(issue, IssueOpened) and (
            incident.issue is None or isinstance(incident.issue, IssueResolved)
        ):
            incident.opened_at = issue.first_seen
            incident.resolved_at = None
            incident.openings += 1
        elif incident.opened_at is None:
            incident.opened_at = issue.first_seen
        if isinstance(issue, IssueResolved):
            incident.resolved_at = issue.last_seen
        incident.issue = issue

    def _apply_plan(self, incident: _Incident, plan: Plan, raw: bytes) -> None:
        track = self._track(incident, plan.plan_id, plan.timestamp)
        track.plan, track.planned_at = raw, plan.timestamp
        track.needs_approval = plan.requires_approval
        incident.identity = _Identity(plan.host, plan.issue_kind, plan.severity)
        incident.quick_action = quick_action_of(plan) or incident.quick_action
        self._plan_incident[plan.plan_id] = incident.fingerprint
        waiting = self._waiting_approvals.pop(plan.plan_id, None)
        if waiting is not None:
            self._decide(incident, track, *waiting, "APPROVALS")
        self._update_pending(incident.fingerprint, track)

    def _apply_plan_event(self, incident: _Incident, event: PlanEvent, raw: bytes) -> None:
        track = self._track(incident, event.plan_id, event.timestamp)
        if isinstance(event, ActionResult):
            key = (event.step_index, event.status)
            # The first word on a step counts, except that an executor's own result
            # replaces the "interrupted" that a replica taking the plan over reported.
            replaces = key in track.interrupted_steps and event.outcome != "interrupted"
            if key not in track.results or replaces:
                track.results[key] = raw
                if event.outcome == "interrupted":
                    track.interrupted_steps.add(key)
                else:
                    track.interrupted_steps.discard(key)
            if event.status == "finished":
                self._results.append(_Result(event.timestamp, event.host, event.outcome, raw))
        elif isinstance(event, PlanFinished):
            # The first word on it counts; a real end replaces an "interrupted" one.
            if track.finished is None or (
                track.ended == "interrupted" and event.outcome != "interrupted"
            ):
                track.ended, track.finished = event.outcome, raw
        elif raw not in track.alerts:
            track.alerts.append(raw)
        if incident.identity is None:
            incident.identity = _Identity(event.host, event.issue_kind, None)
        self._update_pending(incident.fingerprint, track)

    def _apply_approval(
        self, approval: Approval, stream: str, raw: bytes, trace_id: str | None
    ) -> None:
        fingerprint = self._plan_incident.get(approval.plan_id)
        incident = None if fingerprint is None else self._incidents.get(fingerprint)
        if incident is None:
            # the first decides
            self._waiting_approvals.setdefault(approval.plan_id, (approval, raw, trace_id))
            while len(self._waiting_approvals) > self.max_incidents:
                self._waiting_approvals.popitem(last=False)
            return
        self._touch(incident.fingerprint, approval.timestamp)
        track = self._track(incident, approval.plan_id, approval.timestamp)
        self._decide(incident, track, approval, raw, trace_id, stream)

    def _decide(
        self,
        incident: _Incident,
        track: _PlanTrack,
        approval: Approval,
        raw: bytes,
        trace_id: str | None,
        stream: str,
    ) -> None:
        if incident.knows(approval.event_id):
            return
        if track.decision is None:  # the first decision is the one the executor took
            track.decision = approval
        self._record(incident, approval.timestamp, stream, approval.event_id, raw, trace_id)
        self._update_pending(incident.fingerprint, track)

    def _touch(self, fingerprint: str, at: datetime) -> _Incident:
        incident = self._incidents.get(fingerprint)
        if incident is None:
            incident = self._incidents[fingerprint] = _Incident(fingerprint, at)
        else:
            incident.last_activity = max(incident.last_activity, at)
            self._incidents.move_to_end(fingerprint)
        return incident

    def _track(self, incident: _Incident, plan_id: str, at: datetime) -> _PlanTrack:
        """The plan's track; ``at``: the time of the event about it."""
        track = incident.plans.get(plan_id)
        if track is None:
            track = incident.plans[plan_id] = _PlanTrack(plan_id, at)
        else:
            track.since = min(track.since, at)
        return track

    def _record(
        self,
        incident: _Incident,
        at: datetime,
        stream: str,
        event_id: str,
        raw: bytes,
        trace_id: str | None,
    ) -> None:
        self._sequence += 1  # keeps arrival order among equal timestamps
        entry = _Entry(at, self._sequence, stream, event_id, raw, trace_id)
        bisect.insort(incident.timeline, entry)
        if trace_id is not None:
            self._traces.setdefault(trace_id, set()).add(incident.fingerprint)
        excess = len(incident.timeline) - self.max_timeline_events
        if excess > 0:
            gone = {e.trace_id for e in incident.timeline[:excess] if e.trace_id is not None}
            del incident.timeline[:excess]
            incident.dropped += excess
            kept = {e.trace_id for e in incident.timeline}
            self._unindex(incident.fingerprint, gone - kept)

    def _unindex(self, fingerprint: str, trace_ids: Iterable[str]) -> None:
        for trace_id in trace_ids:
            fingerprints = self._traces.get(trace_id)
            if fingerprints is not None:
                fingerprints.discard(fingerprint)
                if not fingerprints:
                    del self._traces[trace_id]

    def _update_pending(self, fingerprint: str, track: _PlanTrack) -> None:
        if track.status() == "pending_approval":
            self._pending[track.plan_id] = fingerprint
        else:
            self._pending.pop(track.plan_id, None)

    def _evict(self) -> None:
        while len(self._incidents) > self.max_incidents:
            _, incident = self._incidents.popitem(last=False)
            self._forget(incident)

    def _forget(self, incident: _Incident) -> None:
        for plan_id in incident.plans:
            self._plan_incident.pop(plan_id, None)
            self._pending.pop(plan_id, None)
        self._unindex(
            incident.fingerprint, {e.trace_id for e in incident.timeline if e.trace_id is not None}
        )

    def prune(self, older_than: datetime) -> None:
        """Drop incidents, waiting approvals and results with nothing since ``older_than``."""
        for fingerprint in [f for f, i in self._incidents.items() if i.last_activity < older_than]:
            self._forget(self._incidents.pop(fingerprint))
        for plan_id in [
            p for p, (a, _, _) in self._waiting_approvals.items() if a.timestamp < older_than
        ]:
            del self._waiting_approvals[plan_id]
        while self._results and self._results[0].at < older_than:
            self._results.popleft()

    # --- reading -------------------------------------------------------------------------

    def _plan_track(self, plan_id: str) -> _PlanTrack | None:
        fingerprint = self._plan_incident.get(plan_id)
        incident = None if fingerprint is None else self._incidents.get(fingerprint)
        return None if incident is None else incident.plans[plan_id]

    def host_of_plan(self, plan_id: str) -> str | None:
        fingerprint = self._plan_incident.get(plan_id)
        incident = None if fingerprint is None else self._incidents.get(fingerprint)
        return None if incident is None else incident.about()[0]

    def plan(self, plan_id: str) -> PlanProgress | None:
        track = self._plan_track(plan_id)
        return None if track is None else track.progress()

    def issues(self, where: IncidentFilter, limit: int) -> list[IssueSummary]:
        """Issues, most recently active first."""
        found = self._select(where, limit, lambda i: i.issue is not None)
        return [issue_summary(i.issue, i) for i in found if i.issue is not None]

    def incidents(self, where: IncidentFilter, limit: int) -> list[IncidentSummary]:
        """Incidents, most recently active first."""
        return [self._summary(i) for i in self._select(where, limit, None)]

    def incident(self, fingerprint: str) -> IncidentDetail | None:
        incident = self._incidents.get(fingerprint)
        if incident is None:
            return None
        timeline = []
        for entry in incident.timeline:
            event = _PARSE.validate_json(entry.raw)
            timeline.append(
                TimelineEntry(
                    at=entry.at,
                    stream=entry.stream,
                    summary=summarize(event),
                    event=event,
                    trace_id=entry.trace_id,
                )
            )
        return IncidentDetail(
            **dict(self._summary(incident)),
            issue=None if incident.issue is None else issue_summary(incident.issue, incident),
            plans=[t.progress() for t in incident.plans.values()],
            timeline=timeline,
            timeline_dropped=incident.dropped,
            episodes=episodes(timeline, incident.plans),
        )

    def trace(self, trace_id: str) -> tuple[list[IncidentSummary], list[TraceEvent]]:
        """The incidents (most recently active first) and their events (oldest first)
        published in the trace ``trace_id``."""
        held = (self._incidents.get(f) for f in self._traces.get(trace_id, ()))
        incidents = sorted(
            (i for i in held if i is not None), key=lambda i: i.last_activity, reverse=True
        )
        entries = sorted(
            (entry, incident.fingerprint)
            for incident in incidents
            for entry in incident.timeline
            if entry.trace_id == trace_id
        )
        events = []
        for entry, fingerprint in entries:
            event = _PARSE.validate_json(entry.raw)
            events.append(
                TraceEvent(
                    fingerprint=fingerprint,
                    at=entry.at,
                    stream=entry.stream,
                    summary=summarize(event),
                    event=event,
                )
            )
        return [self._summary(i) for i in incidents], events

    def pending_approvals(self, limit: int) -> list[PendingApproval]:
        """Plans waiting for a decision, oldest first."""
        waiting = []
        for plan_id, fingerprint in self._pending.items():
            incident = self._incidents[fingerprint]
            track = incident.plans[plan_id]
            assert track.plan is not None and track.planned_at is not None  # a pending plan
            waiting.append((track.planned_at, plan_id, track.plan, incident))
        return [
            PendingApproval(
                plan=(plan := Plan.model_validate_json(raw)),
                fingerprint=incident.fingerprint,
                waiting_since=at,
                deadline=None,
                issue=None if incident.issue is None else issue_summary(incident.issue, incident),
                quick_action=quick_action_of(plan),
            )
            for at, _, raw, incident in heapq.nsmallest(limit, waiting, key=lambda w: w[0])
        ]

    def results(
        self, *, host: str | None, outcome: str | None, since: datetime | None, limit: int
    ) -> list[ActionResult]:
        """Finished step results, newest first."""
        found: list[ActionResult] = []
        for result in reversed(self._results):
            if (
                (host is None or result.host == host)
                and (outcome is None or result.outcome == outcome)
                and (since is None or result.at >= since)
            ):
                found.append(ActionResult.model_validate_json(result.raw))
                if len(found) >= limit:
                    break
        return found

    def _select(
        self, where: IncidentFilter, limit: int, extra: Callable[[_Incident], bool] | None
    ) -> list[_Incident]:
        matching: Iterable[_Incident] = (
            i for i in self._incidents.values() if self._matches(i, where)
        )
        if extra is not None:
            matching = filter(extra, matching)
        return heapq.nlargest(limit, matching, key=lambda i: i.last_activity)

    @staticmethod
    def _matches(incident: _Incident, where: IncidentFilter) -> bool:
        if where.since is not None and incident.last_activity < where.since:
            return False
        if where.state is not None and incident.state != where.state:
            return False
        if (
            where.host is None
            and where.kind is None
            and where.severity is None
            and where.kinds is None
            and where.resource is None
        ):
            return True
        host, kind, severity, resource = incident.about()
        return (
            (where.host is None or host == where.host)
            and (where.kind is None or kind == where.kind)
            and (where.severity is None or severity == where.severity)
            and (where.kinds is None or kind in where.kinds)
            and (where.resource is None or resource == where.resource)
        )

    def _summary(self, incident: _Incident) -> IncidentSummary:
        host, kind, severity, resource = incident.about()
        current = incident.current_plan()
        plan_status = None if current is None else current.status()
        outcome = None if current is None else current.outcome()
        return IncidentSummary(
            fingerprint=incident.fingerprint,
            host=host,
            kind=kind,
            severity=severity,
            state=incident.state,
            resource=resource,
            detail="" if incident.issue is None else incident.issue.detail,
            opened_at=incident.opened_at,
            resolved_at=incident.resolved_at,
            last_activity=incident.last_activity,
            plan_count=len(incident.plans),
            plan_status=plan_status,
            outcome=outcome,
            status=incident_status(plan_status, outcome),
            pending_approval=any(p in self._pending for p in incident.plans),
            recurrences=max(0, incident.openings - 1),
            quick_action=incident.quick_action,
        )
