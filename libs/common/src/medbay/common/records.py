"""KV records that one service writes and others read: their models and read-only access.

The executor writes where each plan stands (``PLAN_BOOK``) and its safety rails
(``EXECUTOR_RAILS``); the approver, the gateway and the CLI read them through
this module, never by importing the executor, and never write them (the NATS
server refuses it: see ``medbay.common.access``). The planner's records
(``PLANNER_STATE``) are named here for the same reason. The gateway reads the
deadline of each plan the approver asks about (``APPROVER_BOOK``) here too, with a
model of only what it needs: the approver's own record stays in the approver.

A record that cannot be parsed is logged and skipped: one bad record must not
stop a service from starting or a page from showing.
"""

from __future__ import annotations

import logging
import re
from typing import Literal, TypeVar

from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from medbay.common.access import APPROVER_BOOK, EXECUTOR_RAILS, PLAN_BOOK, PLANNER_STATE
from medbay.common.events import ActionName, Plan, PlanOutcome
from medbay.common.kv import entries as kv_entries

__all__ = [
    "APPROVER_BOOK",
    "EXECUTOR_RAILS",
    "PLANNER_STATE",
    "PLAN_BOOK",
    "TARGET_CATALOG_KEY",
    "ApprovalDeadline",
    "BreakerState",
    "CatalogTarget",
    "PlanRecord",
    "TargetCatalog",
    "TargetState",
    "approval_key",
    "key_token",
    "open_breakers",
    "plan_key",
    "read_approval_deadline",
    "read_plan",
    "read_plans",
    "read_target_catalog",
    "target_key",
]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

_UNSAFE_KEY_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def key_token(name: str) -> str:
    """``name`` as one KV key token: other characters become ``=XX`` (UTF-8, hex).

    Reversible, so two names never share a key (``web.1`` -> ``web=2E1``).
    """
    if not name:
        raise ValueError("an empty name has no key")
    return _UNSAFE_KEY_CHAR.sub(lambda m: "".join(f"={b:02X}" for b in m[0].encode()), name)


# --- the executor's plan book ------------------------------------------------------------

PlanState = Literal["pending", "approved", "rejected", "running", "done"]
"""Where a plan stands; how a ``done`` (or ``rejected``) one ended is its ``outcome``."""


class PlanRecord(BaseModel):
    """Where one plan stands, at key ``plan_key(plan_id)`` of ``PLAN_BOOK``."""

    model_config = ConfigDict(extra="ignore")

    state: PlanState
    plan: str | None = None
    """The plan's JSON; None while only its approval is known."""
    traceparent: dict[str, str] = Field(default_factory=dict)
    decided_by: str = ""
    channel: str = ""
    decided_at: str = ""
    note: str = ""
    outcome: PlanOutcome | None = None
    """How it ended (see ``medbay.common.events.PlanOutcome``); None while it is not over."""
    approval_reasons: list[str] = Field(default_factory=list)
    """Why the executor holds the plan for approval (empty: it does not)."""

    def parsed_plan(self) -> Plan | None:
        """The plan, or None if unknown yet or unreadable (logged)."""
        if self.plan is None:
            return None
        try:
            return Plan.model_validate_json(self.plan)
        except ValidationError as exc:
            log.warning("unreadable plan in the plan book, skipped: %s", exc.errors()[:1])
            return None


def plan_key(plan_id: str) -> str:
    return f"plans.{key_token(plan_id)}"


def _parse(model: type[M], data: bytes, key: str) -> M | None:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        log.warning("unreadable record %s, skipped: %s", key, exc.errors()[:1])
        return None


async def _read_all(kv: KeyValue, prefix: str, model: type[M]) -> dict[str, M]:
    """Every readable record under ``prefix`` (keys without it)."""
    return {
        entry.key.removeprefix(prefix): record
        for entry in await kv_entries(kv, f"{prefix}>")
        if entry.value and (record := _parse(model, entry.value, entry.key))
    }


async def read_plan(kv: KeyValue, plan_id: str) -> tuple[PlanRecord | None, int]:
    """The plan's record and its revision; (None, 0) if none, or if unreadable."""
    try:
        entry = await kv.get(plan_key(plan_id))
    except (KeyNotFoundError, KeyDeletedError):
        return None, 0
    if entry.value is None:
        return None, 0
    return _parse(PlanRecord, entry.value, entry.key), entry.revision or 0


