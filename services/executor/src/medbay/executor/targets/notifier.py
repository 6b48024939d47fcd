"""Telling a person: alert_human through the approver's Telegram bot, the log, a webhook
or a command."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import AnyHttpUrl, Field, model_validator

from medbay.common.events import ActionName
from medbay.executor.targets.base import (
    CommandEnv,
    StepOutcome,
    Target,
    missing_program,
    run_command,
    safe_url,
    shown,
)

log = logging.getLogger("medbay.executor.alerts")

DEFAULT_MESSAGE = "Medbay needs a person to look at this host (the step gave no details)."


TELEGRAM = "the approver's Telegram bot"


class NotifierTarget(Target):
    """alert_human: the message (param ``message``) goes to people, ``via``:

    - ``telegram``: handed to the approver's Telegram bot, which delivers it where
      people already decide on plans: the executor publishes it as an
      ``AlertRaised`` event (this target only says so, in ``StepOutcome.alert``);
    - ``log``: the executor's log, at WARNING;
    - ``webhook``: POSTs ``{"text": message, "source": "medbay"}`` (the shape chat
      webhooks take) to ``url``;
    - ``command``: runs ``command`` with the message on stdin, in a minimal
      environment (see ``command_env``) plus ``env``.
    """

    kind: Literal["notifier"]
    via: Literal["telegram", "log", "webhook", "command"] = "log"
    url: AnyHttpUrl | None = Field(default=None, description="Webhook URL (via: webhook).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra webhook headers, e.g. Authorization."
    )
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, description="argv to run with the message on stdin."
    )
    env: CommandEnv = Field(default_factory=dict)
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="For the webhook request or the command."
    )

    supports: ClassVar[frozenset[ActionName]] = frozenset({"alert_human"})
    system_errors: ClassVar[tuple[type[Exception], ...]] = (OSError, httpx.HTTPError)

    @model_validator(mode="after")
    def _complete(self) -> NotifierTarget:
        if self.via == "webhook" and self.url is None:
            raise ValueError("via webhook needs url")
        if self.via == "command" and self.command is None:
            raise ValueError("via command needs command")
        if self.url is not None and self.via != "webhook":
            raise ValueError(f"url is only for via: webhook (via is {self.via})")
        if self.command is not None and self.via != "command":
            raise ValueError(f"command is only for via: command (via is {self.via})")
        if self.env and self.via != "command":
            raise ValueError(f"env is only for via: command (via is {self.via})")
        if self.headers and self.via != "webhook":
            raise ValueError(f"headers are only for via: webhook (via is {self.via})")
        return self

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        message: str = params.get("message", DEFAULT_MESSAGE)
        if self.via == "telegram":
            if dry_run:
                return StepOutcome(True, f"would hand the alert to {TELEGRAM}: {message}")
            return StepOutcome(True, f"handed the alert to {TELEGRAM}: {message}", alert=message)
        if self.via == "webhook":
            assert self.url is not None
            return await self._post(str(self.url), message, dry_run)
        if self.via == "command":
            assert self.command is not None
            return await self._command(self.command, message, dry_run)
        if dry_run:
            return StepOutcome(True, f"would log the alert: {message}")
        log.warning("%s", message)
        return StepOutcome(True, f"logged the alert: {message}")

    async def _post(self, url: str, message: str, dry_run: bool) -> StepOutcome:
        if dry_run:
            return StepOutcome(True, f"would POST the alert to {safe_url(url)}: {message}")
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            response = await client.post(
                url, json={"text": message, "source": "medbay"}, headers=self.headers
            )
        ok = response.is_success
        verb = "posted the alert to" if ok else "the webhook refused the alert:"
        return StepOutcome(ok, f"{verb} {safe_url(url)} (HTTP {response.status_code}): {message}")

    async def _command(self, argv: list[str], message: str, dry_run: bool) -> StepOutcome:
        problem = missing_program(argv, env=self.env)
        if problem is not None:
            return StepOutcome(False, f"cannot run {shown(argv)}: {problem}")
        if dry_run:
            return StepOutcome(True, f"would run {shown(argv)} with the alert on stdin: {message}")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                result = await run_command(argv, stdin=message.encode(), env=self.env)
        except TimeoutError:
            took = f"{shown(argv)} did not finish within {self.timeout_seconds:g} s"
            return StepOutcome(False, f"{took}\nalert: {message}")
        return StepOutcome(result.returncode == 0, f"{result.describe(argv)}\nalert: {message}")
