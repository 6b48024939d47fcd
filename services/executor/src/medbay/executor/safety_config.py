"""The ``safety:`` section of the executor config: allowlist, cooldowns, flap
breaker, rate limit and maintenance windows.

The rules that apply it are in ``policy``; the state they keep, in ``rails``.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from fnmatch import fnmatchcase
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medbay.common.events import ActionName

FLAP_ACTIONS: tuple[ActionName, ...] = ("restart_service", "kill_process", "reboot")
"""The actions that count towards a breaker unless configured otherwise."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)


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
