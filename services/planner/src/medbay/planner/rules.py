"""The rule table (model version ``rules-v1``): how to plan before there is a model.

The planner uses it until enough outcomes have been seen to train a model, and
for issue kinds the current model has no outcomes for. Each kind maps to steps
in escalation order (a later step runs only when the earlier one's fix was not
verified) and a fixed confidence that says how often the first step is expected
to be the right one.

The planner cannot see which service is the heaviest on a host: for memory and
CPU issues, name it per host in the config (``host_targets``), e.g.
``"cache-*": {restart_service: redis}``; otherwise the step targets the issue's
resource.

| issue kind | steps | confidence |
|---|---|---|
| memory | clear_cache, then restart_service (the heaviest service) | 0.70 |
| disk | rotate_logs, then cleanup_disk | 0.75 |
| service_down | restart_service | 0.80 |
| db_latency | optimize_query | 0.60 |
| cpu | restart_service, then scale_up | 0.60 |
| network_errors | alert_human | 0.50 |
| anomaly | alert_human | 0.40 |
| other | alert_human | 0.30 |
"""

from __future__ import annotations

from dataclasses import dataclass

from medbay.common.events import ActionName, IssueKind

RULES_VERSION = "rules-v1"


@dataclass(frozen=True)
class Rule:
    actions: tuple[ActionName, ...]
    confidence: float
    why: str


RULES: dict[IssueKind, Rule] = {
    "memory": Rule(
        ("clear_cache", "restart_service"),
        0.70,
        "high memory: drop the cache, then restart the heaviest service",
    ),
    "disk": Rule(
        ("rotate_logs", "cleanup_disk"), 0.75, "disk filling up: rotate logs, then clean up"
    ),
    "service_down": Rule(("restart_service",), 0.80, "service down: restart it"),
    "db_latency": Rule(("optimize_query",), 0.60, "slow database: analyze, cancel long queries"),
    "cpu": Rule(("restart_service", "scale_up"), 0.60, "high CPU: restart, then scale up"),
    "network_errors": Rule(("alert_human",), 0.50, "network errors: a person has to look"),
    "anomaly": Rule(("alert_human",), 0.40, "anomaly: a person has to look"),
    "other": Rule(("alert_human",), 0.30, "unknown issue: a person has to look"),
}
