"""The action catalog: every remediation Medbay knows, with its risk and cost.

Shared because three services read it: the planner (what it may propose, how
risky and long a plan is), the executor (which parameters a step may carry) and
the gateway (quick actions). The risks and typical durations are those of the
product's action table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from medbay.common.events import ActionName, Risk

TargetKind = Literal["service", "cache", "disk", "logs", "process", "database", "host", "human"]
"""What an action works on; the executor maps a target name to a concrete backend."""


@dataclass(frozen=True)
class ActionSpec:
    name: ActionName
    risk: Risk
    typical_seconds: float
    target_kind: TargetKind
    description: str
    params: dict[str, str] = field(default_factory=dict)
    """Parameters a step may carry: name -> meaning. Anything else is refused."""


ACTIONS: dict[ActionName, ActionSpec] = {
    a.name: a
    for a in (
        ActionSpec(
            "restart_service", Risk.LOW, 30, "service", "Stop and start a service or process."
        ),
        ActionSpec("clear_cache", Risk.LOW, 10, "cache", "Drop the keys of a cache."),
        ActionSpec(
            "scale_up",
            Risk.MEDIUM,
            120,
            "service",
            "Add replicas to a deployment.",
            {"replicas": "replicas to add (default 1)"},
        ),
        ActionSpec(
            "cleanup_disk",
            Risk.LOW,
            60,
            "disk",
            "Delete files matching the target's globs, older than its age limit.",
        ),
        ActionSpec("rotate_logs", Risk.LOW, 20, "logs", "Rotate and compress log files."),
        ActionSpec(
            "kill_process",
            Risk.HIGH,
            5,
            "process",
            "Terminate processes by allowlisted name.",
            {"signal": "TERM (default) or KILL", "name": "only this one of the allowed names"},
        ),
        ActionSpec(
            "optimize_query",
            Risk.LOW,
            5,
            "database",
            "ANALYZE, and cancel queries running longer than the target's limit.",
        ),
        ActionSpec(
            "scale_down",
            Risk.MEDIUM,
            60,
            "service",
            "Remove replicas from a deployment.",
            {"replicas": "replicas to remove (default 1)"},
        ),
        ActionSpec("reboot", Risk.HIGH, 300, "host", "Reboot the host."),
        ActionSpec(
            "alert_human",
            Risk.LOW,
            1,
            "human",
            "Tell a person; change nothing.",
            {"message": "the text to send"},
        ),
    )
}
assert set(ACTIONS) == set(get_args(ActionName)), "every action needs a catalog entry"

RISK_ORDER: dict[Risk, int] = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2}


def highest_risk(risks: list[Risk]) -> Risk:
    return max(risks, key=RISK_ORDER.__getitem__, default=Risk.LOW)
