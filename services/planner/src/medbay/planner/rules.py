"""The rule table (model version ``rules-v1``): how to plan before there is a model.

The planner uses it until enough outcomes have been seen to train a model, and
for issues the current model ranks no action for. Each kind maps to steps in
escalation order (a later step runs only when the earlier one's fix was not
verified) and a fixed confidence that says how often the first step is expected
to be the right one.

Every step needs a target the executor permits the action on (see ``targets``);
a step without one is dropped. If none is left, the kinds marked *alert* fall
back to one ``alert_human`` step (confidence ``FALLBACK_CONFIDENCE``): a person
should hear of a problem nothing may fix. The others are not planned at all: a
service nobody made a target of, or an idle one, is the user's to watch.

| issue kind | steps | if no step has a target | confidence |
|---|---|---|---|
| service_down | restart_service | not planned | 0.80 |
| error_rate | restart_service | alert | 0.60 |
| latency | scale_up | alert | 0.55 |
| runaway_process | restart_service, then kill_process (high-risk: approval) | alert | 0.70 |
| memory | clear_cache, then restart_service | alert | 0.70 |
| disk | rotate_logs, then cleanup_disk | alert | 0.75 |
| db_latency | optimize_query | alert | 0.60 |
| cpu | scale_up | alert | 0.60 |
| low_utilisation | scale_down | not planned | 0.60 |
| host_silent | reboot (a target covering the host; high-risk: approval) | alert | 0.50 |
| no_traffic | alert_human | not planned | 0.50 |
| network_errors | alert_human | not planned | 0.50 |
| anomaly | alert_human | not planned | 0.40 |
| other | alert_human | not planned | 0.30 |

A runaway process's steps go to the targets covering the process's name (the
issue's resource): a service that runs it, and a ``process_name`` target; the
kill signals only that name (step parameter ``name``, from the issue's label).

An error rate, latency or missing traffic in a service's traces is about the
service (the issue's resource), like a service down: its steps go to the target
of that name or covering it. A service without requests may just have no users,
so nothing is restarted for it; a person hears of it.

Memory and CPU issues name a metric, not a service: the planner cannot see
which service is the heaviest on a host, so name it per host in the config
(``host_targets``, e.g. ``"cache-*": {restart_service: redis}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from medbay.common.events import ActionName, IssueKind

RULES_VERSION: Final = "rules-v1"
FALLBACK: Final[ActionName] = "alert_human"
FALLBACK_CONFIDENCE: Final = 0.5
"""The confidence of a plan that fell back to alerting a person (which never
needs approval: it changes nothing)."""


@dataclass(frozen=True)
class Rule:
    actions: tuple[ActionName, ...]
    confidence: float
    why: str
    alert: bool = False
    """Whether a person is alerted when no step has a target."""


RULES: dict[IssueKind, Rule] = {
    "service_down": Rule(("restart_service",), 0.80, "service down: restart it"),
    "error_rate": Rule(
        ("restart_service",), 0.60, "service failing requests: restart it", alert=True
    ),
    "latency": Rule(("scale_up",), 0.55, "service slow: scale it up", alert=True),
    "runaway_process": Rule(
        ("restart_service", "kill_process"),
        0.70,
        "runaway process: restart its service, then kill it",
        alert=True,
    ),
    "memory": Rule(
        ("clear_cache", "restart_service"),
        0.70,
        "high memory: drop the cache, then restart the heaviest service",
        alert=True,
    ),
    "disk": Rule(
        ("rotate_logs", "cleanup_disk"),
        0.75,
        "disk filling up: rotate logs, then clean up",
        alert=True,
    ),
    "db_latency": Rule(
        ("optimize_query",), 0.60, "slow database: analyze, cancel long queries", alert=True
    ),
    "cpu": Rule(("scale_up",), 0.60, "high CPU: scale up", alert=True),
    "low_utilisation": Rule(("scale_down",), 0.60, "little to do: scale down"),
    "host_silent": Rule(("reboot",), 0.50, "host silent: reboot it", alert=True),
    "no_traffic": Rule(
        ("alert_human",), 0.50, "no requests reach the service: a person has to look"
    ),
    "network_errors": Rule(("alert_human",), 0.50, "network errors: a person has to look"),
    "anomaly": Rule(("alert_human",), 0.40, "anomaly: a person has to look"),
    "other": Rule(("alert_human",), 0.30, "unknown issue: a person has to look"),
}
