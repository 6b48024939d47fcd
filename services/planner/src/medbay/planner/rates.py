"""Success rates of actions: per action, per (issue kind, action), per
(issue kind, action, target) and per (issue kind, action, target, severity).

The raw rates (successes / tries) are what people read: ``snapshot()`` gives
them as JSON-ready data (the planner also stores it in KV and exports gauges).
The model is fed a smoothed rate instead, so that two lucky tries do not read
as certainty: each level is pulled towards the level above it by
``prior_strength`` pseudo-outcomes,

    action:   (s + m * 0.5)    / (n + m)
    kind:     (s + m * action) / (n + m)
    target:   (s + m * kind)   / (n + m)
    severity: (s + m * target) / (n + m)

The severity level is there because what fixes a warning is often not what
fixes a critical issue of the same kind (a slow leak against a traffic surge).
It is only known for outcomes whose plan is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NEUTRAL = 0.5
"""The rate assumed for an action nothing is known about."""


@dataclass
class Tally:
    successes: int = 0
    failures: int = 0

    @property
    def tries(self) -> int:
        return self.successes + self.failures

    def smoothed(self, prior: float, strength: float) -> float:
        return (self.successes + strength * prior) / (self.tries + strength)

    def as_dict(self) -> dict[str, Any]:
        return {
            "successes": self.successes,
            "failures": self.failures,
            "rate": round(self.successes / self.tries, 4),
        }


_EMPTY = Tally()


class SuccessRates:
    def __init__(self, prior_strength: float = 2.0) -> None:
        self.strength = prior_strength
        self.by_action: dict[str, Tally] = {}
        self.by_kind: dict[tuple[str, str], Tally] = {}
        self.by_target: dict[tuple[str, str, str], Tally] = {}
        self.by_severity: dict[tuple[str, str, str, str], Tally] = {}

    def record(
        self, kind: str, action: str, target: str, success: bool, severity: str | None = None
    ) -> None:
        tallies = [
            self.by_action.setdefault(action, Tally()),
            self.by_kind.setdefault((kind, action), Tally()),
            self.by_target.setdefault((kind, action, target), Tally()),
        ]
        if severity is not None:
            tallies.append(self.by_severity.setdefault((kind, action, target, severity), Tally()))
        for tally in tallies:
            if success:
                tally.successes += 1
            else:
                tally.failures += 1

    def rate(
        self, kind: str, action: str, target: str | None, severity: str | None = None
    ) -> float:
        """The smoothed success rate of ``action`` on ``target`` for ``kind`` issues
        (of ``severity``, if given); with no target, the kind's."""
        m = self.strength
        overall = self.by_action.get(action, _EMPTY).smoothed(NEUTRAL, m)
        for_kind = self.by_kind.get((kind, action), _EMPTY).smoothed(overall, m)
        if target is None:
            return for_kind
        for_target = self.by_target.get((kind, action, target), _EMPTY).smoothed(for_kind, m)
        if severity is None:
            return for_target
        return self.by_severity.get((kind, action, target, severity), _EMPTY).smoothed(
            for_target, m
        )

    def evidence(
        self, kind: str, action: str, target: str | None, severity: str | None = None
    ) -> tuple[float, int]:
        """The smoothed rate and the number of outcomes on this very target (none
        without a target)."""
        tries = self.by_target.get((kind, action, target), _EMPTY).tries if target else 0
        return self.rate(kind, action, target, severity), tries

    def snapshot(self) -> dict[str, Any]:
        """Raw rates for people and dashboards: successes, failures and rate per
        ``actions[action]``, ``kinds[kind][action]`` and ``targets[kind][action][target]``."""
        kinds: dict[str, dict[str, Any]] = {}
        for (kind, action), tally in sorted(self.by_kind.items()):
            kinds.setdefault(kind, {})[action] = tally.as_dict()
        targets: dict[str, dict[str, dict[str, Any]]] = {}
        for (kind, action, target), tally in sorted(self.by_target.items()):
            targets.setdefault(kind, {}).setdefault(action, {})[target] = tally.as_dict()
        return {
            "actions": {a: t.as_dict() for a, t in sorted(self.by_action.items())},
            "kinds": kinds,
            "targets": targets,
        }
