"""``/status`` from what others keep: the recent ISSUES events and step results (of
RESULTS, which also holds plan ends and alerts), the executor's plan book and its
breakers. Every source may be missing (its owner has not run yet), and then shows as
unknown rather than failing the command."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import Field, TypeAdapter, ValidationError

from medbay.approver.messages import StatusSnapshot
from medbay.common.events import (
    ActionResult,
    IssueChange,
    IssueOpened,
    IssueResolved,
    IssueUpdated,
    Plan,
    Severity,
)
from medbay.common.reading import read
from medbay.common.records import (
    EXECUTOR_RAILS,
    PLAN_BOOK,
    BreakerState,
    open_breakers,
    read_plans,
)
from medbay.common.streams import ISSUES, PREFIX, RESULTS, StreamSpec

ISSUE_EVENTS = 5000
"""How many of the latest issue events are read to find the open issues."""
RESULT_EVENTS = 200
"""How many of the latest RESULTS messages are read for the last actions."""
RESULT_SUBJECTS = f"{PREFIX}.results.>"
"""The step results on RESULTS (not the plan ends and alerts beside them)."""
LAST_ACTIONS = 5

_ISSUE = TypeAdapter[IssueChange](Annotated[IssueChange, Field(discriminator="type")])


def open_issues(events: Iterable[IssueChange]) -> list[IssueOpened | IssueUpdated]:
    """The issues still open after ``events`` (in stream order): critical first, then newest."""
    found: dict[str, IssueOpened | IssueUpdated] = {}
    for event in events:
        if isinstance(event, IssueResolved):
            found.pop(event.fingerprint, None)
        else:
            found[event.fingerprint] = event
    return sorted(
        found.values(),
        key=lambda e: (e.severity != Severity.CRITICAL, -e.last_seen.timestamp()),
    )


def last_actions(results: Iterable[ActionResult], count: int = LAST_ACTIONS) -> list[ActionResult]:
    """The last ``count`` finished steps, newest first."""
    finished = [r for r in results if r.status == "finished"]
    return finished[::-1][:count]


async def recent(
    js: JetStreamContext, stream: StreamSpec, count: int, subject: str | None = None
) -> list[bytes] | None:
    """The payloads of those of the last ``count`` messages of ``stream`` that are on
    ``subject`` (default: its first subject pattern); None if the stream does not exist."""
    try:
        return [m.data async for msgs in read(js, stream, subject, last=count) for m in msgs]
    except NotFoundError:
        return None


def _issues(payloads: list[bytes]) -> list[IssueChange]:
    events = []
    for data in payloads:
        try:
            events.append(_ISSUE.validate_json(data))
        except ValidationError:
            continue  # dead-lettered by its consumer
    return events


def _results(payloads: list[bytes]) -> list[ActionResult]:
    results = []
    for data in payloads:
        try:
            results.append(ActionResult.model_validate_json(data))
        except ValidationError:
            continue
    return results


async def running_plans(js: JetStreamContext) -> list[Plan] | None:
    try:
        kv = await js.key_value(PLAN_BOOK.name)
    except NotFoundError:
        return None
    records = await read_plans(kv)
    plans = [r.parsed_plan() for r in records.values() if r.state == "running"]
    return sorted((p for p in plans if p is not None), key=lambda p: p.timestamp)


async def breakers(js: JetStreamContext) -> dict[str, BreakerState] | None:
    try:
        kv = await js.key_value(EXECUTOR_RAILS.name)
    except NotFoundError:
        return None
    return await open_breakers(kv)


async def snapshot(js: JetStreamContext, waiting: int) -> StatusSnapshot:
    issue_payloads = await recent(js, ISSUES, ISSUE_EVENTS)
    result_payloads = await recent(js, RESULTS, RESULT_EVENTS, RESULT_SUBJECTS)
    return StatusSnapshot(
        open_issues=None if issue_payloads is None else open_issues(_issues(issue_payloads)),
        running_plans=await running_plans(js),
        last_results=None if result_payloads is None else last_actions(_results(result_payloads)),
        breakers=await breakers(js),
        waiting=waiting,
    )
