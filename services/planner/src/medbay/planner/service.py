"""The planner's bus side: ISSUES, REQUESTS and RESULTS in, PLANS out, models in
the object store.

This module only consumes, publishes and schedules: ``planning`` makes plans,
``learning`` joins outcomes to plans, ``model`` trains and validates, ``store``
keeps models and reads history back, ``executor_rails`` reads the executor's
target catalog and breakers. ``main`` wires it to the bus.

Issues are planned only once the executor's target catalog is known: until
the executor has written one, the issue consumer does not fetch, so issues wait
in ISSUES (nothing is lost if the planner restarts meanwhile) and are planned
when the catalog appears, except those older than ``max_event_age_seconds`` by
then. The catalog is read again every ``catalog_refresh_seconds``. Its absence
is normal for a while (the executor starts alongside), so it is only warned
about after ``CATALOG_GRACE_SECONDS``.

Several replicas may run; one is active (``medbay.common.active``). Every replica
opens the buckets (``open``); only the active one runs ``start`` and the loops, and
it writes its records only while it is the active one (``is_active``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field, TypeAdapter, ValidationError

from medbay.common.active import NotActive
from medbay.common.bus import ConsumerSpec, Delivery, jetstream, publish_event
from medbay.common.events import (
    ActionRequested,
    ActionResult,
    Event,
    IssueChange,
    IssueResolved,
    Plan,
)
from medbay.common.records import EXECUTOR_RAILS, TARGET_CATALOG_KEY, TargetCatalog
from medbay.common.runtime import ServiceRuntime
from medbay.common.streams import PLANS, RESULTS
from medbay.common.telemetry import mark_critical
from medbay.planner.config import PlannerConfig
from medbay.planner.executor_rails import ExecutorRails
from medbay.planner.learning import Learner, TrainingRow
from medbay.planner.model import (
    ModelBundle,
    NotEnoughData,
    Training,
    judge_adoption,
    train_and_validate,
)
from medbay.planner.planning import NotPlanned, Planner, plan_id_for, wants_plan
from medbay.planner.problems import Problems
from medbay.planner.store import ModelStore, read_recent

log = logging.getLogger("medbay.planner")

CATALOG_GRACE_SECONDS = 30.0
"""How long the planner waits for the executor's target catalog before warning that
there is none. The two start together (``medbay up`` starts every service at once)
and the executor writes its catalog a few seconds after it has connected, so until
then the absence is logged at INFO; still missing after this, something is wrong."""

ISSUE: TypeAdapter[IssueChange] = TypeAdapter(Annotated[IssueChange, Field(discriminator="type")])


def parse_issue(data: bytes) -> IssueChange:
    """An issue event, refused (so dead-lettered) if its value or threshold is not finite."""
    issue = ISSUE.validate_json(data)
    for name in ("value", "threshold"):
        number = getattr(issue, name)
        if number is not None and not math.isfinite(number):
            raise ValueError(f"{name}: not a finite number")
    return issue


class PlannerService:
    """Plans issues, learns from results, retrains in the background."""

    def __init__(
        self,
        rt: ServiceRuntime,
        config: PlannerConfig,
        initial_model: ModelBundle | None = None,
        is_active: Callable[[], bool] = lambda: True,
    ) -> None:
        """``initial_model``: the model of the config's ``initial_model`` file, read.
        ``is_active``: whether this replica is the active one now."""
        self.rt = rt
        self.is_active = is_active
        self.config = config
        self.initial_model = initial_model
        self.learner = Learner(config)
        self.problems: Problems[Delivery[IssueChange]] = Problems(config.problem_grace_seconds)
        self.planner = Planner(config, self.learner.rates)
        self.store: ModelStore | None = None
        self.rails: ExecutorRails | None = None
        self.catalog: TargetCatalog | None = None
        self.catalog_known = asyncio.Event()
        self.training: asyncio.Task[None] | None = None
        rt.info["target_catalog"] = "none yet: waiting for the executor to write it"
        reg = rt.registry
        self.plans = Counter(
            "medbay_planner_plans",
            "Plans published",
            ["model", "requires_approval"],
            registry=reg,
        )
        self.skipped = Counter(
            "medbay_planner_events_skipped",
            "Issue events and requests not planned, by reason (no_target: no step has a "
            "target the executor permits, and there is no fallback; covered: another open "
            "issue of the same host, kind and resource has a plan)",
            ["reason"],
            registry=reg,
        )
        self.plan_seconds = Histogram(
            "medbay_planner_plan_seconds",
            "Time to make one plan",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=reg,
        )
        self.outcomes = Counter(
            "medbay_planner_outcomes", "Step outcomes learnt from", ["outcome"], registry=reg
        )
        self.success_rate = Gauge(
            "medbay_planner_action_success_rate",
            "Share of tries that worked, per issue kind (or all) and action",
            ["kind", "action"],
            registry=reg,
        )
        self.trainings = Counter(
            "medbay_planner_trainings", "Model trainings by result", ["result"], registry=reg
        )
        self.accuracy = Gauge(
            "medbay_planner_model_validation_accuracy",
            "Validation accuracy of the current model",
            registry=reg,
        )

    # -- start-up ---------------------------------------------------------------

    async def open(self) -> None:
        """Declare the buckets (every replica, the standby ones too)."""
        js = jetstream(self.rt.broker)
        self.store = await ModelStore.open(
            js,
            keep=self.config.keep_models,
            replicas=self.rt.settings.nats_replicas,
            may_write=self.is_active,
        )
        self.rails = ExecutorRails(js)

    async def start(self, consumers: Sequence[ConsumerSpec] = ()) -> None:
        """Become the active planner: load the current model, create ``consumers`` (the
        durables it is fed by), rebuild outcomes and rates from history, then judge the
        initial model."""
        if self.store is None:
            await self.open()
        assert self.store is not None
        js = jetstream(self.rt.broker)
        await self.store.track()
        model = await self.store.load_current()
        if model is not None:
            self.use_model(model)
            log.info("loaded model %s (trained on %s)", model.version, model.trained_on)
        else:
            log.info("no model yet: planning by rules")
        # Consumers first: what is published while history is read is not missed.
        for spec in consumers:
            await ensure_consumer(js, spec)
        await self.rebuild(js)
        self.export_rates()
        if self.initial_model is not None:
            await self.judge_initial_model(self.initial_model)
        # Outcomes the current model has not seen count towards the next training.
        model = self.planner.model
        seen = model.outcomes if model is not None else 0
        if model is not None and model.trained_on != self.config.trained_on:
            seen = 0
        self.learner.new_rows = max(0, len(self.learner.rows) - seen)
        self.maybe_retrain()

    def use_model(self, model: ModelBundle) -> None:
        self.planner.model = model
        self.accuracy.set(model.validation_accuracy or 0.0)

    async def judge_initial_model(self, bundle: ModelBundle) -> None:
        """Adopt the config's ``initial_model`` if there is no current model, or if it
        validates at least as well on the held-out outcomes; each file version once."""
        assert self.store is not None
        current = self.planner.model
        if current is not None:
            if current.version == bundle.version:
                return
            if await self.store.judged_initial_model() == bundle.version:
                log.info(
                    "initial model %s was judged before; keeping %s",
                    bundle.version,
                    current.version,
                )
                return
        judged = judge_adoption(bundle, current, self.learner.rows, self.config)
        if judged.adopt:
            await self.store.save(bundle)
            self.use_model(bundle)
            log.info(
                "adopted initial model %s (trained on %s, from %s): %s",
                bundle.version,
                bundle.trained_on,
                self.config.initial_model,
                "there was no current model"
                if current is None
                else f"validates at {judged.accuracy} against {judged.current_accuracy} "
                f"for {current.version}",
            )
        else:
            assert current is not None
            log.info(
                "initial model %s not adopted: it validates at %s against %s for the "
                "current %s on this planner's held-out outcomes",
                bundle.version,
                judged.accuracy,
                judged.current_accuracy,
                current.version,
            )
        await self.store.record_judged_initial_model(bundle.version)

    async def rebuild(self, js: JetStreamContext) -> None:
        """Recent plans from PLANS, then their outcomes from RESULTS."""
        limit = self.config.replay_messages
        plans = results = 0
        async for payloads in read_recent(js, PLANS, limit):
            for data in payloads:
                try:
                    self.learner.remember(Plan.model_validate_json(data))
                    plans += 1
                except ValidationError:
                    continue
        async for payloads in read_recent(js, RESULTS, limit):
            for data in payloads:
                try:
                    learnt = self.learner.record(ActionResult.model_validate_json(data))
                except ValidationError:
                    continue
                results += learnt is not None
        log.info(
            "rebuilt %d plans and %d outcomes (%d training rows)",
            plans,
            results,
            len(self.learner.rows),
        )

    # -- the executor's targets ---------------------------------------------------

    async def watch_catalog(self, grace_seconds: float = CATALOG_GRACE_SECONDS) -> None:
        """Read the executor's target catalog now and every ``catalog_refresh_seconds``.

        While there is none, say so once at INFO; if there is still none
        ``grace_seconds`` after the first read, warn once. An error reading it is
        a warning at once."""
        assert self.rails is not None
        loop = asyncio.get_running_loop()
        warn_at = loop.time() + grace_seconds
        waiting = warned = False
        while True:
            wait = self.config.catalog_refresh_seconds
            try:
                catalog = await self.rails.catalog()
            except Exception as exc:  # NATS away for a moment: keep what is known
                log.warning("could not read the executor's target catalog: %r", exc)
            else:
                if catalog is not None:
                    self.use_catalog(catalog)
                elif self.catalog is None and not warned:
                    left = warn_at - loop.time()
                    if left > 0:
                        if not waiting:
                            waiting = True
                            log.info(
                                "waiting for the executor's target catalog (%s)",
                                self.catalog_note(),
                            )
                        wait = min(wait, left)  # warn on time, not a refresh later
                    else:
                        warned = True
                        log.warning(
                            "still no target catalog from the executor after %g s: start the "
                            "executor (medbay run executor), or check in its log that it can "
                            "write its KV bucket (%s)",
                            grace_seconds,
                            self.catalog_note(),
                        )
            await asyncio.sleep(wait)

    def catalog_note(self) -> str:
        """Where the catalog is looked for, and what waits for it."""
        return (
            f"key {TARGET_CATALOG_KEY} of KV bucket {EXECUTOR_RAILS.name}; nothing is planned "
            "until it is written: issues wait in ISSUES and are planned then, unless older "
            f"than max_event_age_seconds ({self.config.max_event_age_seconds:g} s)"
        )

    def use_catalog(self, catalog: TargetCatalog) -> None:
        if catalog == self.catalog:
            return
        self.catalog = catalog
        self.rt.info["target_catalog"] = {
            "mode": catalog.mode,
            "targets": len(catalog.targets),
            "written_at": catalog.written_at.isoformat(),
        }
        log.info(
            "target catalog of the executor (%s, written %s): %s",
            catalog.mode,
            catalog.written_at.isoformat(),
            ", ".join(
                f"{name} ({', '.join(t.actions) or 'no actions'})"
                for name, t in sorted(catalog.targets.items())
            )
            or "no targets",
        )
        self.catalog_known.set()

    async def wait_for_catalog(self) -> None:
        await self.catalog_known.wait()

    async def read_open_breakers(self) -> frozenset[str] | None:
        """The targets whose breaker is open; None if they cannot be read (then no plan
        explores)."""
        assert self.rails is not None
        try:
            return await self.rails.open_breakers()
        except Exception as exc:
            log.warning("could not read the executor's breakers (%r); not exploring", exc)
            return None

    # -- issues -> plans ----------------------------------------------------------

    async def handle_issues(self, deliveries: list[Delivery[IssueChange]]) -> None:
        """Plan a batch of issue events; only called once the catalog is known.

        One plan per problem (``problems``): an issue whose host, kind and resource
        already have an open, planned issue waits, and is planned by
        ``plan_waiting_issues`` if it outlives that one by the grace period."""
        now = datetime.now(UTC)
        breakers = await self.read_open_breakers() if self.planner.explores() else None
        for delivery in deliveries:
            issue = delivery.event
            if isinstance(issue, IssueResolved):
                self.problems.resolved(issue, asyncio.get_running_loop().time())
            if not wants_plan(issue):
                self.skipped.labels("not_opened_or_escalated").inc()
                continue
            if (covering := self.problems.covering(issue)) is not None:
                self.skipped.labels("covered").inc()
                self.problems.wait(issue, delivery)
                log.info(
                    "not planned yet: %s on %s (%s) is the problem issue %s already has a "
                    "plan for; planned if it stays open %g s longer than that issue",
                    issue.kind,
                    issue.host,
                    issue.resource,
                    covering,
                    self.problems.grace_seconds,
                    extra={"event_id": issue.event_id},
                )
                continue
            if self.should_plan(issue, now):
                await self.plan_issue(delivery, breakers)

    async def plan_waiting_issues(self, every_seconds: float = 1.0) -> None:
        """Plan the issues that waited behind another of their problem and are still
        open ``problem_grace_seconds`` after it resolved."""
        await self.wait_for_catalog()
        loop = asyncio.get_running_loop()
        while True:
            due = self.problems.due(loop.time())
            if due:
                breakers = await self.read_open_breakers() if self.planner.explores() else None
                for delivery in due:
                    if not self.learner.knows(plan_id_for(delivery.event.event_id)):
                        await self.plan_issue(delivery, breakers)
            await asyncio.sleep(every_seconds)

    async def plan_issue(
        self, delivery: Delivery[IssueChange], breakers: frozenset[str] | None
    ) -> None:
        catalog, issue = self.catalog, delivery.event
        assert catalog is not None, "issues are consumed once the target catalog is known"
        if not wants_plan(issue):
            return
        make = partial(self.planner.plan, issue, catalog, breakers)
        if await self.plan_and_publish(delivery, make):
            self.problems.planned(delivery.event)

    async def handle_requests(self, deliveries: list[Delivery[ActionRequested]]) -> None:
        now = datetime.now(UTC)
        for delivery in deliveries:
            request = delivery.event
            if self.should_plan(request, now):
                await self.plan_and_publish(delivery, partial(self.planner.plan_request, request))

    def should_plan(self, event: Event, now: datetime) -> bool:
        if (now - event.timestamp).total_seconds() > self.config.max_event_age_seconds:
            self.skipped.labels("stale").inc()
            log.info("not planning stale %s %s", getattr(event, "type", "event"), event.event_id)
            return False
        if self.learner.knows(plan_id_for(event.event_id)):
            self.skipped.labels("already_planned").inc()
            return False
        return True

    async def plan_and_publish(
        self, delivery: Delivery[Any], make: Callable[[], Plan | NotPlanned]
    ) -> bool:
        """Whether a plan was made (and published)."""
        span = mark_critical(delivery.span("planner.plan"))
        try:
            with trace.use_span(span), self.plan_seconds.time():
                plan = make()
            if isinstance(plan, NotPlanned):
                self.not_planned(delivery.event, plan)
                return False
            with trace.use_span(span):
                await self.publish(plan)
            return True
        finally:
            span.end()

    def not_planned(self, issue: IssueChange, why: NotPlanned) -> None:
        self.skipped.labels(why.reason).inc()
        log.info(
            "not planned: %s on %s (%s): %s. To act on it, make it a target of the "
            "executor (or add it to a target's covers) and allow the action there",
            issue.kind,
            issue.host,
            issue.resource or issue.metric,
            why.why,
            extra={"event_id": issue.event_id},
        )

    async def publish(self, plan: Plan) -> None:
        if not self.is_active():  # its lease ran out: the consumers are being stopped
            raise NotActive(f"plan {plan.plan_id} not published: no longer the active planner")
        fresh = await publish_event(
            self.rt.broker, plan, stream=PLANS, timeout=self.rt.settings.publish_timeout
        )
        self.learner.remember(plan)
        if not fresh:
            return
        self.plans.labels(plan.model_version, str(plan.requires_approval).lower()).inc()
        log.info(
            "plan for %s on %s: %s (confidence %.2f, %s%s)",
            plan.issue_kind,
            plan.host,
            ", ".join(f"{s.action} {s.target}" for s in plan.steps),
            plan.confidence,
            plan.model_version,
            ", needs approval" if plan.requires_approval else "",
            extra={"plan_id": plan.plan_id, "event_id": plan.issue_event_id},
        )

    # -- results -> learning ------------------------------------------------------

    async def handle_results(self, deliveries: list[Delivery[ActionResult]]) -> None:
        learnt = 0
        for delivery in deliveries:
            outcome = self.learner.record(delivery.event)
            if outcome is not None:
                self.outcomes.labels("success" if outcome else "failure").inc()
                learnt += 1
        if learnt:
            self.export_rates()
            if self.store is not None:
                await self.store.save_rates(self.learner.rates.snapshot())
            self.maybe_retrain()

    def export_rates(self) -> None:
        rates = self.learner.rates
        for action, tally in rates.by_action.items():
            self.success_rate.labels("all", action).set(tally.successes / tally.tries)
        for (kind, action), tally in rates.by_kind.items():
            self.success_rate.labels(kind, action).set(tally.successes / tally.tries)

    # -- training -----------------------------------------------------------------

    def maybe_retrain(self) -> None:
        """Start a training in a thread when enough new outcomes came in (one at a time)."""
        if self.training is not None and not self.training.done():
            return
        if not self.learner.training_due():
            return
        rows = self.learner.take_training_set()
        self.training = asyncio.create_task(self.retrain(rows), name="retrain")

    async def retrain(self, rows: list[TrainingRow]) -> None:
        current = self.planner.model
        try:
            result: Training = await asyncio.to_thread(
                train_and_validate, rows, self.config, current
            )
        except NotEnoughData as exc:
            self.trainings.labels("skipped").inc()
            log.info("no new model: %s", exc)
            return
        except Exception:
            self.trainings.labels("failed").inc()
            log.exception("training failed")
            return
        new = result.bundle
        if not result.accepted:
            self.trainings.labels("rejected").inc()
            log.info(
                "model %s kept: new model validates at %s, current at %s on %d outcomes",
                current.version if current else "-",
                new.validation_accuracy,
                result.current_accuracy,
                new.holdout,
            )
            return
        try:
            assert self.store is not None
            await self.store.save(new)
        except NotActive as exc:
            self.trainings.labels("failed").inc()
            log.warning("model %s not stored: %s", new.version, exc)
            return
        except Exception:
            self.trainings.labels("failed").inc()
            log.exception("could not store model %s; keeping the current one", new.version)
            return
        self.use_model(new)
        self.trainings.labels("accepted").inc()
        log.info(
            "model %s now current: validation accuracy %s on %d outcomes (previous %s), "
            "trained on %d",
            new.version,
            new.validation_accuracy,
            new.holdout,
            result.current_accuracy,
            new.outcomes - new.holdout,
        )
        self.maybe_retrain()

    async def stop(self) -> None:
        """Let a running training finish; its model is stored only while this replica is
        still the active one (one stopping gives its lease up first)."""
        if self.training is not None and not self.training.done():
            await asyncio.wait([self.training], timeout=60)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create ``spec``'s durable consumer now, as ``BatchConsumer`` would, if it is missing."""
    try:
        await js.consumer_info(spec.stream.name, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream.name, config=spec.consumer_config())
