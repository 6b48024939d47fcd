"""The executor's configuration: mode, targets and safety rails.

A YAML file named by ``MEDBAY_EXECUTOR_CONFIG`` (or ``--config``). Without one
the executor runs in dry-run with no targets and an empty allowlist: it reports
what every plan would do and touches nothing.

.. code-block:: yaml

    mode: live                # default dry-run: report what would be done, do nothing
    targets:                  # name -> backend; plan steps name their target
      web: {kind: process, command: [python, -m, http.server, "8080"], match: http.server}
      redis: {kind: redis, url: "redis://127.0.0.1:6379/0"}
      oncall: {kind: notifier, via: log}
    escalate_to: oncall       # alert_human target when a breaker is open or a plan fails
    verify_window_seconds: 60
    safety:
      allow: {restart_service: [web], clear_cache: [redis], alert_human: [oncall]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medbay.common.settings import ConfigError, load_yaml_config
from medbay.executor.safety import SafetyConfig
from medbay.executor.targets import TargetSpec

__all__ = ["ConfigError", "ExecutorConfig", "load_config"]


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["dry-run", "live"] = Field(
        default="dry-run", description="dry-run reports what each step would do and does nothing."
    )
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    escalate_to: str | None = Field(
        default=None,
        description="Target (a notifier) for alert_human when a breaker is open or a plan fails.",
    )
    verify_window_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="How long a step's fix may take to show."
    )
    max_concurrent_plans: int = Field(default=4, ge=1, le=100)
    max_plan_age_seconds: float = Field(
        default=900,
        gt=0,
        description="An unapproved plan older than this when it arrives is not run "
        "(e.g. after a long outage of the executor): the situation has moved on.",
    )

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry-run"

    @model_validator(mode="after")
    def _check_names(self) -> ExecutorConfig:
        if self.escalate_to is not None and self.escalate_to not in self.targets:
            raise ValueError(f"escalate_to names {self.escalate_to!r}, which is not a target")
        for action, names in self.safety.allow.items():
            unknown = sorted(set(names) - set(self.targets))
            if unknown:
                raise ValueError(f"safety.allow.{action} names unknown targets: {unknown}")
        return self


def load_config(path: Path | None) -> ExecutorConfig:
    return load_yaml_config(path, ExecutorConfig, what="executor")
