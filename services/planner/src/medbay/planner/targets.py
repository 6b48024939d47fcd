"""Which executor target a step names: a real one, or none.

The executor publishes the catalog of its targets (``TargetCatalog``: each
target's kind, the actions it supports and its allowlist permits, and the
other names it answers to). For each action, a step's target is

1. the target the config names (``host_targets``, then ``action_targets``;
   alerts go to ``oncall`` unless named), if the catalog permits the action on
   it and it may stand for the issue's resource (below);
2. else the target the catalog resolves for the issue's resource: the one of
   that name, or one covering it, if it permits the action;
3. else none, and the step is dropped; ``why`` says why.

When may a configured target stand for the issue's resource? When the
resource is only a metric (``memory_percent``, ``cpu_percent``: the planner
cannot see which service is the heaviest on a host, so the config says), and
for alerts (a notifier is never what an issue is about). An issue about a
named thing (a service, process, mount, interface or host) is acted on only
through a target that is that thing or covers it: a host's configured
``restart_service: api`` must not restart ``api`` because ``web`` is down.
So an issue about something that is not an executor target (a metric, or
Medbay's own services) gets no step on it.

Step parameters come from the issue: ``kill_process`` gets ``name``, the
process named by the issue's ``name`` label (a runaway process), so only that
one of the target's allowed names is signalled; ``alert_human`` gets
``message``, what a person needs to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from medbay.common.actions import ACTIONS
from medbay.common.events import ActionName, IssueEvent, ParamValue
from medbay.common.records import TargetCatalog
from medbay.planner.config import PlannerConfig
from medbay.planner.features import ACTION_NAMES

MAX_MESSAGE = 1000
"""Characters of an alert's message."""


@dataclass(frozen=True)
class TargetChoice:
    target: str | None
    """The executor target; None: no target permits the action here."""
    why: str = ""
    """Why there is none (empty when there is a target)."""


def choose_target(
    config: PlannerConfig, catalog: TargetCatalog, action: ActionName, issue: IssueEvent
) -> TargetChoice:
    resource = issue.resource
    named = config.named_target(action, issue.host)
    usable = named is not None and catalog.permits(action, named)
    if usable and (stands_for_anything(action, issue) or _answers_to(catalog, named, resource)):
        return TargetChoice(named)
    resolved = catalog.resolve(action, resource)
    if resolved is not None:
        return TargetChoice(resolved)
    why = f"no executor target named or covering {resource} permits it"
    if usable:
        why = f"the configured {named} is not {resource} and does not cover it, and {why}"
    elif named in catalog.targets:
        why = f"the executor does not permit it on {named}, and {why}"
    elif named is not None:
        why = f"{named} is not an executor target, and {why}"
    return TargetChoice(None, why)


def stands_for_anything(action: ActionName, issue: IssueEvent) -> bool:
    """Whether a configured target may stand for the issue's resource whatever it is:
    for an alert, or an issue whose resource is only its metric."""
    metric = issue.metric
    return (
        ACTIONS[action].target_kind == "human"
        or not issue.resource
        or issue.resource == metric
        or issue.resource.startswith(metric + "{")
    )


def _answers_to(catalog: TargetCatalog, name: str | None, resource: str) -> bool:
    target = catalog.targets.get(name or "")
    return target is not None and (name == resource or resource in target.covers)


def choose_targets(
    config: PlannerConfig, catalog: TargetCatalog, issue: IssueEvent
) -> dict[ActionName, TargetChoice]:
    """Every action's target choice for ``issue``."""
    return {a: choose_target(config, catalog, a, issue) for a in ACTION_NAMES}


def step_params(action: ActionName, issue: IssueEvent, note: str = "") -> dict[str, ParamValue]:
    """The parameters of a step of ``action`` for ``issue``; ``note`` ends an alert's text."""
    if action == "kill_process" and issue.labels.get("name"):
        return {"name": issue.labels["name"]}
    if action == "alert_human":
        return {"message": alert_message(issue, note)}
    return {}


def alert_message(issue: IssueEvent, note: str = "") -> str:
    """``critical disk on app-1: /data disk_percent 97.2 (threshold 95); <detail>; <note>``."""
    where = f"{issue.resource} " if issue.resource and issue.resource != issue.metric else ""
    text = f"{issue.severity.value} {issue.kind} on {issue.host}: {where}{issue.metric}"
    text += f" {issue.value:g}"
    if issue.threshold is not None:
        text += f" (threshold {issue.threshold:g})"
    for extra in (issue.detail, note):
        if extra:
            text += f"; {extra}"
    return text[:MAX_MESSAGE]
