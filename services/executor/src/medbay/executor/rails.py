"""The safety rails' shared state in JetStream KV, and the rules applied over it.

All state lives in one KV bucket so that it survives restarts and holds across
executor replicas. Every change is a compare-and-swap (``medbay.common.kv.change``)
on one key:

- ``runs.<plan>``: which executor runs a plan now, a lease (``medbay.common.lease``)
  that it renews while the plan runs and that the server drops ``lease.ttl_seconds``
  after the last renewal (see ``plan_run``);
- ``steps.<plan>.<index>``: who claimed a plan step and how it finished. A claim is
  created once, only under the plan's lease, and never expires, so a step that was
  ever started is never started again, whatever happens to the lease; a claim with
  no outcome whose plan's lease lapsed was interrupted (its executor died or lost
  NATS for longer than the TTL);
- ``targets.<target>``: last run of each action (cooldowns), recent flap-prone
  actions and the breaker;
- ``rate``: the times of the most recent actions of all executors;
- ``holds.<target>``: which plan step is acting on the target (a lease), so that one
  action at a time touches a target across all replicas and concurrent plans;
- ``breaker_alerts.<target>``: which opening of the target's breaker people were
  told about, so that each opening is escalated once;
- ``catalog``: the ``TargetCatalog`` (``medbay.common.records``), written at start
  for the planner.

The rules themselves are ``policy.SafetyPolicy``; ``SafetyRails`` only reads and
writes the state they work on.

Why one lease per plan run rather than one per step: the claim of a step, the
steps after it, the escalation and the plan's end are all decided by whoever runs
the plan, so one holder for all of them leaves no moment (between two steps, while
concluding) where two replicas could both act on one plan; and a lease key that
lapses says by itself that its holder is gone, while the permanent claim keeps
what was started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import (
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict

from medbay.common import kv as kv_records
from medbay.common.events import ActionName
from medbay.common.kv import open_key_value
from medbay.common.lease import Lease, LeaseRecord, read_holder
from medbay.common.records import (
    EXECUTOR_RAILS,
    TARGET_CATALOG_KEY,
    BreakerState,
    TargetCatalog,
    TargetState,
    key_token,
    open_breakers,
    target_key,
)
from medbay.executor.policy import UNRESTRICTED, RateWindow, Refusal, SafetyPolicy
from medbay.executor.safety_config import SafetyConfig

BUCKET = EXECUTOR_RAILS.name
"""The KV bucket holding every rail's state (shared by all executor replicas)."""

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

