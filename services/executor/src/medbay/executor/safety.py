"""Safety rails: what may run, when, and how often; with state in JetStream KV.

Before each step the executor asks ``SafetyRails.check``; the rules, in order:

1. allowlist: an action runs only on the targets listed for it;
2. maintenance windows: nothing runs on a host during its window;
3. flap breaker: a target that needed too many restarts (kills, reboots) in a
   short time is left alone until a person resets its breaker;
4. cooldown: the same action on the same target waits a while before running again;
5. global rate limit: at most so many actions a minute, across all executors.

``alert_human`` changes nothing, so only the allowlist applies to it: telling a
person is never held back by a breaker, a cooldown, the rate limit or maintenance.

All state lives in one KV bucket so that it survives restarts and holds across
executor replicas. Every change is a compare-and-swap loop on one key:

- ``steps.<plan>.<index>``: who claimed a plan step and how it finished (a step runs
  at most once);
- ``targets.<target>``: last run of each action (cooldowns), recent flap-prone
  actions and the breaker;
- ``rate``: the times of the most recent actions of all executors.

The rules themselves (``SafetyPolicy``, ``FlapGuard``, ``RateLimiter``) are plain
classes over these values; ``SafetyRails`` only reads and writes them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import Literal, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from medbay.common import kv as kv_records
from medbay.common.events import ActionName
from medbay.common.records import (
    EXECUTOR_RAILS,
    BreakerState,
    RecordedAction,
    TargetState,
    key_token,
    open_breakers,
    target_key,
)

BUCKET = EXECUTOR_RAILS.name
"""The KV bucket holding every rail's state (shared by all executor replicas)."""

UNRESTRICTED: frozenset[ActionName] = frozenset({"alert_human"})
"""Actions that change nothing: only the allowlist applies to them."""

FLAP_ACTIONS: tuple[ActionName, ...] = ("restart_service", "kill_process", "reboot")
"""The actions that count towards a breaker unless configured otherwise."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)

Rule = Literal["allowlist", "maintenance", "breaker", "cooldown", "rate_limit"]

# --- configuration ---------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FlapConfig(_Config):
    max_actions: int = Field(
        default=3, ge=1, description="This many counted actions on one target open its breaker."
    )
    window_seconds: float = Field(default=900.0, gt=0, description="...within this many seconds.")
    actions: list[ActionName] = Field(
        default_factory=lambda: list(FLAP_ACTIONS),
        description="The actions that count.",
    )


class RateLimitConfig(_Config):
    max_actions: int = Field(default=10, ge=1, description="At most this many actions...")
    per_seconds: float = Field(
        default=60.0, gt=0, description="...per this many seconds, all executors together."
    )


_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class MaintenanceWindow(_Config):
    """A weekly window during which no step runs (on ``hosts``, or on every host).

    A window whose end is before its start crosses midnight: it begins on the
    listed days and ends the next morning.
    """

    name: str = Field(default="", max_length=200)
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: time = Field(description='"HH:MM", local time of ``timezone``.')
    end: time = Field(description='"HH:MM", local time of ``timezone``.')
    timezone: str = "UTC"
    hosts: list[str] | None = Field(
        default=None, min_length=1, description="Host names or glob patterns; default: all."
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_clock(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError("put the time in quotes, e.g. '12:30' (unquoted, YAML reads a number)")
        if isinstance(value, str):
            match = _CLOCK.fullmatch(value)
            if match is None:
                raise ValueError(f"expected HH:MM, got {value!r}")
            return time(int(match[1]), int(match[2]))
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("start and end are the same time")
        return self

    def covers(self, host: str, now: datetime) -> bool:
        if self.hosts is not None and not any(fnmatchcase(host, p) for p in self.hosts):
            return False
        local = now.astimezone(ZoneInfo(self.timezone))
        clock = local.time()
        today = WEEKDAYS[local.weekday()]
        if self.start < self.end:
            return today in self.days and self.start <= clock < self.end
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        return (today in self.days and clock >= self.start) or (
            yesterday in self.days and clock < self.end
        )

    def describe(self) -> str:
        days = "daily" if len(set(self.days)) == len(WEEKDAYS) else ",".join(self.days)
        when = f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"
        return f"{self.name!r} ({when})" if self.name else when


class SafetyConfig(_Config):
    """The ``safety:`` section of the executor config."""

    allow: dict[ActionName, list[str]] = Field(
        default_factory=dict,
        description="Action -> the targets it may run on. Nothing runs until listed here.",
    )
    cooldown_seconds: float = Field(
        default=300.0, ge=0, description="Wait between two runs of an action on one target."
    )
    cooldown_by_action: dict[ActionName, float] = Field(
        default_factory=dict, description="Per-action cooldown, overriding cooldown_seconds."
    )
    flap: FlapConfig = Field(default_factory=FlapConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    step_timeout_seconds: float = Field(
        default=300.0, gt=0, description="A step still running after this is abandoned."
    )

    @field_validator("cooldown_by_action")
    @classmethod
    def _non_negative(cls, value: dict[ActionName, float]) -> dict[ActionName, float]:
        negative = sorted(action for action, seconds in value.items() if seconds < 0)
        if negative:
            raise ValueError(f"negative cooldown for {negative}")
        return value

    def allows(self, action: ActionName, target: str) -> bool:
        return target in self.allow.get(action, ())

    def cooldown_for(self, action: ActionName) -> float:
        return self.cooldown_by_action.get(action, self.cooldown_seconds)


# --- state kept in KV ---------------------------------------------------------------


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True)


class RateWindow(_Stored):
    taken: list[AwareDatetime] = Field(default_factory=list)
    """When the most recent actions ran (all executors), oldest first."""


class StepState(_Stored):
    executor_id: str
    claimed_at: AwareDatetime
    outcome: str | None = None
    finished_at: AwareDatetime | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


# --- the rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    rule: Rule
    reason: str


def _span(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class FlapGuard:
    """Opens a target's breaker when counted actions on it reach the limit within the window."""

    def __init__(self, config: FlapConfig) -> None:
        self.config = config

    def after(self, state: TargetState, action: ActionName, now: datetime) -> TargetState:
        if action not in self.config.actions:
            return state
        since = now - timedelta(seconds=self.config.window_seconds)
        recent = [a for a in state.recent if a.at > since]
        recent = [*recent, RecordedAction(action=action, at=now)][-self.config.max_actions :]
        if state.breaker is not None or len(recent) < self.config.max_actions:
            return state.model_copy(update={"recent": recent})
        counts = Counter(a.action for a in recent)
        what = ", ".join(f"{n} {name}" for name, n in counts.items())
        reason = f"{len(recent)} actions in {_span(self.config.window_seconds)}: {what}"
        breaker = BreakerState(opened_at=now, reason=reason, actions=recent)
        return state.model_copy(update={"recent": recent, "breaker": breaker})


