"""The executor's bus side: PLANS, APPROVALS and AUDIT in; actions, RESULTS out.

``ExecutorService`` holds the handlers its consumers call and the step loop.
What a step does is in ``targets``; whether it may run is in ``policy`` (the
rules) and ``rails`` (their shared state); whether it worked is in ``verify``;
how a plan ended and what people are told is in ``outcomes``; where each plan
stands is in ``plan_book``. ``main`` wires it to the bus.

Whether a plan waits for a person is the executor's own decision
(``config.approval``, ``medbay.common.approval``), never the plan's word alone.
Breaker resets people ask for (``BreakerReset`` on AUDIT, from the gateway or
the CLI) are applied here: only the executor writes its rails.

A plan's steps escalate: step 1 runs; if its fix is verified the plan is done,
otherwise step 2 runs, and so on. In dry-run every step is reported with what it
would have done, and nothing is verified.

Replicas share the consumers as work queues. A plan runs under its lease
(``plan_run``): whichever replica holds it runs the plan, and every replica
follows the plan book to take over the ``running`` plans nobody holds, such as
those of an executor that died (reporting the step it was in ``interrupted``).

Every plan that ends (run, rejected, expired, or too old to run) is published on
RESULTS as a ``PlanFinished`` (``medbay.outcomes.<host>``), with an event id
derived from the plan id so that a repeat after a restart is dropped (an
``interrupted`` end is derived differently, so that the real end of a run thought
dead is not dropped), and its outcome is kept in the plan book. A notifier
``via: telegram`` hands its message to the approver's bot as an ``AlertRaised``
(``medbay.alerts.<host>``). At start the executor writes the catalog of its
targets (``catalog``) for the planner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from prometheus_client import Counter
from pydantic import ValidationError

from medbay.common.approval import plan_approval_reasons
from medbay.common.bus import Delivery, current_task_cancelling, jetstream
from medbay.common.bus import publish_event as publish
from medbay.common.events import (
    ActionName,
    ActionOutcome,
    ActionResult,
    AlertRaised,
    Approval,
    BreakerReset,
    Event,
    IssueResolved,
    MetricBatch,
    Plan,
    PlanFinished,
    PlanStep,
    derived_event_id,
)
from medbay.common.reading import follow
from medbay.common.records import BreakerState, PlanRecord, TargetCatalog
from medbay.common.runtime import ServiceRuntime
from medbay.common.streams import (
    ISSUES,
    METRICS,
    PREFIX,
    RESULTS,
    metrics_subject,
    stored_pattern,
)
from medbay.common.telemetry import CRITICAL_SPAN_ATTRIBUTE, mark_critical
from medbay.executor.catalog import build_catalog
from medbay.executor.config import ExecutorConfig
from medbay.executor.outcomes import (
    DETAIL_LIMIT,
    MESSAGE_LIMIT,
    PlanEnd,
    StepEnd,
    StepResult,
    alert_message,
    conclude,
    cut,
    escalation_message,
    first_line,
    last_line,
    one_line,
)
from medbay.executor.plan_book import PlanBook
from medbay.executor.plan_run import PlanRun
from medbay.executor.policy import UNRESTRICTED, Refusal
from medbay.executor.rails import SafetyRails, StepState
from medbay.executor.targets import ActionRefused, StepOutcome
from medbay.executor.targets.notifier import TELEGRAM
from medbay.executor.verify import FixVerifier, Verification

log = logging.getLogger("medbay.executor")
tracer = trace.get_tracer("medbay.executor")

HOLD_MARGIN_SECONDS = 30.0
"""A target hold outlasts its step's timeout and verification by this much (``rails.hold``)."""

FOLLOW_RETRY_SECONDS = 2.0
"""How soon following the plan book starts again after it broke off (NATS away)."""

RESULT_RETRY_SECONDS = 60.0
"""How long a step's result is retried when RESULTS does not acknowledge it."""

INTERRUPTED = "interrupted: the executor stopped during this step; it is not run twice"


