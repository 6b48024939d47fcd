"""What may run, when, and how often: the safety rules over given state, with no I/O.

Before each step the executor asks the rails (``rails.SafetyRails``), which ask
``SafetyPolicy``; the rules, in order:

1. allowlist: an action runs only on the targets listed for it;
2. maintenance windows: nothing runs on a host during its window;
3. flap breaker: a target that needed too many restarts (kills, reboots) in a
   short time is left alone until a person resets its breaker (``FlapGuard``);
4. cooldown: the same action on the same target waits a while before running again;
5. global rate limit: at most so many actions a minute, across all executors
   (``RateLimiter``).

``alert_human`` changes nothing, so only the allowlist applies to it: telling a
person is never held back by a breaker, a cooldown, the rate limit or maintenance.

Time is passed in (``now``) and state is passed in and returned: these classes
know nothing of NATS, and are tested without it.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from medbay.common.events import ActionName
from medbay.common.records import BreakerState, RecordedAction, TargetState
from medbay.executor.safety_config import FlapConfig, RateLimitConfig, SafetyConfig

UNRESTRICTED: frozenset[ActionName] = frozenset({"alert_human"})
"""Actions that change nothing: only the allowlist applies to them."""

Rule = Literal["allowlist", "maintenance", "breaker", "cooldown", "rate_limit"]


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True)


class RateWindow(_Stored):
    taken: list[AwareDatetime] = Field(default_factory=list)
    """When the most recent actions ran (all executors), oldest first."""


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
