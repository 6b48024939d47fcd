"""Did a step fix the issue? Watch the metric that raised it.

The executor feeds ``FixVerifier`` every metric batch and every resolved issue
it sees. After a step, ``wait_fixed`` waits until either the issue is resolved,
or a sample collected after the step began shows the issue's series back on the
good side of its threshold, or the window passes.

Which side is good follows from the issue itself: it opened because its value
crossed the threshold, so the side the plan's value is on is bad (``cpu_percent``
97 >= 80: above is bad; ``service_up`` 0 < 0.5: below is bad). An anomaly has no
threshold: only its resolution counts.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from medbay.common.events import IssueResolved, MetricBatch, Plan


@dataclass(frozen=True)
class Verification:
    verified: bool
    detail: str


def series_name(metric: str, labels: dict[str, str]) -> str:
    if not labels:
        return metric
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def above_is_bad(plan: Plan) -> bool:
    """The issue opened on the side its value is on: at or above the threshold, or below."""
    assert plan.threshold is not None, "an anomaly has no bad side"
    return plan.value >= plan.threshold


def is_good(plan: Plan, value: float) -> bool:
    assert plan.threshold is not None, "an anomaly has no bad side"
    return value < plan.threshold if above_is_bad(plan) else value >= plan.threshold


@dataclass(eq=False)
class _Waiter:
    plan: Plan
    since: datetime
    done: asyncio.Future[Verification]
    last_value: float | None = None
    """The worst value of the latest fresh batch."""

    def observe(self, collected_at: datetime, values: list[float]) -> None:
        """Take the matching values of one fresh batch; all of them must be good."""
        plan = self.plan
        bad = [v for v in values if not is_good(plan, v)]
        if bad:
            self.last_value = max(bad) if above_is_bad(plan) else min(bad)
            return
        self.last_value = values[-1]
        self.resolve(
            f"{series_name(plan.metric, plan.labels)} back to {values[-1]}"
            f" (threshold {plan.threshold}) at {collected_at.isoformat()}"
        )

    def resolve(self, detail: str) -> None:
        if not self.done.done():
            self.done.set_result(Verification(True, detail))


class FixVerifier:
    """Many plans may wait at once; each waiter is woken by the observations that concern it.

    Memory holds the waiters and, per issue fingerprint, the time of its latest
    resolution (at most ``max_resolutions`` of them, the oldest forgotten first),
    so a resolution that arrives just before ``wait_fixed`` is called still counts.
    """

    def __init__(self, max_resolutions: int = 10_000) -> None:
        self.max_resolutions = max_resolutions
        self._resolved: OrderedDict[str, datetime] = OrderedDict()
        self._by_host: dict[str, set[_Waiter]] = {}
        self._by_fingerprint: dict[str, set[_Waiter]] = {}

    def waiting_on_host(self, host: str) -> bool:
        """Whether a sample from ``host`` could settle a waiter (else the batch can be skipped)."""
        return host in self._by_host

    def observe_batch(self, batch: MetricBatch) -> None:
        for waiter in list(self._by_host.get(batch.host, ())):
            if batch.collected_at <= waiter.since:
                continue
            plan = waiter.plan
            values = [
                s["value"]
                for s in batch.samples
                if s["name"] == plan.metric and plan.labels.items() <= s.get("labels", {}).items()
            ]
            if values:
                waiter.observe(batch.collected_at, values)

    def observe_resolved(self, event: IssueResolved) -> None:
        previous = self._resolved.get(event.fingerprint)
        if previous is None or event.timestamp > previous:
            self._resolved[event.fingerprint] = event.timestamp
        self._resolved.move_to_end(event.fingerprint)
        while len(self._resolved) > self.max_resolutions:
            self._resolved.popitem(last=False)
        for waiter in list(self._by_fingerprint.get(event.fingerprint, ())):
            if event.timestamp > waiter.since:
                waiter.resolve(f"issue resolved at {event.timestamp.isoformat()}")

    async def wait_fixed(self, plan: Plan, since: datetime, window_seconds: float) -> Verification:
        """Wait up to ``window_seconds`` for evidence, newer than ``since``, of a fix."""
        resolved_at = self._resolved.get(plan.issue_fingerprint)
        if resolved_at is not None and resolved_at > since:
            return Verification(True, f"issue resolved at {resolved_at.isoformat()}")
        waiter = _Waiter(plan, since, asyncio.get_running_loop().create_future())
        self._add(waiter)
        try:
            async with asyncio.timeout(window_seconds):
                return await waiter.done
        except TimeoutError:
            return Verification(False, self._timeout_detail(waiter, window_seconds))
        finally:
            self._remove(waiter)

    @staticmethod
    def _timeout_detail(waiter: _Waiter, window_seconds: float) -> str:
        plan = waiter.plan
        window = f"{window_seconds:g} s"
        if plan.threshold is None:
            return f"anomaly on {plan.host} not resolved within {window}"
        series = series_name(plan.metric, plan.labels)
        if waiter.last_value is None:
            return f"no fresh sample of {series} on {plan.host} within {window}"
        return (
            f"{series} still {waiter.last_value} (threshold {plan.threshold})"
            f" on {plan.host} after {window}"
        )

    def _add(self, waiter: _Waiter) -> None:
        plan = waiter.plan
        self._by_fingerprint.setdefault(plan.issue_fingerprint, set()).add(waiter)
        if plan.threshold is not None:
            self._by_host.setdefault(plan.host, set()).add(waiter)

    def _remove(self, waiter: _Waiter) -> None:
        plan = waiter.plan
        for index, key in (
            (self._by_fingerprint, plan.issue_fingerprint),
            (self._by_host, plan.host),
        ):
            waiters = index.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del index[key]
