"""The executor's bus side: PLANS, APPROVALS and AUDIT in, actions and RESULTS out.

``ExecutorService`` holds the handlers its consumers call and the step loop.
What a step does is in ``targets``; whether it may run is in ``policy`` (the
rules) and ``rails`` (their shared state); whether it worked is in ``verify``;
where each plan stands is in ``plan_book``. ``main`` wires it to the bus.

Whether a plan waits for a person is the executor's own decision
(``config.approval``, ``medbay.common.approval``), never the plan's word alone.
Breaker resets people ask for (``BreakerReset`` on AUDIT, from the gateway or
the CLI) are applied here: only the executor writes its rails.

A plan's steps escalate: step 1 runs; if its fix is verified the plan is done,
otherwise step 2 runs, and so on. In dry-run every step is reported with what it
would have done, and nothing is verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from prometheus_client import Counter
from pydantic import ValidationError

from medbay.common.approval import plan_approval_reasons
from medbay.common.bus import Delivery, jetstream
from medbay.common.bus import publish_event as publish
from medbay.common.events import (
    ActionResult,
    Approval,
    BreakerReset,
    IssueResolved,
    MetricBatch,
    Plan,
    PlanStep,
    derived_event_id,
)
from medbay.common.reading import follow
from medbay.common.runtime import ServiceRuntime
from medbay.common.streams import ISSUES, METRICS, PREFIX, RESULTS
from medbay.executor.config import ExecutorConfig
from medbay.executor.plan_book import PlanBook
from medbay.executor.policy import Refusal
from medbay.executor.rails import SafetyRails
from medbay.executor.targets import ActionRefused, StepOutcome
from medbay.executor.verify import FixVerifier

log = logging.getLogger("medbay.executor")
Outcome = Literal["success", "failure", "refused", "dry_run"]
tracer = trace.get_tracer("medbay.executor")


class ExecutorService:
    def __init__(self, rt: ServiceRuntime, config: ExecutorConfig) -> None:
        self.rt = rt
        self.config = config
        self.executor_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.verifier = FixVerifier()
        self.book: PlanBook | None = None
        self.rails: SafetyRails | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(config.max_concurrent_plans)
        self.results = Counter(
            "medbay_executor_steps",
            "Plan steps, by action and outcome",
            ["action", "outcome"],
            registry=rt.registry,
        )

    # --- start-up --------------------------------------------------------------

    async def start(self) -> None:
        js = jetstream(self.rt.broker)
        self.book = await PlanBook.open(js)
        self.rails = await SafetyRails.open(js, self.config.safety)
        log.info(
            "executor %s in %s mode with targets %s",
            self.executor_id,
            self.config.mode,
            sorted(self.config.targets) or "(none)",
        )
        for plan_id, record in (await self.book.records()).items():
            plan = record.parsed_plan()  # an unreadable one is logged and skipped
            if record.state == "running" and plan is not None:
                log.info("resuming plan %s", plan_id)
                self.launch(plan, record.traceparent)

    async def watch_metrics(self) -> None:
        """New samples, for verifying fixes."""
        await follow(self.rt.broker, METRICS, f"{PREFIX}.metrics.>", self._on_metrics)

    async def watch_resolved(self) -> None:
        """Issues resolving, for verifying fixes."""
        await follow(self.rt.broker, ISSUES, f"{PREFIX}.issues.resolved.>", self._on_resolved)

    async def _on_metrics(self, msg: Msg) -> None:
        if not self.verifier.waiting_on_host(msg.subject.rsplit(".", 1)[-1]):
            return  # nobody is verifying anything there: don't parse
        with contextlib.suppress(ValidationError):  # the detector dead-letters it
            self.verifier.observe_batch(MetricBatch.model_validate_json(msg.data))

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
            age = (datetime.now(UTC) - plan.timestamp).total_seconds()
            if age > self.config.max_plan_age_seconds and not reasons:
                log.warning(
                    "plan %s is %.0f s old (limit %.0f s): not run, the situation has moved on",
                    plan.plan_id,
                    age,
                    self.config.max_plan_age_seconds,
                    extra={"plan_id": plan.plan_id},
                )
                continue
            with d.span("executor.receive_plan") as span:
                carrier: dict[str, str] = {}
                propagate.inject(carrier, context=trace.set_span_in_context(span))
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
            with d.span("executor.receive_approval"):
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
                elif step.action == "rejected" and approval.channel == "expiry" and plan:
                    await self._escalate(plan, "nobody decided in time; the plan expired")

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
        """Run the steps in order until one's fix is verified (see the module docstring)."""
        assert self.book is not None
        parent = propagate.extract(traceparent)
        async with self.slots:
            with tracer.start_as_current_span(
                "executor.run_plan", context=parent, attributes={"medbay.plan_id": plan.plan_id}
            ):
                try:
                    note = await self._run_steps(plan)
                except Exception as exc:
                    log.exception("plan %s failed", plan.plan_id)
                    note = f"executor error: {exc!r}"
                await self.book.finish(plan.plan_id, note)
                log.info("plan %s done: %s", plan.plan_id, note, extra={"plan_id": plan.plan_id})

    async def _run_steps(self, plan: Plan) -> str:  # noqa: C901 - one return per step outcome
        assert self.rails is not None
        for index, step in enumerate(plan.steps):
            state = await self.rails.step_state(plan.plan_id, index)
            if state is not None and state.finished:  # done before a restart
                if state.outcome == "verified":
                    return f"fixed by step {index + 1}"
                if state.outcome == "refused":
                    return f"stopped at step {index + 1}"
                continue
            if state is not None:
                await self._report_interrupted(plan, index, step)
                return f"step {index + 1} was interrupted; not run again"
            if not await self.rails.claim_step(plan.plan_id, index, self.executor_id):
                return f"step {index + 1} is being run by another executor"
            started = datetime.now(UTC)
            refusal = await self._refusal(plan, step, started)
            if refusal is not None:
                await self._finish(plan, index, step, started, "refused", refusal.reason, None)
                await self.rails.finish_step(plan.plan_id, index, "refused")
                if refusal.rule == "breaker":
                    await self._escalate(plan, refusal.reason)
                return f"step {index + 1} refused: {refusal.reason}"
            result = await self._run_step(plan, index, step, started)
            if result.verified:
                await self.rails.finish_step(plan.plan_id, index, "verified")
                return f"fixed by step {index + 1} ({step.action} {step.target})"
            await self.rails.finish_step(plan.plan_id, index, result.outcome or "failure")
            if result.outcome == "refused":
                return f"step {index + 1} refused: {result.output}"
            if step.action == "alert_human":
                return "a person was alerted"
        if self.config.dry_run:
            return "dry-run: every step reported, nothing done"
        await self._escalate(plan, "no step's fix could be verified")
        return "not fixed by any step; escalated"

    async def _run_step(
        self, plan: Plan, index: int, step: PlanStep, started: datetime
    ) -> ActionResult:
        """Do one admitted step, then verify its fix."""
        assert self.rails is not None
        with tracer.start_as_current_span(
            f"executor.step {step.action}",
            attributes={"medbay.action": step.action, "medbay.target": step.target},
        ) as span:
            await self._report(plan, index, step, started)
            target = self.config.targets[step.target]
            timeout = self.config.safety.step_timeout_seconds
            try:
                outcome = await asyncio.wait_for(
                    target.perform(step.action, dict(step.params), dry_run=self.config.dry_run),
                    timeout,
                )
            except ActionRefused as exc:
                return await self._finish(plan, index, step, started, "refused", str(exc), None)
            except TimeoutError:
                outcome = StepOutcome(False, f"timed out after {timeout:g} s")
            except Exception as exc:
                outcome = StepOutcome(False, f"{type(exc).__name__}: {exc}")
            if self.config.dry_run:
                return await self._finish(
                    plan, index, step, started, "dry_run", outcome.output, None
                )
            if not outcome.ok or step.action == "alert_human":  # alerting fixes nothing
                status: Outcome = "success" if outcome.ok else "failure"
                return await self._finish(plan, index, step, started, status, outcome.output, None)
            check = await self.verifier.wait_fixed(plan, started, self.config.verify_window_seconds)
            span.set_attribute("medbay.verified", check.verified)
            text = f"{outcome.output}\nverification: {check.detail}"
            return await self._finish(plan, index, step, started, "success", text, check.verified)

    async def _refusal(self, plan: Plan, step: PlanStep, now: datetime) -> Refusal | None:
        """Why the step may not run. In live mode an allowed step is counted at once
        (cooldown, flap history, rate limit), so concurrent plans see it."""
        assert self.rails is not None
        if step.target not in self.config.targets:
            return Refusal(
                "allowlist", f"unknown target {step.target!r}: it is not in the executor's config"
            )
        if self.config.dry_run:
            return await self.rails.check(step.action, step.target, plan.host, now)
        return await self.rails.admit(step.action, step.target, plan.host, now)

    async def _escalate(self, plan: Plan, why: str) -> None:
        """Tell a person, through the configured notifier; never blocked by the rails."""
        name = self.config.escalate_to
        index = len(plan.steps)
        if name is None:
            log.warning("plan %s needs a person (%s); no escalate_to target", plan.plan_id, why)
            return
        assert self.rails is not None
        if not await self.rails.claim_step(plan.plan_id, index, self.executor_id):
            return
        step = PlanStep(action="alert_human", target=name, risk=plan.risk, estimated_seconds=1)
        started = datetime.now(UTC)
        await self._report(plan, index, step, started)
        message = f"Medbay: plan {plan.plan_id} for {plan.issue_kind} on {plan.host}: {why}"
        try:
            outcome = await self.config.targets[name].perform(
                "alert_human", {"message": message}, dry_run=self.config.dry_run
            )
        except Exception as exc:
            outcome = StepOutcome(False, f"{type(exc).__name__}: {exc}")
        status: Outcome = (
            "dry_run" if self.config.dry_run else ("success" if outcome.ok else "failure")
        )
        await self._finish(plan, index, step, started, status, outcome.output, None)

    async def _report_interrupted(self, plan: Plan, index: int, step: PlanStep) -> None:
        now = datetime.now(UTC)
        text = "interrupted: the executor stopped during this step; it is not run twice"
        await self._finish(plan, index, step, now, "failure", text, None)

    def _result(
        self, plan: Plan, index: int, step: PlanStep, started: datetime, **fields: Any
    ) -> ActionResult:
        """The step's ActionResult; its id is derived, so a repeat is deduplicated."""
        return ActionResult(
            event_id=derived_event_id(plan.plan_id, index, fields["status"]),
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
        outcome: Outcome,
        output: str,
        verified: bool | None,
    ) -> ActionResult:
        result = self._result(
            plan,
            index,
            step,
            started,
            status="finished",
            outcome=outcome,
            output=output[-20_000:],
            verified=verified,
            finished_at=datetime.now(UTC),
        )
        self.results.labels(step.action, outcome).inc()
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
        return result

    async def _publish(self, result: ActionResult) -> None:
        await publish(
            self.rt.broker, result, stream=RESULTS, timeout=self.rt.settings.publish_timeout
        )

    async def stop(self) -> None:
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
