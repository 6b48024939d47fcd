"""One plan per problem: the bookkeeping, without a server."""

from __future__ import annotations

from medbay.common.events import IssueOpened, IssueResolved, issue_fingerprint
from medbay.planner.problems import MAX_WAITING, Problems
from tests import factories

GRACE = 30.0


def by_metric(metric: str, service: str = "shop", host: str = "h1") -> IssueOpened:
    labels = {"service": service}
    made = factories.issue(
        "error_rate",
        host=host,
        metric=metric,
        labels=labels,
        resource=service,
        fingerprint=issue_fingerprint(host, "error_rate", metric, labels),
    )
    assert isinstance(made, IssueOpened)
    return made


def resolution(issue: IssueOpened) -> IssueResolved:
    return IssueResolved.model_validate(issue.model_dump() | {"type": "issue.resolved"})


def test_a_second_issue_of_a_planned_problem_waits_and_is_due_if_it_outlasts_the_first() -> None:
    problems: Problems[str] = Problems(GRACE)
    rate, share = by_metric("errors"), by_metric("ratio")
    assert problems.covering(rate) is None
    problems.planned(rate)
    assert problems.covering(rate) is None  # its own later events are not covered
    assert problems.covering(share) == rate.fingerprint
    problems.wait(share, "share")
    problems.resolved(resolution(rate), now=100.0)
    assert problems.covering(share) is None
    assert problems.due(100.0 + GRACE - 1) == []
    assert problems.due(100.0 + GRACE) == ["share"]
    assert problems.due(200.0) == []  # once


def test_one_that_resolves_within_the_grace_is_never_due() -> None:
    problems: Problems[str] = Problems(GRACE)
    rate, share = by_metric("errors"), by_metric("ratio")
    problems.planned(rate)
    problems.wait(share, "share")
    problems.resolved(resolution(rate), now=100.0)
    problems.resolved(resolution(share), now=105.0)
    assert problems.due(1000.0) == []


def test_other_hosts_kinds_and_resources_are_other_problems() -> None:
    problems: Problems[str] = Problems(GRACE)
    problems.planned(by_metric("errors"))
    assert problems.covering(by_metric("ratio", service="cart")) is None
    assert problems.covering(by_metric("ratio", host="h2")) is None


def test_a_waiting_issue_that_resolves_first_is_forgotten() -> None:
    problems: Problems[str] = Problems(GRACE)
    rate, share = by_metric("errors"), by_metric("ratio")
    problems.planned(rate)
    problems.wait(share, "share")
    problems.resolved(resolution(share), now=100.0)
    problems.resolved(resolution(rate), now=101.0)
    assert problems.due(1000.0) == []


def test_waiting_issues_are_bounded() -> None:
    problems: Problems[int] = Problems(GRACE)
    problems.planned(by_metric("errors"))
    for n in range(MAX_WAITING + 5):
        problems.wait(by_metric(f"m{n}"), n)
    problems.resolved(resolution(by_metric("errors")), now=0.0)
    assert problems.due(GRACE) == list(range(5, MAX_WAITING + 5))
