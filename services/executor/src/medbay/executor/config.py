"""The executor's configuration: mode, targets and safety rails.

A YAML file named by ``MEDBAY_EXECUTOR_CONFIG`` (or ``--config``). Without one
the executor runs in dry-run with no targets and an empty allowlist: it reports
what every plan would do and touches nothing.

.. code-block:: yaml

    mode: live                # default dry-run: report what would be done, do nothing
    targets:                  # name -> backend; plan steps name their target
      web:                    # the process whose argv is exactly this, run as www-data
        kind: process
        command: [/usr/bin/python3, -m, http.server, "8080"]
        user: www-data
        env: {PYTHONUNBUFFERED: "1"}
      redis: {kind: redis, url: "redis://127.0.0.1:6379/0", covers: [sessions]}
      oncall: {kind: notifier, via: telegram}   # the approver's bot; or log, webhook, command
    escalate_to: oncall       # alert_human target when a breaker is open or a plan fails
    verify_window_seconds: 60
    approval:                 # the executor's own judgement, whatever a plan says
      min_confidence: 0.5     # less confident plans wait for a person
      require_approval: {kinds: [disk], actions: [scale_up], hosts: ["db-*"]}
      channels: [telegram, gateway, cli]   # whose approvals count
    safety:
      allow: {restart_service: [web], clear_cache: [redis], alert_human: [oncall]}
    lease:                    # how executor replicas share plans (see ``plan_run``)
      ttl_seconds: 8          # a dead executor's plan is taken over 8 s after its last renewal
      renew_seconds: 2        # how often the executor running a plan renews its lease

Every target may list ``covers``: other names it answers to in issues (the
service, cache, database, directory or mount an issue names); the executor adds
the names that follow from a target's own settings and writes the catalog of its
targets at start for the planner (see ``catalog``). Two targets may not cover one
name for the same action, nor cover a target's name.

Commands the executor runs (process, command, systemd and notifier command
targets) get none of its own environment, which holds its credentials: only
PATH (``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``), LANG
and LC_ALL (``C.UTF-8``), HOME, and the target's ``env`` (which may set PATH
too). Secrets in command lines (``--password=...``, ``token=...``,
``scheme://user:pass@host``, bearer tokens) are hidden in step output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medbay.common.actions import ACTIONS
from medbay.common.approval import ApprovalPolicy
from medbay.common.lease import MIN_TTL_SECONDS
from medbay.common.settings import ConfigError, load_yaml_config
from medbay.executor.safety_config import SafetyConfig
from medbay.executor.targets import TargetSpec

__all__ = ["ConfigError", "ExecutorConfig", "load_config"]


ApprovalChannel = Literal["telegram", "gateway", "cli"]


class ApprovalConfig(BaseModel):
    """When the executor waits for a person, and whose decisions it takes.

    A plan waits when it asks to, when a step is high-risk by the action catalog,
    when its confidence is under ``min_confidence`` or when ``require_approval``
    matches (``medbay.common.approval``). Approvals count only from ``channels``
    (each published by its own NATS identity); the expiry timer may only reject.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_confidence: float = Field(default=0.5, ge=0, le=1)
    require_approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    channels: list[ApprovalChannel] = Field(
        default_factory=lambda: list(get_args(ApprovalChannel)),
        description="Where approvals may come from.",
    )


class LeaseConfig(BaseModel):
    """The lease under which one executor runs a plan (``plan_run``).

    The executor running a plan renews its lease every ``renew_seconds``; another
    replica takes the plan over (reporting the step it was in as interrupted) only
    once the server has dropped the lease, ``ttl_seconds`` after the last renewal,
    and it has seen none at two looks in a row (``takeover_poll_seconds`` apart).
    A longer TTL rides out longer NATS outages (e.g. a leader election) without a
    takeover; a shorter one takes a dead executor's plans over sooner.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_seconds: int = Field(
        default=8,
        ge=MIN_TTL_SECONDS,
        le=3600,
        description="A plan's lease lapses this long after its last renewal (JetStream "
        "counts a message's TTL in whole seconds).",
    )
    renew_seconds: float = Field(
        default=2.0, gt=0, description="How often the executor running a plan renews its lease."
    )

    @model_validator(mode="after")
    def _renew_in_time(self) -> LeaseConfig:
        if self.renew_seconds > self.ttl_seconds / 2:
            raise ValueError(
                f"lease.renew_seconds ({self.renew_seconds:g}) must be at most half of "
                f"lease.ttl_seconds ({self.ttl_seconds:g}): one slow renewal must not lose it"
            )
        return self

    @property
    def takeover_poll_seconds(self) -> float:
        """How often a replica looks for running plans whose lease lapsed."""
        return self.renew_seconds / 4


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["dry-run", "live"] = Field(
        default="dry-run", description="dry-run reports what each step would do and does nothing."
    )
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
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
    lease: LeaseConfig = Field(default_factory=LeaseConfig)

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry-run"

    @model_validator(mode="after")
    def _check_names(self) -> ExecutorConfig:
        if self.escalate_to is not None:
            target = self.targets.get(self.escalate_to)
            if target is None:
                raise ValueError(f"escalate_to names {self.escalate_to!r}, which is not a target")
            if "alert_human" not in target.actions:
                raise ValueError(
                    f"escalate_to names {self.escalate_to!r}, which cannot alert_human "
                    "(make it a notifier)"
                )
        for action, names in self.safety.allow.items():
            unknown = sorted(set(names) - set(self.targets))
            if unknown:
                raise ValueError(f"safety.allow.{action} names unknown targets: {unknown}")
        self._check_covers()
        return self

    def _check_covers(self) -> None:
        """A name a target covers is no target's own name, and picks one target per action."""
        covered: dict[str, list[str]] = {}
        for name, target in sorted(self.targets.items()):
            for cover in target.covers:
                if cover == name:
                    raise ValueError(f"targets.{name}.covers lists its own name")
                if cover in self.targets:
                    raise ValueError(
                        f"targets.{name}.covers lists {cover!r}, which is another target's name"
                    )
                covered.setdefault(cover, []).append(name)
        for cover, names in covered.items():
            for action in ACTIONS:
                both = [n for n in names if self.safety.allows(action, n)]
                if len(both) > 1:
                    raise ValueError(
                        f"targets {', '.join(both)} all cover {cover!r} and may all {action}: "
                        "an issue naming it would not say which; cover it from one of them"
                    )


def load_config(path: Path | None) -> ExecutorConfig:
    return load_yaml_config(path, ExecutorConfig, what="executor")
