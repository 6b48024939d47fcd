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

Rule-made plans explore only when ``rule_explore_rate`` says so (off by
default; a planner trained on purpose, as in ``medbay lab --train``): a share of
them try first another action that is a fix to try as above, picked among all
such actions by the plan id's hash, then the rule's steps. A model learns only
from what was tried: without this, a planner whose rule table is always right
never sees a failure, and a model cannot tell a fix from a non-fix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from medbay.common.actions import ACTIONS
from medbay.common.events import ActionName, Risk
from medbay.planner.config import PlannerConfig
from medbay.planner.model import RankedAction, unit_hash


def safe_to_try(
    action: ActionName, targets: Mapping[ActionName, str | None], open_breakers: Collection[str]
) -> bool:
    """Whether ``action`` is a fix to try here: low-risk, not a person, with a permitted
    target whose breaker is not open."""
    spec = ACTIONS[action]
    target = targets.get(action)
    if spec.risk != Risk.LOW or spec.target_kind == "human":
        return False
    return target is not None and target not in open_breakers


def explored_rule_action(
    plan_id: str,
    first: ActionName,
    targets: Mapping[ActionName, str | None],
    open_breakers: Collection[str] | None,
    config: PlannerConfig,
) -> ActionName | None:
    """The action a rule-made plan whose first step is ``first`` tries before it, if
    it explores; else None."""
    if open_breakers is None or unit_hash("explore", plan_id) >= config.rule_explore_rate:
        return None
    options = sorted(a for a in ACTIONS if a != first and safe_to_try(a, targets, open_breakers))
    if not options:
        return None
    return options[min(int(unit_hash("explore-rule", plan_id) * len(options)), len(options) - 1)]


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
    return second if safe_to_try(second.action, targets, open_breakers) else None