UNAVAILABLE = (TimeoutError, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
"""What NATS answers while a bucket has no leader (a cluster electing one) or is too busy."""


class StepState(BaseModel):
    """A plan step's claim, and its outcome once finished."""

    model_config = ConfigDict(frozen=True)

    executor_id: str
    claimed_at: AwareDatetime
    outcome: str | None = None
    """``verified`` (a success whose fix was verified), or the result's outcome."""
    detail: str = ""
    """One line on how it went, for the plan's outcome and escalation after a restart."""
    finished_at: AwareDatetime | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def step_key(plan_id: str, step_index: int) -> str:
    return f"steps.{key_token(plan_id)}.{step_index}"


def run_key(plan_id: str) -> str:
    return f"runs.{key_token(plan_id)}"


RATE_KEY = "rate"


class BreakerAlert(BaseModel):
    """Which opening of a target's breaker people were told about, and by which plan."""

    model_config = ConfigDict(frozen=True)

    opened_at: AwareDatetime | None
    """The opening told about; None when the telling failed (the next may try again)."""
    plan_id: str


def breaker_alert_key(target: str) -> str:
    return f"breaker_alerts.{key_token(target)}"


class TargetHold(BaseModel):
    """Which plan step acts on a target, until when (a lease; ``holder`` "" when free)."""

    model_config = ConfigDict(frozen=True)

    holder: str = ""
    until: AwareDatetime | None = None

    def held_against(self, holder: str, now: datetime) -> bool:
        """Whether someone else holds the target at ``now``."""
        return (
            bool(self.holder) and self.holder != holder and (self.until is None or self.until > now)
        )


def hold_key(target: str) -> str:
    return f"holds.{key_token(target)}"


HOLD_POLL_SECONDS = 0.2
"""How often a step waiting for a held target looks again."""


class SafetyRails:
    """The rails over the shared KV bucket; any number of instances may share it."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, config: SafetyConfig) -> None:
        self.js = js
        self.kv = kv
        self.config = config
        self.policy = SafetyPolicy(config)

    @classmethod
    async def open(
        cls, js: JetStreamContext, config: SafetyConfig, replicas: int = 1
    ) -> SafetyRails:
        """Declare the bucket (created if missing, kept in ``replicas`` copies)."""
        kv = await open_key_value(js, EXECUTOR_RAILS, history=5, replicas=replicas)
        return cls(js, kv, config)

    # --- who runs a plan: a lease --------------------------------------------------

    def run_lease(self, plan_id: str, executor_id: str, ttl_seconds: float) -> Lease:
        """The lease under which ``executor_id`` would run the plan (not taken yet)."""
        return Lease(
            self.js, self.kv, run_key(plan_id), executor_id, ttl_seconds, detail={"plan": plan_id}
        )

    async def run_holder(self, plan_id: str) -> LeaseRecord | None:
        """Who runs the plan now; None if nobody does (never, or its lease lapsed)."""
        return await read_holder(self.kv, run_key(plan_id))

    # --- plan steps: at most once ---------------------------------------------------

    async def claim_step(self, plan_id: str, step_index: int, executor_id: str) -> bool:
        """Claim a step for this executor; False if it was ever claimed before."""
        state = StepState(executor_id=executor_id, claimed_at=datetime.now(UTC))
        try:
            await self.kv.create(step_key(plan_id, step_index), state.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def finish_step(
        self, plan_id: str, step_index: int, outcome: str, detail: str = "", *, by: str = ""
    ) -> None:
        """Record a step's outcome, as executor ``by`` saw it; the first outcome recorded
        stays, except that the outcome of the executor that claimed the step replaces an
        ``interrupted`` one (recorded by a replica that took the plan over while the
        claimer, cut off from NATS for longer than its lease, was still running it)."""

        def finish(old: StepState | None) -> StepState | None:
            now = datetime.now(UTC)
            done = {"outcome": outcome, "detail": detail, "finished_at": now}
            if old is None:
                return StepState(executor_id="", claimed_at=now, **done)
            late_truth = (
                old.outcome == "interrupted"
                and outcome != "interrupted"
                and bool(by)
                and by == old.executor_id
            )
            if old.finished and not late_truth:
                return None
            return old.model_copy(update=done)

        await self._change(step_key(plan_id, step_index), StepState, finish)

    async def step_state(self, plan_id: str, step_index: int) -> StepState | None:
        """None if never claimed; else claimed (maybe interrupted) or finished."""
        state, _ = await self._read(step_key(plan_id, step_index), StepState)
        return state

    # --- one action at a time per target ----------------------------------------------

    @asynccontextmanager
    async def hold(self, target: str, holder: str, seconds: float) -> AsyncIterator[None]:
        """Hold ``target`` for ``holder`` while the block runs, waiting while another holds it.

        A hold lasts at most ``seconds`` (the step's timeout and verification), so a
        holder that died frees the target then. Two restarts of one process at the
        same time would stop each other's new process: a step that finds its target
        held waits for the step ahead to end, then goes through the rails, which see
        that step's action (its cooldown, the flap breaker).
        """
        taken = False

        def take(old: TargetHold | None) -> TargetHold | None:
            nonlocal taken
            now = datetime.now(UTC)
            taken = old is None or not old.held_against(holder, now)
            until = now + timedelta(seconds=seconds)
            return TargetHold(holder=holder, until=until) if taken else None

        waited = False
        while True:
            old, _ = await self._change(hold_key(target), TargetHold, take)
            if taken:
                break
            if not waited and old is not None:
                log.info("%s waits for target %r: %s acts on it", holder, target, old.holder)
                waited = True
            await asyncio.sleep(HOLD_POLL_SECONDS)
        try:
            yield
        finally:

            def free(old: TargetHold | None) -> TargetHold | None:
                return TargetHold() if old is not None and old.holder == holder else None

            await self._change(hold_key(target), TargetHold, free)

    # --- the rules ---------------------------------------------------------------------

    async def check(
        self, action: ActionName, target: str, host: str, now: datetime
    ) -> Refusal | None:
        """Why ``action`` on ``target`` may not run now; None if it may. Changes nothing."""
        (state, _), (window, _) = await asyncio.gather(
            self._read(target_key(target), TargetState), self._read(RATE_KEY, RateWindow)
        )
        return self.policy.refusal(action, target, host, now, state, window or RateWindow())

    async def admit(
        self, action: ActionName, target: str, host: str, now: datetime
    ) -> Refusal | None:
        """``check``, and if allowed, count the action as ``record`` does, atomically.

        The rate-limit slot, then the target's cooldown and flap history, are each
        checked and taken in one compare-and-swap, so neither racing replicas nor
        concurrent plans on one target can overrun a limit. (A slot taken just
        before the target refuses is not given back: the error is on the safe side.)
        """
        refusal = await self.check(action, target, host, now)
        if refusal is not None or action in UNRESTRICTED:
            return refusal
        denied: list[Refusal] = []

        def take_slot(window: RateWindow | None) -> RateWindow | None:
            window = window or RateWindow()
            denied[:] = [r] if (r := self.policy.rate.refusal(window, now)) else []
            return None if denied else self.policy.rate.take(window, now)

        def count_run(state: TargetState | None) -> TargetState | None:
            r = self.policy.refusal(action, target, host, now, state, RateWindow())
            denied[:] = [r] if r else []
            return None if denied else self.policy.after_run(state, action, target, now)

        await self._change(RATE_KEY, RateWindow, take_slot)
        if denied:
            return denied[0]
        old, new = await self._change(target_key(target), TargetState, count_run)
        if denied:
            return denied[0]
        if (old is None or old.breaker is None) and new is not None and new.breaker is not None:
            log.warning("breaker opened for %r: %s", target, new.breaker.reason)
        return None

    async def record(self, action: ActionName, target: str, now: datetime) -> bool:
        """Count an action that ran (after ``admit``): cooldown and flap history.

        Returns whether this action opened the target's breaker.
        """
        if action in UNRESTRICTED:
            return False
        old, new = await self._change(
            target_key(target),
            TargetState,
            lambda state: self.policy.after_run(state, action, target, now),
        )
        was_open = old is not None and old.breaker is not None
        return not was_open and new is not None and new.breaker is not None

    async def breakers(self) -> dict[str, BreakerState]:
        """The open breakers, by target."""
        return await open_breakers(self.kv)

    async def breaker(self, target: str) -> BreakerState | None:
        """The target's breaker if it is open."""
        state, _ = await self._read(target_key(target), TargetState)
        return None if state is None else state.breaker

    async def claim_breaker_alert(self, target: str, breaker: BreakerState, plan_id: str) -> str:
        """Claim telling people that the breaker opened, once per opening.

        Returns the plan that holds the claim: ``plan_id`` if it is this one's now
        (or already was), else the plan that told people of this opening before.
        """

        def claim(old: BreakerAlert | None) -> BreakerAlert | None:
            if old is not None and old.opened_at == breaker.opened_at:
                return None
            return BreakerAlert(opened_at=breaker.opened_at, plan_id=plan_id)

        old, new = await self._change(breaker_alert_key(target), BreakerAlert, claim)
        holder = new if new is not None else old
        assert holder is not None
        return holder.plan_id

    async def release_breaker_alert(self, target: str, breaker: BreakerState, plan_id: str) -> None:
        """Give up this plan's claim (people could not be told), so a later plan may try."""

        def release(old: BreakerAlert | None) -> BreakerAlert | None:
            if old is None or old.opened_at != breaker.opened_at or old.plan_id != plan_id:
                return None
            return old.model_copy(update={"opened_at": None})

        await self._change(breaker_alert_key(target), BreakerAlert, release)

    async def write_catalog(self, catalog: TargetCatalog, patience: float = 120.0) -> None:
        """What the planner may name in a step (``TARGET_CATALOG_KEY``); written again
        while the bucket does not answer (a new cluster still electing its leader), for
        up to ``patience`` seconds."""
        data = catalog.model_dump_json().encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            try:
                await self.kv.put(TARGET_CATALOG_KEY, data)
                return
            except UNAVAILABLE as exc:
                if loop.time() > deadline:
                    raise
                log.warning("writing the target catalog: %r; trying again", exc)
                await asyncio.sleep(1.0)

    async def reset_breaker(self, target: str, by: str) -> bool:
        """Close the target's breaker and forget its flap history; False if it was not open."""

        def reset(old: TargetState | None) -> TargetState | None:
            if old is None or old.breaker is None:
                return None
            update: dict[str, object] = {
                "breaker": None,
                "recent": [],
                "reset_by": by,
                "reset_at": datetime.now(UTC),
            }
            return old.model_copy(update=update)

        _, new = await self._change(target_key(target), TargetState, reset)
        return new is not None

    # --- compare-and-swap ------------------------------------------------------------

    async def _read(self, key: str, model: type[M]) -> tuple[M | None, int]:
        return await kv_records.read(self.kv, key, model)

    async def _change(
        self, key: str, model: type[M], change: Callable[[M | None], M | None]
    ) -> tuple[M | None, M | None]:
        """Apply ``change`` to the key's value (see ``medbay.common.kv.change``)."""
        old, new, _ = await kv_records.change(self.kv, key, model, change)
        return old, new