class RateLimiter:
    """At most ``max_actions`` per ``per_seconds``, counted over one shared window."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config

    def _recent(self, window: RateWindow, now: datetime) -> list[datetime]:
        since = now - timedelta(seconds=self.config.per_seconds)
        return [t for t in window.taken if t > since]

    def refusal(self, window: RateWindow, now: datetime) -> Refusal | None:
        count = len(self._recent(window, now))
        if count < self.config.max_actions:
            return None
        return Refusal(
            "rate_limit",
            f"rate limit: {count} actions in the last {self.config.per_seconds:g} s"
            f" (at most {self.config.max_actions})",
        )

    def take(self, window: RateWindow, now: datetime) -> RateWindow:
        taken = [*self._recent(window, now), now][-self.config.max_actions :]
        return RateWindow(taken=taken)


class SafetyPolicy:
    """Every rule, over given state: no I/O."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.flap = FlapGuard(config.flap)
        self.rate = RateLimiter(config.rate_limit)

    def refusal(
        self,
        action: ActionName,
        target: str,
        host: str,
        now: datetime,
        state: TargetState | None,
        window: RateWindow,
    ) -> Refusal | None:
        if not self.config.allows(action, target):
            return Refusal(
                "allowlist",
                f"target {target!r} is not allowlisted for {action}"
                f" (add it to safety.allow.{action})",
            )
        if action in UNRESTRICTED:
            return None
        for w in self.config.maintenance:
            if w.covers(host, now):
                return Refusal("maintenance", f"maintenance window {w.describe()} on {host}")
        if state is not None and state.breaker is not None:
            b = state.breaker
            return Refusal(
                "breaker",
                f"breaker open for {target!r} since {b.opened_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
                f" UTC ({b.reason}); reset with `medbay breaker reset {shlex.quote(target)}`",
            )
        cooldown = self.config.cooldown_for(action)
        last = None if state is None else state.last_run.get(action)
        if cooldown > 0 and last is not None and (ago := (now - last).total_seconds()) < cooldown:
            return Refusal(
                "cooldown",
                f"cooldown: {action} on {target!r} ran {max(ago, 0):.0f} s ago"
                f" (cooldown {cooldown:g} s)",
            )
        return self.rate.refusal(window, now)

    def after_run(
        self, state: TargetState | None, action: ActionName, target: str, now: datetime
    ) -> TargetState:
        """The target's state once ``action`` ran on it: cooldown started, flap counted."""
        state = state or TargetState(target=target)
        state = state.model_copy(update={"last_run": {**state.last_run, action: now}})
        return self.flap.after(state, action, now)


# --- KV -------------------------------------------------------------------------------

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def step_key(plan_id: str, step_index: int) -> str:
    return f"steps.{key_token(plan_id)}.{step_index}"


RATE_KEY = "rate"


class SafetyRails:
    """The rails over the shared KV bucket; any number of instances may share it."""

    def __init__(self, kv: KeyValue, config: SafetyConfig) -> None:
        self.kv = kv
        self.config = config
        self.policy = SafetyPolicy(config)

    @classmethod
    async def open(cls, js: JetStreamContext, config: SafetyConfig) -> SafetyRails:
        """Open the bucket, creating it if missing."""
        kv = await js.create_key_value(
            config=KeyValueConfig(
                bucket=BUCKET,
                history=5,
                storage=StorageType.FILE,
                description=EXECUTOR_RAILS.description,
            )
        )
        return cls(kv, config)

    # --- plan steps: at most once ---------------------------------------------------

    async def claim_step(self, plan_id: str, step_index: int, executor_id: str) -> bool:
        """Claim a step for this executor; False if it was ever claimed before."""
        state = StepState(executor_id=executor_id, claimed_at=datetime.now(UTC))
        try:
            await self.kv.create(step_key(plan_id, step_index), state.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def finish_step(self, plan_id: str, step_index: int, outcome: str) -> None:
        """Record a step's outcome; the first outcome recorded stays."""

        def finish(old: StepState | None) -> StepState | None:
            now = datetime.now(UTC)
            if old is None:
                return StepState(executor_id="", claimed_at=now, outcome=outcome, finished_at=now)
            if old.finished:
                return None
            return old.model_copy(update={"outcome": outcome, "finished_at": now})

        await self._change(step_key(plan_id, step_index), StepState, finish)

    async def step_state(self, plan_id: str, step_index: int) -> StepState | None:
        """None if never claimed; else claimed (maybe interrupted) or finished."""
        state, _ = await self._read(step_key(plan_id, step_index), StepState)
        return state

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
