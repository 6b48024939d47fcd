"""Targets that act by running a program: systemd units, and configured commands."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field

from medbay.common.events import ActionName
from medbay.executor.targets.base import (
    ActionRefused,
    CommandEnv,
    StepOutcome,
    Target,
    missing_program,
    run_command,
    shown,
)

NonEmpty = Annotated[str, Field(min_length=1)]
Argv = Annotated[list[NonEmpty], Field(min_length=1)]
UnitName = Annotated[str, Field(max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]*$")]


class SystemdTarget(Target):
    """A systemd unit: restart_service runs ``systemctl restart UNIT``.

    systemctl runs with a minimal environment (see ``command_env``) plus ``env``.
    """

    kind: Literal["systemd"]
    unit: UnitName = Field(description="Unit name, e.g. nginx.service.")
    env: CommandEnv = Field(default_factory=dict)

    supports: ClassVar[frozenset[ActionName]] = frozenset({"restart_service"})

    def derived_covers(self) -> list[str]:
        """The unit, and a service unit without its suffix (``nginx.service``: ``nginx``)."""
        stem = self.unit.removesuffix(".service")
        return [self.unit] if stem == self.unit or not stem else [self.unit, stem]

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        restart = ["systemctl", "restart", self.unit]
        if missing_program(restart, env=self.env):
            return StepOutcome(False, f"systemctl is not found on PATH: cannot restart {self.unit}")
        is_active = ["systemctl", "is-active", self.unit]
        if dry_run:
            state = await run_command(is_active, env=self.env)
            now = state.output.strip() or f"exit status {state.returncode}"
            return StepOutcome(True, f"would run: {shown(restart)} (is-active now: {now})")
        result = await run_command(restart, env=self.env)
        text = result.describe(restart)
        if result.returncode == 0:
            state = await run_command(is_active, env=self.env)
            text += f"\n{self.unit} is {state.output.strip() or 'in an unknown state'}"
        return StepOutcome(result.returncode == 0, text)


def params_env(action: ActionName, params: Mapping[str, Any]) -> dict[str, str]:
    """A step's action and params as environment variables, e.g. MEDBAY_PARAM_REPLICAS=2."""
    env: dict[str, str] = {"MEDBAY_ACTION": action}
    env.update({f"MEDBAY_PARAM_{name.upper()}": str(value) for name, value in params.items()})
    return env


class CommandTarget(Target):
    """Runs the argv configured for an action (no shell); a non-zero exit is a failure.

    The command runs with a minimal environment (see ``command_env``) plus
    ``env``, the action in ``MEDBAY_ACTION`` and each param in
    ``MEDBAY_PARAM_<NAME>`` (e.g. ``MEDBAY_PARAM_REPLICAS``), never in its argv.
    """

    kind: Literal["command"]
    commands: dict[ActionName, Argv] = Field(
        min_length=1, description="action -> argv, e.g. {reboot: [systemctl, reboot]}."
    )
    cwd: Path | None = None
    env: CommandEnv = Field(default_factory=dict)

    supports: ClassVar[frozenset[ActionName]] = frozenset(get_args(ActionName))
    """Any action can be given a command; a step whose action has none is refused."""

    @property
    def actions(self) -> frozenset[ActionName]:
        return frozenset(self.commands)

    def check(self, action: ActionName, params: Mapping[str, Any]) -> dict[str, Any]:
        checked = super().check(action, params)
        if action not in self.commands:
            raise ActionRefused(
                f"this command target has no command for {action}; "
                f"it has: {', '.join(sorted(self.commands))}"
            )
        return checked

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        argv = self.commands[action]
        env = {**self.env, **params_env(action, params)}
        problem = missing_program(argv, self.cwd, env)
        if problem is not None:
            return StepOutcome(False, f"cannot run {shown(argv)}: {problem}")
        if dry_run:
            where = f" in {self.cwd}" if self.cwd else ""
            given = " ".join(f"{k}={v}" for k, v in sorted(params_env(action, params).items()))
            return StepOutcome(True, f"would run: {shown(argv)}{where} with {given}")
        result = await run_command(argv, cwd=self.cwd, env=env)
        return StepOutcome(result.returncode == 0, result.describe(argv))