async def read_plans(kv: KeyValue) -> dict[str, PlanRecord]:
    """Every readable plan record, by plan key."""
    return await _read_all(kv, "plans.", PlanRecord)


# --- the approver's book: deadlines ----------------------------------------------------------


class ApprovalDeadline(BaseModel):
    """What others read of the approver's record of a plan, at ``approval_key(plan_id)`` of
    ``APPROVER_BOOK``: when the plan expires undecided (None: the approver set none)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    plan_id: str
    deadline: AwareDatetime | None = None


def approval_key(plan_id: str) -> str:
    return f"plans.{key_token(plan_id)}"


async def read_approval_deadline(kv: KeyValue, plan_id: str) -> ApprovalDeadline | None:
    """The approver's deadline for the plan; None if it has no record, or an unreadable one."""
    try:
        entry = await kv.get(approval_key(plan_id))
    except (KeyNotFoundError, KeyDeletedError):
        return None
    if entry.value is None:
        return None
    return _parse(ApprovalDeadline, entry.value, entry.key)


# --- the executor's rails: breakers ----------------------------------------------------------


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True)


class RecordedAction(_Stored):
    action: ActionName
    at: AwareDatetime


class BreakerState(_Stored):
    opened_at: AwareDatetime
    reason: str
    actions: list[RecordedAction]
    """The actions that opened it."""


class TargetState(_Stored):
    """One target's rail state, at key ``target_key(target)`` of ``EXECUTOR_RAILS``."""

    target: str
    last_run: dict[ActionName, AwareDatetime] = Field(default_factory=dict)
    recent: list[RecordedAction] = Field(default_factory=list)
    """Flap-counted actions inside the flap window, oldest first."""
    breaker: BreakerState | None = None
    reset_by: str = ""
    reset_at: AwareDatetime | None = None


def target_key(target: str) -> str:
    return f"targets.{key_token(target)}"


async def open_breakers(kv: KeyValue) -> dict[str, BreakerState]:
    """The open breakers, by target (unreadable records are logged and skipped)."""
    states = await _read_all(kv, "targets.", TargetState)
    return {s.target: s.breaker for s in states.values() if s.breaker is not None}


# --- the executor's targets ------------------------------------------------------------------

TARGET_CATALOG_KEY = "catalog"
"""In ``EXECUTOR_RAILS``: the ``TargetCatalog`` the executor writes at every start."""


class CatalogTarget(_Stored):
    """What the planner may know of one executor target, to name it in a step."""

    kind: str
    actions: list[ActionName]
    """The actions this target supports and the executor's allowlist permits."""
    covers: list[str] = Field(default_factory=list)
    """Other names it answers to in issues: the service, process, cache, database,
    directory or mount an issue's resource names (besides the target's own name)."""


class TargetCatalog(_Stored):
    """The executor's targets, so that a plan names a real target or none."""

    mode: Literal["dry-run", "live"]
    targets: dict[str, CatalogTarget]
    written_at: AwareDatetime

    def resolve(self, action: ActionName, resource: str) -> str | None:
        """The target for ``action`` on ``resource``: the one named so, else the one
        covering it; it must permit the action. None: there is none."""
        named = self.targets.get(resource)
        if named is not None and action in named.actions:
            return resource
        for name, target in sorted(self.targets.items()):
            if resource in target.covers and action in target.actions:
                return name
        return None

    def permits(self, action: ActionName, target: str) -> bool:
        known = self.targets.get(target)
        return known is not None and action in known.actions


async def read_target_catalog(kv: KeyValue) -> TargetCatalog | None:
    """The executor's catalog; None if it wrote none yet (or an unreadable one)."""
    try:
        entry = await kv.get(TARGET_CATALOG_KEY)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    if entry.value is None:
        return None
    return _parse(TargetCatalog, entry.value, entry.key)


# --- the planner's state ---------------------------------------------------------------------

CURRENT_MODEL_KEY = "current_model"
"""In ``PLANNER_STATE``: the name of the current model version (an object in ``MODELS``)."""
SUCCESS_RATES_KEY = "success_rates"
"""In ``PLANNER_STATE``: the success rates as JSON (the planner's ``SuccessRates.snapshot``)."""
