"""What operators change through the gateway, each change recorded with who made it.

Approvals, quick actions and breaker resets are events (``Approval.decided_by``,
``ActionRequested.requested_by``, ``BreakerReset.reset_by``); the services that
own them act on them. The gateway reads the executor's records (plans, breakers)
and the approver's deadlines but never writes them: the NATS server would refuse
it. A replay changes nothing recorded: it is logged with who asked and answered
with the count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NoStreamResponseError
from nats.js.kv import KeyValue

from medbay.common.events import ActionRequested, Approval, BreakerReset, Event
from medbay.common.records import (
    APPROVER_BOOK,
    EXECUTOR_RAILS,
    PLAN_BOOK,
    BreakerState,
    PlanRecord,
    open_breakers,
    read_approval_deadline,
    read_plan,
)
from medbay.common.streams import APPROVALS, AUDIT, REQUESTS, STREAMS_BY_NAME, StreamSpec
from medbay.gateway.auth import Principal
from medbay.gateway.incidents import IncidentBook
from medbay.gateway.replay import replay_range
from medbay.gateway.schemas import (
    ActionAccepted,
    Breaker,
    BreakerResetResponse,
    DecisionResponse,
    PendingApproval,
    QuickAction,
    ReplayRequest,
    ReplayResponse,
)

log = logging.getLogger(__name__)

Publish = Callable[[Event, StreamSpec], Awaitable[object]]


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class Unavailable(Exception):
    """NATS cannot do it now (a stream or bucket is missing, or NATS is away)."""


class Operations:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        publish: Publish,
        incidents: IncidentBook,
        *,
        replay_max_messages: int,
        on_change: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self.nc = nc
        self.js = js
        self._publish = publish
        self.incidents = incidents
        self.replay_max_messages = replay_max_messages
        self.on_change = on_change
        """Told the kind of every change made: approve, reject, action, breaker_reset, replay."""
        self._buckets: dict[str, KeyValue] = {}

    async def publish(self, event: Event, stream: StreamSpec) -> None:
        try:
            await self._publish(event, stream)
        except NoStreamResponseError:
            raise Unavailable(
                f"stream {stream.name} does not exist yet; the {stream.owner} declares it"
            ) from None
        except (NatsError, TimeoutError) as exc:
            raise Unavailable(f"could not publish to {stream.name}: {type(exc).__name__}") from None

    # --- approvals ------------------------------------------------------------------

    async def _bucket(self, name: str) -> KeyValue | None:
        """Another service's bucket, read-only; None until its owner made it."""
        if name not in self._buckets:
            try:
                self._buckets[name] = await self.js.key_value(name)
            except BucketNotFoundError:
                return None
        return self._buckets[name]

    async def _plan_record(self, plan_id: str) -> PlanRecord | None:
        """The executor's record of the plan; None if it has none (or never ran)."""
        kv = await self._bucket(PLAN_BOOK.name)
        if kv is None:
            return None
        record, _ = await read_plan(kv, plan_id)
        return record

    async def with_deadlines(self, pending: list[PendingApproval]) -> list[PendingApproval]:
        """Each plan with the approver's deadline for it; left unknown (None) where the
        approver has no record (or no bucket: no approver runs), or it cannot be read."""
        if not pending:
            return pending
        try:
            kv = await self._bucket(APPROVER_BOOK.name)
            if kv is None:
                return pending
            found = await asyncio.gather(
                *(read_approval_deadline(kv, p.plan.plan_id) for p in pending)
            )
        except (NatsError, TimeoutError) as exc:
            log.warning("approval deadlines unknown: %s", type(exc).__name__)
            return pending
        return [
            p.model_copy(update={"deadline": record.deadline})
            if record is not None and record.plan_id == p.plan.plan_id
            else p
            for p, record in zip(pending, found, strict=True)
        ]

    async def decide(
        self,
        plan_id: str,
        decision: Literal["approve", "reject"],
        who: Principal,
        reason: str,
    ) -> DecisionResponse:
        """Approve or reject a plan that awaits a decision (``Conflict`` if it does not)."""
        record = await self._plan_record(plan_id)
        known = self.incidents.plan(plan_id)
        note = ""
        if record is not None:
            if record.state != "pending":
                by = f" by {record.decided_by}" if record.decided_by else ""
                raise Conflict(f"plan {plan_id} is already {record.state}{by}")
        elif known is None:
            raise NotFound(f"no plan {plan_id}")
        elif known.status != "pending_approval":
            raise Conflict(f"plan {plan_id} is {known.status}, not waiting for approval")
        else:
            note = (
                "the executor has not recorded this plan yet; it applies the decision when it does"
            )
        approval = Approval(
            plan_id=plan_id,
            decision=decision,
            decided_by=who.name,
            channel="gateway",
            reason=reason,
        )
        await self.publish(approval, APPROVALS)
        self.on_change(decision)
        log.info("%s of plan %s by %s", decision, plan_id, who.name, extra={"plan_id": plan_id})
        return DecisionResponse(approval=approval, note=note or f"{decision} sent to the executor")

    # --- quick actions -----------------------------------------------------------------

    async def request_action(self, request: QuickAction, who: Principal) -> ActionAccepted:
        event = ActionRequested(
            host=request.host,
            action=request.action,
            target=request.target,
            params=request.params,
            requested_by=who.name,
            channel="gateway",
            reason=request.reason,
        )
        await self.publish(event, REQUESTS)
        self.on_change("action")
        log.info(
            "quick action %s %s on %s requested by %s",
            request.action,
            request.target,
            request.host,
            who.name,
        )
        return ActionAccepted(
            request=event, note="the planner turns it into a plan under the usual approval rules"
        )

    # --- breakers ----------------------------------------------------------------------

    async def _open_breakers(self) -> dict[str, BreakerState]:
        kv = await self._bucket(EXECUTOR_RAILS.name)
        return {} if kv is None else await open_breakers(kv)

    async def breakers(self) -> list[Breaker]:
        return [
            Breaker(
                target=target,
                opened_at=state.opened_at,
                reason=state.reason,
                actions=[(a.action, a.at) for a in state.actions],
            )
            for target, state in sorted((await self._open_breakers()).items())
        ]

    async def reset_breaker(self, target: str, who: Principal) -> BreakerResetResponse:
        """Ask the executor to close the breaker: a BreakerReset on AUDIT, which it applies."""
        if target not in await self._open_breakers():
            raise Conflict(f"no open breaker for {target!r}")
        event = BreakerReset(target=target, reset_by=who.name, channel="gateway")
        await self.publish(event, AUDIT)
        self.on_change("breaker_reset")
        log.info("breaker reset for %r asked by %s", target, who.name)
        return BreakerResetResponse(reset=event)

    # --- replay ------------------------------------------------------------------------

    async def replay(self, request: ReplayRequest, who: Principal) -> ReplayResponse:
        spec = STREAMS_BY_NAME[request.stream]
        until = request.until or datetime.now(UTC)
        done = await replay_range(
            self.nc,
            self.js,
            spec,
            since=request.since,
            until=until,
            subject=request.subject,
            prefix=request.prefix,
            max_messages=self.replay_max_messages,
        )
        self.on_change("replay")
        log.info(
            "replay of %s from %s to %s into %s by %s: %d events%s",
            spec.name,
            request.since.isoformat(),
            until.isoformat(),
            request.prefix,
            who.name,
            done.count,
            " (truncated)" if done.truncated else "",
        )
        return ReplayResponse(
            stream=spec.name,
            since=request.since,
            until=until,
            prefix=request.prefix,
            count=done.count,
            truncated=done.truncated,
            requested_by=who.name,
        )
