"""The numbers a plan is made from, as named features.

For the issue: its value, threshold (0 and ``has_threshold`` = 0 for anomalies),
severity ratio (value / threshold; 1 without a usable threshold), severity
(``critical`` = 1 or 0), kind (one-hot) and the hour and weekday (UTC) of the
observation that raised it (``last_seen``, so a re-derived issue gives the same
numbers), and the affected service's trace figures the issue carried
(``signals``): ``trace:requests_per_second``, ``trace:errors_per_second``,
``trace:error_ratio``, ``trace:latency_p95_ms`` (0 when missing) and
``trace:present`` (1 when it carried any). For every action in the catalog:
``rate:<action>``, its smoothed historical success rate for this kind of issue
and the target it would get here, ``tries:<action>``, the outcomes that rate rests on, and
``targeted:<action>``, 1 if the executor permits the action on a target here
(0: the action cannot be a step, and its rate is the kind's).

A plan stores all of these in ``Plan.features``. The model sees one row per
candidate action: the issue features, the action one-hot, that action's rate
and its tries (``targeted:`` only decides which actions are candidates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import get_args

from medbay.common.actions import ACTIONS
from medbay.common.events import ActionName, IssueEvent, IssueKind, Severity

KINDS: tuple[IssueKind, ...] = get_args(IssueKind)
TRACE_SIGNALS: tuple[str, ...] = (
    "requests_per_second",
    "errors_per_second",
    "error_ratio",
    "latency_p95_ms",
)
"""The issue's ``signals`` the planner uses, each as feature ``trace:<name>``."""
ACTION_NAMES: tuple[ActionName, ...] = tuple(ACTIONS)

ISSUE_FEATURES: tuple[str, ...] = (
    "value",
    "threshold",
    "has_threshold",
    "severity_ratio",
    "critical",
    "hour",
    "weekday",
    *(f"kind:{k}" for k in KINDS),
    *(f"trace:{s}" for s in TRACE_SIGNALS),
    "trace:present",
)

LIMIT = 1e12
"""Feature values are clipped to +-LIMIT (non-finite ones become 0)."""


def rate_feature(action: str) -> str:
    return f"rate:{action}"


def tries_feature(action: str) -> str:
    return f"tries:{action}"


def targeted_feature(action: str) -> str:
    return f"targeted:{action}"


def _finite(x: float) -> float:
    return min(max(x, -LIMIT), LIMIT) if math.isfinite(x) else 0.0


def issue_features(issue: IssueEvent) -> dict[str, float]:
    value = _finite(issue.value)
    threshold = _finite(issue.threshold) if issue.threshold is not None else 0.0
    usable = issue.threshold is not None and threshold != 0.0
    seen = issue.last_seen
    features = {
        "value": value,
        "threshold": threshold,
        "has_threshold": 1.0 if issue.threshold is not None else 0.0,
        "severity_ratio": _finite(value / threshold) if usable else 1.0,
        "critical": 1.0 if issue.severity == Severity.CRITICAL else 0.0,
        "hour": float(seen.hour),
        "weekday": float(seen.weekday()),
    }
    for kind in KINDS:
        features[f"kind:{kind}"] = 1.0 if issue.kind == kind else 0.0
    signals = issue.signals
    for name in TRACE_SIGNALS:
        features[f"trace:{name}"] = _finite(signals.get(name, 0.0))
    features["trace:present"] = 1.0 if signals else 0.0
    return features


def plan_features(
    issue: IssueEvent,
    evidence: Callable[[ActionName], tuple[float, int]],
    targeted: Callable[[ActionName], bool],
) -> dict[str, float]:
    """The issue's features, and the rate, tries and whether there is a target of
    every action (``evidence(action)`` gives the first two)."""
    features = issue_features(issue)
    for action in ACTION_NAMES:
        rate, tries = evidence(action)
        features[rate_feature(action)] = rate
        features[tries_feature(action)] = float(tries)
        features[targeted_feature(action)] = 1.0 if targeted(action) else 0.0
    return features
