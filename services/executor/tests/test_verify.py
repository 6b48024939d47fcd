"""Fix verification, fed with events as the executor would feed it (no NATS needed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from medbay.common.events import (
    IssueResolved,
    MetricBatch,
    Plan,
)
from medbay.executor.verify import FixVerifier, Verification
from tests import factories
from tests.factories import step

STARTED = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
WINDOW = 0.5
"""Seconds; long enough for the feeds below, which come right away."""


def make_plan(
    metric: str = "cpu_percent",
    value: float = 97.0,
    threshold: float | None = 80.0,
    labels: dict[str, str] | None = None,
) -> Plan:
    return factories.plan(
        step("restart_service", "web", seconds=1),
        issue_fingerprint="fp-" + metric,
        issue_kind="cpu" if threshold is not None else "anomaly",
        metric=metric,
        labels=labels or {},
        value=value,
        threshold=threshold,
    )


def batch(
    name: str,
    value: float,
    labels: dict[str, str] | None = None,
    *,
    host: str = "web-1",
    seconds_after: float = 5,
) -> MetricBatch:
    sample: dict[str, Any] = {"name": name, "value": value}
    if labels is not None:
        sample["labels"] = labels
    return MetricBatch.model_validate(
        {
            "host": host,
            "collected_at": STARTED + timedelta(seconds=seconds_after),
            "samples": [{"name": "other_metric", "value": 1.0}, sample],
        }
    )


def resolved(plan: Plan, seconds_after: float = 5) -> IssueResolved:
    at = STARTED + timedelta(seconds=seconds_after)
    return IssueResolved(
        timestamp=at,
        fingerprint=plan.issue_fingerprint,
        host=plan.host,
        kind=plan.issue_kind,
        resource=plan.metric,
        metric=plan.metric,
        labels=plan.labels,
        value=plan.value,
        threshold=plan.threshold,
        severity=plan.severity,
        detector="threshold",
        first_seen=at,
        last_seen=at,
    )


async def verify_while(verifier: FixVerifier, plan: Plan, *feed: Any) -> Verification:
    """Start waiting for ``plan``, then feed the events, and return the verdict."""
    waiting = asyncio.create_task(verifier.wait_fixed(plan, STARTED, WINDOW))
    await asyncio.sleep(0)  # let it register
    for event in feed:
        if isinstance(event, MetricBatch):
            verifier.observe_batch(event)
        else:
            verifier.observe_resolved(event)
    return await waiting


async def test_cpu_back_under_its_threshold_is_verified() -> None:
    plan = make_plan()
    result = await verify_while(FixVerifier(), plan, batch("cpu_percent", 42.0))
    assert result.verified
    assert result.detail.startswith("cpu_percent back to 42.0 (threshold 80.0)")


async def test_cpu_still_high_fails_with_the_last_value() -> None:
    plan = make_plan()
    verifier = FixVerifier()
    result = await verify_while(
        verifier, plan, batch("cpu_percent", 99.0), batch("cpu_percent", 91.0, seconds_after=10)
    )
    assert not result.verified
    assert result.detail == "cpu_percent still 91.0 (threshold 80.0) on web-1 after 0.5 s"
    assert not verifier.waiting_on_host("web-1")  # the waiter is gone


async def test_service_up_is_bad_below_its_threshold() -> None:
    plan = make_plan("service_up", value=0.0, threshold=0.5, labels={"service": "web"})
    result = await verify_while(FixVerifier(), plan, batch("service_up", 0.0, {"service": "web"}))
    assert not result.verified and "still 0.0 (threshold 0.5)" in result.detail
    result = await verify_while(FixVerifier(), plan, batch("service_up", 1.0, {"service": "web"}))
    assert result.verified


async def test_samples_must_carry_the_plan_labels() -> None:
    plan = make_plan("disk_used_percent", value=95.0, threshold=90.0, labels={"mount": "/"})
    result = await verify_while(
        FixVerifier(),
        plan,
        batch("disk_used_percent", 10.0, {"mount": "/boot"}),  # another series
        batch("disk_used_percent", 10.0),  # no labels
        batch("disk_used_percent", 10.0, {"mount": "/"}, host="web-2"),  # another host
    )
    assert not result.verified
    assert result.detail == 'no fresh sample of disk_used_percent{mount="/"} on web-1 within 0.5 s'

    extra_labels = batch("disk_used_percent", 50.0, {"mount": "/", "device": "sda1"})
    assert (await verify_while(FixVerifier(), plan, extra_labels)).verified


async def test_samples_from_before_the_step_are_ignored() -> None:
    plan = make_plan()
    result = await verify_while(
        FixVerifier(),
        plan,
        batch("cpu_percent", 10.0, seconds_after=-1),
        batch("cpu_percent", 10.0, seconds_after=0),
    )
    assert not result.verified and result.detail.startswith("no fresh sample of cpu_percent")


async def test_resolution_verifies_and_must_come_after_the_step() -> None:
    plan = make_plan()
    early = await verify_while(FixVerifier(), plan, resolved(plan, seconds_after=-1))
    assert not early.verified
    result = await verify_while(FixVerifier(), plan, resolved(plan))
    assert result.verified and result.detail.startswith("issue resolved at")


async def test_resolution_seen_before_waiting_still_counts() -> None:
    plan, other = make_plan(), make_plan("memory_percent")
    verifier = FixVerifier()
    verifier.observe_resolved(resolved(plan))
    verifier.observe_resolved(resolved(other, seconds_after=-10))
    assert (await verifier.wait_fixed(plan, STARTED, WINDOW)).verified
    assert not (await verifier.wait_fixed(other, STARTED, WINDOW)).verified


async def test_resolution_memory_is_bounded() -> None:
    plans = [make_plan(f"metric_{i}") for i in range(3)]
    verifier = FixVerifier(max_resolutions=2)
    for plan in plans:
        verifier.observe_resolved(resolved(plan))
    assert not (await verifier.wait_fixed(plans[0], STARTED, 0.05)).verified  # forgotten
    assert (await verifier.wait_fixed(plans[2], STARTED, 0.05)).verified


async def test_an_anomaly_needs_its_resolution() -> None:
    plan = make_plan("latency_ms", value=900.0, threshold=None)
    verifier = FixVerifier()
    result = await verify_while(verifier, plan, batch("latency_ms", 1.0))
    assert not result.verified
    assert result.detail == "anomaly on web-1 not resolved within 0.5 s"
    assert (await verify_while(verifier, plan, resolved(plan))).verified


async def test_many_waiters_are_each_woken_by_their_own_news() -> None:
    verifier = FixVerifier()
    cpu = make_plan()
    up = make_plan("service_up", value=0.0, threshold=0.5)
    anomaly = make_plan("latency_ms", value=900.0, threshold=None)
    waits = [
        asyncio.create_task(verifier.wait_fixed(plan, STARTED, 5.0)) for plan in (cpu, up, anomaly)
    ]
    await asyncio.sleep(0)
    assert verifier.waiting_on_host("web-1") and not verifier.waiting_on_host("web-2")

    verifier.observe_batch(batch("service_up", 1.0))
    up_result = await waits[1]
    assert up_result.verified
    assert not waits[0].done() and not waits[2].done()

    verifier.observe_resolved(resolved(anomaly))
    verifier.observe_batch(batch("cpu_percent", 5.0))
    assert all(r.verified for r in await asyncio.gather(*waits))
    assert not verifier.waiting_on_host("web-1")
