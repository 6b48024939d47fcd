"""Exploration: now and then, try the second-best action first.

A model learns only from the actions that were tried. Planning always by the
best estimate, a planner that settled early on a good-enough action rarely
tries a better one, and the estimate of the better one never improves. So a
small, fixed share of model-made plans (``explore_rate``, default 5 %) put the
second-best action first, with the best right after it: if the tried action's
fix is not verified, the best one runs next, as it would have.

Only when all of these hold:

* the plan is the model's (the rule table never explores) and has room for both
  (``max_steps`` of 2 or more);
* the second-best action is a fix to try: low-risk in the action catalog, not
  ``alert_human`` (paging a person for an issue the best action would then fix
  is a false alarm, and teaches nothing about fixes), and with a target the
  executor permits it on (it is a candidate only then);
* that target's flap breaker is not open (the breakers were read; unknown
  breakers mean no exploring);
* neither the plan nor the exploring one needs approval (checked by ``planning``).

Which plans explore is decided by a hash of the plan id, not by chance: the
same issue event always gets the same plan, in a replay too, and the plan's
reason says ``exploring``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from medbay.common.actions import ACTIONS
from medbay.common.events import ActionName, Risk
from medbay.planner.config import PlannerConfig
from medbay.planner.model import RankedAction, unit_hash


def explored_action(
    plan_id: str,
    ranked: Sequence[RankedAction],
    targets: Mapping[ActionName, str | None],
    open_breakers: Collection[str] | None,
    config: PlannerConfig,
) -> RankedAction | None:
    """The action the plan ``plan_id`` tries before the best, if it explores; else None.

    ``ranked`` is the model's ranking, ``targets`` each action's target here,
    ``open_breakers`` the targets whose breaker is open (None: not known)."""
    if len(ranked) < 2 or config.max_steps < 2 or open_breakers is None:
        return None
    if unit_hash("explore", plan_id) >= config.explore_rate:
        return None
    second = ranked[1]
    spec = ACTIONS[second.action]
    target = targets.get(second.action)
    if spec.risk != Risk.LOW or spec.target_kind == "human":
        return None
    if target is None or target in open_breakers:
        return None
    return second