def resumed_step(index: int, step: PlanStep, state: StepState) -> StepEnd:
    """How a step that finished before a restart ended, from its record."""
    detail = state.detail or "(before a restart)"
    if state.outcome == "verified":
        return StepEnd(index, step, "success", True, detail)
    if state.outcome == "interrupted":
        return StepEnd(index, step, "failure", detail=detail, interrupted=True)
    if state.outcome == "success":
        verified = None if step.action == "alert_human" else False
        return StepEnd(index, step, "success", verified, detail)
    if state.outcome == "refused":
        return StepEnd(index, step, "refused", detail=detail)
    if state.outcome == "dry_run":
        return StepEnd(index, step, "dry_run", detail=detail)
    return StepEnd(index, step, "failure", detail=detail)


class ExecutorService:
    def __init__(self, rt: ServiceRuntime, config: ExecutorConfig) -> None:
        self.rt = rt
        self.config = config
        self.executor_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.verifier = FixVerifier()
        self.book: PlanBook | None = None
        self.rails: SafetyRails | None = None
        self.catalog: TargetCatalog | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self.book_running: dict[str, tuple[Plan, dict[str, str]]] = {}
        """The plans the plan book says are running (with their trace), by key."""
        self.slots = asyncio.Semaphore(config.max_concurrent_plans)
        self.results = Counter(
            "medbay_executor_steps",
            "Plan steps, by action and outcome",
            ["action", "outcome"],
            registry=rt.registry,
        )
        self.plans_ended = Counter(
            "medbay_executor_plans", "Plans ended, by outcome", ["outcome"], registry=rt.registry
        )

    # --- start-up --------------------------------------------------------------

    async def start(self) -> None:
        js = jetstream(self.rt.broker)
        self.book = await PlanBook.open(js, self.rt.settings.nats_replicas)
        self.rails = await SafetyRails.open(js, self.config.safety, self.rt.settings.nats_replicas)
        catalog, notes = build_catalog(
            self.config.targets, self.config.safety, self.config.mode, datetime.now(UTC)
        )
        for note in notes:
            log.warning("target catalog: %s", note)
        await self.rails.write_catalog(catalog)
        self.catalog = catalog
        log.info(
            "executor %s in %s mode with targets %s",
            self.executor_id,
            self.config.mode,
            sorted(self.config.targets) or "(none)",
        )

    async def follow_plan_book(self) -> None:
        """Keep ``book_running`` up to date, for ``take_over``."""
        assert self.book is not None
        while True:
            self.book_running.clear()
            try:
                async for key, record in self.book.follow():
                    plan = None
                    if record is not None and record.state == "running":
                        plan = record.parsed_plan()  # an unreadable one is logged and skipped
                    if record is None or plan is None:
                        self.book_running.pop(key, None)
                    else:
                        self.book_running[key] = (plan, record.traceparent)
            except Exception as exc:  # NATS away: follow it again
                if current_task_cancelling():
                    raise
                log.warning("following the plan book broke off: %r", exc)
            await asyncio.sleep(FOLLOW_RETRY_SECONDS)

    async def take_over(self) -> None:
        """Run the ``running`` plans that nobody runs: those of an executor that died, once
        their lease lapsed, and those no executor has started (``plan_run``).

        A plan is taken only when nobody held it at two looks in a row: after NATS was
        away (a cluster electing a new leader for the bucket) for longer than the TTL,
        the executor still running it gets the first chance to take its lease back.
        """
        assert self.rails is not None
        unheld: set[str] = set()  # the plans nobody held at the last look
        while True:
            await asyncio.sleep(self.config.lease.takeover_poll_seconds)
            seen: set[str] = set()
            for plan, traceparent in list(self.book_running.values()):
                if plan.plan_id in self.running:
                    continue
                try:
                    holder = await self.rails.run_holder(plan.plan_id)
                except Exception as exc:  # NATS away: look again later
                    log.debug("who runs plan %s: %r", plan.plan_id, exc)
                    break
                if holder is not None:
                    continue
                if plan.plan_id in unheld:
                    self.launch(plan, traceparent)
                else:
                    seen.add(plan.plan_id)
            unheld = seen

    async def watch_resolved(self) -> None:
        """Issues resolving, for verifying fixes."""
        await follow(self.rt.broker, ISSUES, f"{PREFIX}.issues.resolved.>", self._on_resolved)

    async def _on_metrics(self, msg: Msg) -> None:
        with contextlib.suppress(ValidationError):  # the detector dead-letters it
            self.verifier.observe_batch(MetricBatch.model_validate_json(msg.data))

    async def _verify(self, plan: Plan, started: datetime) -> Verification:
        """Wait for the fix to show. A fix with a threshold shows in the host's own
        metrics, read from the step's start for as long as the wait lasts: an executor
        reads the batches of the hosts it is verifying, not the whole fleet's."""
        reader = None
        if plan.threshold is not None:
            subject = stored_pattern(metrics_subject(plan.host))
            reader = asyncio.create_task(
                follow(self.rt.broker, METRICS, subject, self._on_metrics, since=started)
            )
        try:
            return await self.verifier.wait_fixed(plan, started, self.config.verify_window_seconds)
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _on_resolved(self, msg: Msg) -> None:
        with contextlib.suppress(ValidationError):
            self.verifier.observe_resolved(IssueResolved.model_validate_json(msg.data))

    # --- consuming ---------------------------------------------------------------

    async def handle_plans(self, deliveries: list[Delivery[Plan]]) -> None:
        assert self.book is not None
        approval = self.config.approval
        for d in deliveries:
            plan = d.event
            reasons = plan_approval_reasons(
                plan, min_confidence=approval.min_confidence, policy=approval.require_approval
            )
            with mark_critical(d.span("executor.receive_plan")) as span:
                carrier: dict[str, str] = {}
                propagate.inject(carrier, context=trace.set_span_in_context(span))
                age = (datetime.now(UTC) - plan.timestamp).total_seconds()
                stale = age > self.config.max_plan_age_seconds and not reasons
                if stale and await self._expire_stale(plan, carrier, age):
                    continue
                step = await self.book.on_plan(plan, carrier, reasons)
                if reasons and not plan.requires_approval:
                    log.warning(
                        "plan %s says it needs no approval; held for one: %s",
                        plan.plan_id,
                        "; ".join(reasons),
                        extra={"plan_id": plan.plan_id},
                    )
                log.info(
                    "plan %s for %s on %s: %s",
                    plan.plan_id,
                    plan.issue_kind,
                    plan.host,
                    step.why,
                    extra={"plan_id": plan.plan_id},
                )
                if step.action == "run":
                    self.launch(plan, carrier)
                elif step.action == "rejected":
                    await self._decided_against(plan, step.record)

    async def _expire_stale(self, plan: Plan, carrier: dict[str, str], age: float) -> bool:
        """A plan too old to run ends ``expired`` (the situation has moved on; nobody is
        alerted). False if a person's decision on it came first: that decides."""
        assert self.book is not None
        why = (
            f"not run: it was {age:.0f} s old when it arrived (max_plan_age_seconds "
            f"{self.config.max_plan_age_seconds:g}); the situation has moved on"
        )
        found = await self.book.expire_stale(plan, carrier, why)
        if found == "expired":
            await self._announce(plan, PlanEnd("expired", why, 0))
        return found != "decided"

    async def handle_approvals(self, deliveries: list[Delivery[Approval]]) -> None:
        assert self.book is not None
        for d in deliveries:
            approval = d.event
            refused = self.refused_approval(approval)
            if refused is not None:
                log.warning(
                    "%s of plan %s by %s (%s) does not count: %s",
                    approval.decision,
                    approval.plan_id,
                    approval.decided_by,
                    approval.channel,
                    refused,
                    extra={"plan_id": approval.plan_id},
                )
                continue
            with mark_critical(d.span("executor.receive_approval")):
                step = await self.book.on_approval(approval)
                log.info(
                    "%s of plan %s by %s (%s): %s",
                    approval.decision,
                    approval.plan_id,
                    approval.decided_by,
                    approval.channel,
                    step.why,
                    extra={"plan_id": approval.plan_id},
                )
                plan = step.record.parsed_plan()
                if step.action == "run" and plan is not None:
                    self.launch(plan, step.record.traceparent)
                elif step.action == "rejected" and plan is not None:
                    await self._decided_against(plan, step.record)

    def refused_approval(self, approval: Approval) -> str | None:
        """Why an approval does not count (None: it does)."""
        if approval.channel == "expiry":
            return None if approval.decision == "reject" else "the expiry timer may only reject"
        if approval.channel not in self.config.approval.channels:
            allowed = ", ".join(self.config.approval.channels) or "none"
            return (
                f"approvals from {approval.channel} are not accepted (approval.channels: {allowed})"
            )
        return None

    async def _decided_against(self, plan: Plan, record: PlanRecord) -> None:
        """A plan a person rejected ends ``rejected``; one nobody decided on in time ends
        ``expired``, and people are told (it needed a person, and none looked)."""
        note = f": {record.note}" if record.note else ""
        if record.outcome == "expired":
            why = f"nobody decided on the plan in time{note}"
            escalated, said = await self._escalate(plan, [], why)
            end = PlanEnd("expired", f"{why}; {said}", 0, escalated)
        else:
            by = f" ({record.channel})" if record.channel else ""
            end = PlanEnd("rejected", f"rejected by {record.decided_by}{by}{note}", 0)
        await self._announce(plan, end)

    async def handle_audit(self, deliveries: list[Delivery[BreakerReset]]) -> None:
        """Breaker resets people asked for."""
        assert self.rails is not None
        for d in deliveries:
            reset = d.event
            with d.span("executor.reset_breaker"):
                by = f"{reset.reset_by} ({reset.channel})"
                if await self.rails.reset_breaker(reset.target, by=by):
                    log.info("breaker for %r reset by %s", reset.target, by)
                else:
                    log.info("breaker reset for %r by %s: it was not open", reset.target, by)

    def launch(self, plan: Plan, traceparent: dict[str, str]) -> None:
        if plan.plan_id in self.running:
            return
        task = asyncio.create_task(self.run_plan(plan, traceparent), name=plan.plan_id)
        self.running[plan.plan_id] = task
        task.add_done_callback(lambda _: self.running.pop(plan.plan_id, None))

    # --- running a plan -----------------------------------------------------------

    async def run_plan(self, plan: Plan, traceparent: dict[str, str]) -> None:
        """Run the steps in order until one's fix is verified (see the module docstring),
        under the plan's lease; if another executor holds it, leave the plan to it."""
        assert self.book is not None and self.rails is not None
        async with self.slots:
            lease = self.rails.run_lease(
                plan.plan_id, self.executor_id, self.config.lease.ttl_seconds
            )
            run = PlanRun(lease, self.config.lease.renew_seconds)
            try:
                if not await run.start():
                    return  # another executor runs it
            except Exception as exc:  # NATS away: take_over tries again
                log.warning("plan %s: its lease could not be taken: %r", plan.plan_id, exc)
                return
            try:
                record, _ = await self.book.get(plan.plan_id)
                if record is not None and record.state == "running":  # not ended meanwhile
                    await self._run_plan(plan, traceparent, run)
            finally:
                await asyncio.shield(run.end())

    async def _run_plan(self, plan: Plan, traceparent: dict[str, str], run: PlanRun) -> None:
        assert self.book is not None
        with tracer.start_as_current_span(
            "executor.run_plan",
            context=propagate.extract(traceparent),
            attributes={CRITICAL_SPAN_ATTRIBUTE: True, "medbay.plan_id": plan.plan_id},
        ):
            tried: list[StepEnd] = []
            end: PlanEnd | None
            try:
                end = await self._run_steps(plan, tried, run)
            except Exception as exc:
                log.exception("plan %s failed", plan.plan_id)
                end = PlanEnd("failed", f"executor error: {exc!r}", sum(t.ran for t in tried))
            if end is None:
                return
            await self._announce(plan, end)
            await self.book.finish(plan.plan_id, end.outcome, cut(end.detail, DETAIL_LIMIT))

    async def _carry_on(self, plan: Plan, run: PlanRun) -> bool:
        """Whether this executor still runs the plan: its lease is renewed, or it lapsed
        (NATS away for longer than its TTL) and was taken back with the plan still
        running, or ended ``interrupted`` by a replica that took it over meanwhile
        (this executor's results are the truth about the steps it ran: it goes on)."""
        assert self.book is not None
        if await run.regain():
            return True
        record, _ = await self.book.get(plan.plan_id)
        if record is not None and (record.state == "running" or record.outcome == "interrupted"):
            log.warning(
                "plan %s: its lease lapsed and was taken back; going on with it",
                plan.plan_id,
                extra={"plan_id": plan.plan_id},
            )
            return True
        log.warning(
            "plan %s: its lease lapsed, and another executor ended the plan meanwhile",
            plan.plan_id,
            extra={"plan_id": plan.plan_id},
        )
        return False

    async def _run_steps(self, plan: Plan, tried: list[StepEnd], run: PlanRun) -> PlanEnd | None:
        """Go through the steps (each appended to ``tried``) until one ends the plan,
        then conclude; None if the plan is no longer this executor's to run."""
        assert self.rails is not None
        for index, step in enumerate(plan.steps):
            if not await self._carry_on(plan, run):
                return None
            state = await self.rails.step_state(plan.plan_id, index)
            if state is not None and state.finished:  # done before a restart
                end = resumed_step(index, step, state)
            elif state is not None:  # its executor's lease lapsed during the step
                end = await self._report_interrupted(plan, index, step, state.executor_id)
            elif await self.rails.claim_step(plan.plan_id, index, self.executor_id):
                end = await self._admit_and_run(plan, index, step, tried)
            else:
                log.info(
                    "step %d of plan %s is run by another executor",
                    index + 1,
                    plan.plan_id,
                    extra={"plan_id": plan.plan_id},
                )
                return None
            tried.append(end)
            if end.ends_plan:
                break
        if not await self._carry_on(plan, run):
            return None
        return await self._conclude(plan, tried)

    async def _admit_and_run(
        self, plan: Plan, index: int, step: PlanStep, tried: Sequence[StepEnd]
    ) -> StepEnd:
        """Run a claimed step if the rails let it, and record how it ended.

        A live step that changes a target holds it (``rails.hold``) from admission
        through verification, so the steps of concurrent plans on one target run one
        after the other, each admitted in the light of the one before.
        """
        assert self.rails is not None
        holds = (
            not self.config.dry_run
            and step.action not in UNRESTRICTED
            and step.target in self.config.targets
        )
        if holds:
            seconds = self.config.safety.step_timeout_seconds + self.config.verify_window_seconds
            holder = f"{self.executor_id}/{plan.plan_id}/{index + 1}"
            async with self.rails.hold(step.target, holder, seconds + HOLD_MARGIN_SECONDS):
                end = await self._admit_then_run(plan, index, step, tried)
        else:
            end = await self._admit_then_run(plan, index, step, tried)
        recorded = "verified" if end.verified else end.outcome
        await self.rails.finish_step(plan.plan_id, index, recorded, end.detail, by=self.executor_id)
        return end

    async def _admit_then_run(
        self, plan: Plan, index: int, step: PlanStep, tried: Sequence[StepEnd]
    ) -> StepEnd:
        started = datetime.now(UTC)
        refusal = await self._refusal(plan, step, started)
        if refusal is None:
            return await self._run_step(plan, index, step, started, tried)
        await self._finish(plan, index, step, started, "refused", refusal.reason, None)
        return StepEnd(index, step, "refused", detail=one_line(refusal.reason), rule=refusal.rule)

    async def _run_step(
        self, plan: Plan, index: int, step: PlanStep, started: datetime, tried: Sequence[StepEnd]
    ) -> StepEnd:
        """Do one admitted step, then verify its fix."""
        with tracer.start_as_current_span(
            f"executor.step {step.action}",
            attributes={
                CRITICAL_SPAN_ATTRIBUTE: True,
                "medbay.action": step.action,
                "medbay.target": step.target,
            },
        ) as span:
            await self._report(plan, index, step, started)
            params = dict(step.params)
            asked = params.get("message", "")
            if step.action == "alert_human" and isinstance(asked, str):
                params["message"] = alert_message(plan, tried, asked)
            try:
                outcome = await self._perform(plan, index, step.target, step.action, params)
            except ActionRefused as exc:
                await self._finish(plan, index, step, started, "refused", str(exc), None)
                return StepEnd(index, step, "refused", detail=one_line(str(exc)), rule="target")
            if not outcome.ok:
                await self._finish(plan, index, step, started, "failure", outcome.output, None)
                said = first_line if step.action == "alert_human" else last_line
                return StepEnd(index, step, "failure", detail=said(outcome.output))
            if self.config.dry_run:
                await self._finish(plan, index, step, started, "dry_run", outcome.output, None)
                return StepEnd(index, step, "dry_run", detail=one_line(outcome.output))
            if step.action == "alert_human":  # alerting fixes nothing
                await self._finish(plan, index, step, started, "success", outcome.output, None)
                return StepEnd(index, step, "success", detail=f"the alert went out ({step.target})")
            check = await self._verify(plan, started)
            span.set_attribute("medbay.verified", check.verified)
            text = f"{outcome.output}\nverification: {check.detail}"
            await self._finish(plan, index, step, started, "success", text, check.verified)
            return StepEnd(index, step, "success", check.verified, one_line(check.detail))

    async def _perform(
        self, plan: Plan, index: int, target: str, action: ActionName, params: dict[str, Any]
    ) -> StepOutcome:
        """Do the action on the target within the step timeout; a message the target
        leaves for the approver's bot is published here (``AlertRaised``).
        ActionRefused goes to the caller; any other error is a failed step."""
        timeout = self.config.safety.step_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                outcome = await self.config.targets[target].perform(
                    action, params, dry_run=self.config.dry_run
                )
        except ActionRefused:
            raise
        except TimeoutError:
            return StepOutcome(False, f"timed out after {timeout:g} s")
        except Exception as exc:
            return StepOutcome(False, f"{type(exc).__name__}: {exc}")
        if outcome.alert is None:
            return outcome
        alert_id = derived_event_id("alert", plan.plan_id, index)
        alert = AlertRaised(
            event_id=alert_id,
            alert_id=alert_id,
            plan_id=plan.plan_id,
            issue_fingerprint=plan.issue_fingerprint,
            issue_kind=plan.issue_kind,
            host=plan.host,
            target=target,
            message=cut(outcome.alert, MESSAGE_LIMIT),
        )
        try:
            await self._publish(alert)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return StepOutcome(False, f"could not hand the alert to {TELEGRAM}: {error}")
        return outcome

    async def _refusal(self, plan: Plan, step: PlanStep, now: datetime) -> Refusal | None:
        """Why the step may not run. In live mode an allowed step is counted at once
        (cooldown, flap history, rate limit), so concurrent plans see it."""
        assert self.rails is not None
        if step.target not in self.config.targets:
            reason = f"unknown target {step.target!r}: it is not in the executor's config"
            known = self.catalog.resolve(step.action, step.target) if self.catalog else None
            if known is not None:
                reason += f" (target {known!r} covers it)"
            return Refusal("allowlist", reason)
        if self.config.dry_run:
            return await self.rails.check(step.action, step.target, plan.host, now)
        return await self.rails.admit(step.action, step.target, plan.host, now)

    # --- ending a plan -------------------------------------------------------------

    async def _conclude(self, plan: Plan, tried: Sequence[StepEnd]) -> PlanEnd:
        """The plan's end (``outcomes.conclude``), with people told if it needs it.

        A breaker is escalated once per opening: this plan tells people of an open
        breaker of a target it touched only if it wins the claim to (``rails``);
        a plan refused by a breaker others were told of is not escalated again.
        """
        end = conclude(tried, dry_run=self.config.dry_run)
        if end.escalation is None:
            return end
        last = tried[-1]
        by_breaker = last.rule == "breaker"
        acted = any(t.ran and t.step.action != "alert_human" for t in tried)
        breakers, holders = await self._claim_breakers(plan, tried)
        target = last.step.target
        if by_breaker and not acted and not self.config.dry_run and target not in breakers:
            told = "people were told of this breaker when it opened"
            if target in holders:
                told += f" (plan {holders[target]})"
            return dataclasses.replace(end, escalation=None, detail=f"{end.detail}; {told}")
        shown = {t: b for t, b in breakers.items() if not (by_breaker and t == target)}
        escalated, said = await self._escalate(plan, tried, end.escalation, shown)
        if not escalated:
            for claimed, breaker in breakers.items():
                await self._release(claimed, breaker, plan)
        return dataclasses.replace(
            end, escalated=escalated, escalation=None, detail=f"{end.detail}; {said}"
        )

    async def _claim_breakers(
        self, plan: Plan, tried: Sequence[StepEnd]
    ) -> tuple[dict[str, BreakerState], dict[str, str]]:
        """The open breakers of the targets the plan ran a step on or was refused on by
        a breaker, that this plan now holds the claim to tell people of (live only);
        and, by target, the plan that holds each claim."""
        assert self.rails is not None
        if self.config.dry_run:
            return {}, {}
        targets = {
            t.step.target
            for t in tried
            if (t.ran or t.rule == "breaker") and t.step.action != "alert_human"
        }
        claimed: dict[str, BreakerState] = {}
        holders: dict[str, str] = {}
        for target in sorted(targets):
            breaker = await self.rails.breaker(target)
            if breaker is None:
                continue
            holders[target] = await self.rails.claim_breaker_alert(target, breaker, plan.plan_id)
            if holders[target] == plan.plan_id:
                claimed[target] = breaker
        return claimed, holders

    async def _release(self, target: str, breaker: BreakerState, plan: Plan) -> None:
        assert self.rails is not None
        await self.rails.release_breaker_alert(target, breaker, plan.plan_id)

    async def _escalate(
        self,
        plan: Plan,
        tried: Sequence[StepEnd],
        why: str,
        breakers: dict[str, BreakerState] | None = None,
    ) -> tuple[bool, str]:
        """Tell people, through the ``escalate_to`` notifier (never blocked by the rails),
        once per plan. Returns whether the message went out, and what happened in words."""
        name = self.config.escalate_to
        if name is None:
            log.warning("plan %s needs a person (%s); no escalate_to target", plan.plan_id, why)
            return False, "nobody was told: there is no escalate_to target"
        assert self.rails is not None
        index = len(plan.steps)
        step = PlanStep(action="alert_human", target=name, risk=plan.risk, estimated_seconds=1)
        if not await self.rails.claim_step(plan.plan_id, index, self.executor_id):
            state = await self.rails.step_state(plan.plan_id, index)  # before a restart
            if state is None or not state.finished:
                claimed_by = state.executor_id if state is not None else None
                await self._report_interrupted(plan, index, step, claimed_by)
                return False, f"the escalation to {name} was interrupted"
            if state.outcome == "success":
                return True, f"escalated to {name}"
            return False, f"the escalation to {name} did not go out: {state.detail}"
        started = datetime.now(UTC)
        await self._report(plan, index, step, started)
        message = escalation_message(plan, tried, why, breakers)
        try:
            outcome = await self._perform(plan, index, name, "alert_human", {"message": message})
        except ActionRefused as exc:
            outcome = StepOutcome(False, str(exc))
        status: StepResult = "failure"
        if outcome.ok:
            status = "dry_run" if self.config.dry_run else "success"
        await self._finish(plan, index, step, started, status, outcome.output, None)
        what = first_line(outcome.output)
        await self.rails.finish_step(plan.plan_id, index, status, what, by=self.executor_id)
        if status == "success":
            return True, f"escalated to {name}"
        if status == "dry_run":
            return False, f"would escalate to {name}"
        return False, f"the escalation to {name} failed: {what}"

    async def _announce(self, plan: Plan, end: PlanEnd) -> None:
        """Publish how the plan ended (``PlanFinished``); count and log it."""
        self.plans_ended.labels(end.outcome).inc()
        level = (
            logging.INFO if end.outcome in ("verified", "alerted", "dry_run") else logging.WARNING
        )
        log.log(
            level,
            "plan %s outcome %s: %s",
            plan.plan_id,
            end.outcome,
            end.detail,
            extra={"plan_id": plan.plan_id},
        )
        kind = ("interrupted",) if end.outcome == "interrupted" else ()
        finished = PlanFinished(
            event_id=derived_event_id("plan-finished", plan.plan_id, *kind),
            plan_id=plan.plan_id,
            issue_fingerprint=plan.issue_fingerprint,
            issue_kind=plan.issue_kind,
            host=plan.host,
            outcome=end.outcome,
            detail=cut(end.detail, DETAIL_LIMIT),
            steps_run=end.steps_run,
            escalated=end.escalated,
            dry_run=self.config.dry_run,
        )
        try:
            await self._publish(finished)
        except Exception:
            log.exception("how plan %s ended could not be published", plan.plan_id)

    # --- step results -----------------------------------------------------------------

    async def _report_interrupted(
        self, plan: Plan, index: int, step: PlanStep, claimed_by: str | None
    ) -> StepEnd:
        """A step claimed by an executor that no longer runs the plan (its lease lapsed):
        it was cut short, and is not run again."""
        assert self.rails is not None
        log.warning(
            "step %d of plan %s was interrupted: executor %s stopped during it",
            index + 1,
            plan.plan_id,
            claimed_by or "(unknown)",
            extra={"plan_id": plan.plan_id},
        )
        now = datetime.now(UTC)
        await self._finish(plan, index, step, now, "failure", INTERRUPTED, None, interrupted=True)
        await self.rails.finish_step(plan.plan_id, index, "interrupted", INTERRUPTED)
        return StepEnd(index, step, "failure", detail=INTERRUPTED, interrupted=True)

    def _result(
        self,
        plan: Plan,
        index: int,
        step: PlanStep,
        started: datetime,
        *,
        interrupted: bool = False,
        **fields: Any,
    ) -> ActionResult:
        """The step's ActionResult; its id is derived, so a repeat is deduplicated. An
        ``interrupted`` report has an id of its own: it never takes the place of the
        result of a run that was thought dead but got through."""
        kind = ("interrupted",) if interrupted else ()
        return ActionResult(
            event_id=derived_event_id(plan.plan_id, index, fields["status"], *kind),
            plan_id=plan.plan_id,
            issue_fingerprint=plan.issue_fingerprint,
            issue_kind=plan.issue_kind,
            step_index=index,
            action=step.action,
            target=step.target,
            host=plan.host,
            dry_run=self.config.dry_run,
            started_at=started,
            **fields,
        )

    async def _report(self, plan: Plan, index: int, step: PlanStep, started: datetime) -> None:
        """The step has started."""
        await self._publish(self._result(plan, index, step, started, status="started"))

    async def _finish(
        self,
        plan: Plan,
        index: int,
        step: PlanStep,
        started: datetime,
        outcome: StepResult,
        output: str,
        verified: bool | None,
        *,
        interrupted: bool = False,
    ) -> None:
        """The step has finished."""
        published: ActionOutcome = "interrupted" if interrupted else outcome
        result = self._result(
            plan,
            index,
            step,
            started,
            interrupted=interrupted,
            status="finished",
            outcome=published,
            output=output[-20_000:],
            verified=verified,
            finished_at=datetime.now(UTC),
        )
        self.results.labels(step.action, published).inc()
        await self._publish(result)
        level = logging.WARNING if outcome in ("failure", "refused") else logging.INFO
        log.log(
            level,
            "step %d of plan %s: %s %s -> %s%s",
            index + 1,
            plan.plan_id,
            step.action,
            step.target,
            outcome,
            "" if verified is None else (" (verified)" if verified else " (not verified)"),
            extra={"plan_id": plan.plan_id},
        )

    async def _publish(self, event: Event) -> None:
        """Publish a result, retrying for ``RESULT_RETRY_SECONDS``: a step that ran must
        be reported even when RESULTS is electing a new leader (a NATS node died). A
        retry is safe: the event's id deduplicates a result the server did store."""
        timeout = self.rt.settings.publish_timeout
        deadline = asyncio.get_running_loop().time() + RESULT_RETRY_SECONDS
        while True:
            try:
                await publish(self.rt.broker, event, stream=RESULTS, timeout=timeout)
                return
            except Exception as exc:
                if asyncio.get_running_loop().time() + timeout > deadline:
                    raise
                log.warning("publishing %s failed: %r; retrying", type(event).__name__, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
