"""The planner's configuration: learning, exploration, approval policy and step targets.

A YAML file named by ``MEDBAY_PLANNER_CONFIG`` (or ``--config``); every field
has a default, so the file holds only what differs.

.. code-block:: yaml

    min_outcomes: 50          # outcomes needed before a model replaces the rule table
    retrain_every: 50         # new outcomes between two trainings
    explore_rate: 0.05        # share of model plans that try the second-best action first
    rule_explore_rate: 0      # share of rule plans that try another safe action first
    min_confidence: 0.5       # plans below this need approval
    require_approval:         # policy: plans matching any of these need approval
      kinds: [disk]
      actions: [scale_up]
      hosts: ["db-*"]         # shell-style patterns
    action_targets:           # step target per action, if the executor permits the
                              # action on it (else the target covering the issue's
                              # resource); alert_human -> oncall unless named
      clear_cache: redis
    host_targets:             # per host pattern, first match wins; beats action_targets
      "cache-*": {restart_service: redis}
      "app-*": {restart_service: api, scale_up: api}
    initial_model: /etc/medbay/lab-model.zip   # adopt a model trained elsewhere
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, model_validator

from medbay.common.approval import ApprovalPolicy
from medbay.common.events import ActionName
from medbay.common.settings import ConfigError, load_yaml_config

__all__ = ["ConfigError", "PlannerConfig", "load_config"]

ALERT_TARGET: Final = "oncall"
"""Where ``alert_human`` steps go unless the config names another target: the
executor's notifier target by convention."""

TrainedOn = Literal["live", "lab"]
"""Where a model's outcomes came from: real incidents, or faults the lab injected."""


class ForestSettings(BaseModel):
    """The random forest inside the model pipeline (after a StandardScaler).

    Leaves of at least 12 outcomes give smoother probabilities: on the planner
    benchmark they ranked better than smaller leaves at every training size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trees: int = Field(default=100, ge=1, le=1000)
    max_depth: int | None = Field(default=None, ge=1, le=100)
    min_samples_leaf: int = Field(default=12, ge=1, le=1000)
    max_features: Literal["sqrt"] | Annotated[float, Field(gt=0, le=1)] = Field(
        default="sqrt", description="Features tried per split: sqrt of all, or a share."
    )
    seed: int = 0


class PlannerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_outcomes: int = Field(
        default=50, ge=2, le=1_000_000, description="Outcomes before a model is trained."
    )
    retrain_every: int = Field(
        default=50, ge=1, le=1_000_000, description="New outcomes between two trainings."
    )
    min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Plans less confident than this need approval."
    )
    require_approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    action_targets: dict[ActionName, str] = Field(
        default_factory=dict,
        description="Step target per action, used if the executor's catalog permits the "
        "action on it. Alerts go to the notifier target named `oncall` unless this says "
        "otherwise.",
    )
    host_targets: dict[str, dict[ActionName, str]] = Field(
        default_factory=dict,
        description="Per host pattern (first match wins): step target per action.",
    )
    catalog_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the executor's target catalog is read again.",
    )
    explore_rate: float = Field(
        default=0.05,
        ge=0,
        le=0.2,
        description="Share of model-made plans that try the second-best action first, "
        "when that is safe (see `exploration`); 0 turns exploring off.",
    )
    rule_explore_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of rule-made plans that first try another low-risk fix with a "
        "permitted target, then the rule's steps (see `exploration`). Off by default: the "
        "rule table's first step is the known fix. For a planner trained on purpose, as "
        "`medbay lab --train` does, so the model learns what else works and what does not.",
    )
    max_steps: int = Field(default=2, ge=1, le=10, description="Steps in a model-made plan.")
    min_step_probability: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="A model-ranked action after the first becomes a step only this likely.",
    )
    min_action_outcomes: int = Field(
        default=3,
        ge=1,
        le=10_000,
        description="A model ranks an action for a kind only after this many outcomes of it.",
    )
    min_target_outcomes: int = Field(
        default=2,
        ge=0,
        le=10_000,
        description="...and only if it was tried this often on the issue's target.",
    )
    prior_strength: float = Field(
        default=2.0, gt=0, le=1000, description="Pseudo-outcomes smoothing success rates."
    )
    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of plans held out to validate models."
    )
    max_training_outcomes: int = Field(default=5000, ge=10, le=1_000_000)
    forest: ForestSettings = Field(default_factory=ForestSettings)
    recent_plans: int = Field(
        default=20_000, ge=100, le=10_000_000, description="Plans kept to join results to."
    )
    replay_messages: int = Field(
        default=20_000,
        ge=0,
        le=10_000_000,
        description="Latest PLANS and RESULTS messages read back at start-up.",
    )
    max_event_age_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Older issue events and action requests are not planned (a stale backlog).",
    )
    problem_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="An issue of the same host, kind and resource as an open, planned one "
        "(another rule seeing the same problem) is not planned; if it is still open this "
        "long after the planned one resolved, it is planned then.",
    )
    keep_models: int = Field(
        default=10, ge=1, le=1000, description="Model versions kept in the object store."
    )
    batch_size: int = Field(default=64, ge=1, le=10_000)
    active_lease_seconds: float = Field(
        default=6.0,
        ge=2,
        le=60,
        description="Of several replicas one plans, holding a lease (key `active` of the "
        "bucket medbay_planner) it renews every third of this; the others stand by, and one "
        "takes over at most this long (plus a second) after the active one dies.",
    )
    trained_on: TrainedOn = Field(
        default="live",
        description="What this planner's outcomes come from; recorded in every model it "
        "trains (the lab sets `lab`).",
    )
    initial_model: FilePath | None = Field(
        default=None,
        description="A model file (the zip of `medbay.planner.modelfile`) to adopt at "
        "start: at once if there is no current model, else only if it validates at least "
        "as well on the current held-out outcomes.",
    )

    @model_validator(mode="after")
    def _can_train(self) -> PlannerConfig:
        if self.max_training_outcomes < self.min_outcomes:
            raise ValueError("max_training_outcomes must be at least min_outcomes")
        return self

    def named_target(self, action: ActionName, host: str) -> str | None:
        """The target the config names for ``action`` on ``host``: the first matching
        host pattern's choice, else the action's (``oncall`` for alerts); None: none."""
        for pattern, targets in self.host_targets.items():
            if fnmatch.fnmatchcase(host, pattern):
                if action in targets:
                    return targets[action]
                break
        default = ALERT_TARGET if action == "alert_human" else None
        return self.action_targets.get(action, default)


def load_config(path: Path | None) -> PlannerConfig:
    return load_yaml_config(path, PlannerConfig, what="planner")
