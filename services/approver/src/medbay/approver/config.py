"""The approver's configuration: the Telegram bot, who may decide, and the expiry.

A YAML file named by ``MEDBAY_APPROVER_CONFIG`` (or ``--config``). The two secrets
may come from the environment instead (and then win over the file):
``MEDBAY_TELEGRAM_TOKEN`` for ``token`` and ``MEDBAY_APPROVER_SECRET`` for ``secret``.
Without a token Telegram is off: plans are still tracked and expire, and people
decide through the gateway or ``medbay approve``.

.. code-block:: yaml

    token: "123456:ABC..."             # or MEDBAY_TELEGRAM_TOKEN
    api_base: https://api.telegram.org  # a Bot API server; this one is the default
    chat_ids: [-1001234567890]          # where plans are sent
    allowed_user_ids: [11111111, 22222222]  # who may decide and use /pending, /status
    secret: "at least 16 random characters"  # or MEDBAY_APPROVER_SECRET; signs buttons
    expiry_minutes: 15                  # undecided plans are rejected after this
    active_lease_seconds: 6             # one replica acts; a standby takes over after this
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from medbay.common.settings import ConfigError, load_yaml_config

__all__ = ["ApproverConfig", "ConfigError", "load_config"]

TOKEN_ENV = "MEDBAY_TELEGRAM_TOKEN"
SECRET_ENV = "MEDBAY_APPROVER_SECRET"
MIN_SECRET_CHARS = 16
_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")


class ApproverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr | None = Field(default=None, description="Telegram bot token; None: off.")
    api_base: str = Field(
        default="https://api.telegram.org", description="Base URL of the Bot API server."
    )
    chat_ids: list[int] = Field(default_factory=list, description="Chats plans are sent to.")
    allowed_user_ids: list[int] = Field(
        default_factory=list, description="Telegram users who may decide and use commands."
    )
    secret: SecretStr | None = Field(default=None, description="Key that signs the buttons.")
    expiry_minutes: float = Field(
        default=15.0, gt=0, le=7 * 24 * 60, description="Undecided plans are rejected after this."
    )
    active_lease_seconds: float = Field(
        default=6.0,
        ge=2,
        le=60,
        description="Of several replicas one acts (and polls Telegram), holding a lease (key "
        "`active` of the bucket medbay_approver) it renews every third of this; the others "
        "stand by, and one takes over at most this long (plus a second) after it dies.",
    )

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def telegram_on(self) -> bool:
        return self.token is not None

    @property
    def expiry(self) -> timedelta:
        return timedelta(minutes=self.expiry_minutes)


def load_config(path: Path | None, environ: Mapping[str, str]) -> ApproverConfig:
    """The file's settings, with the secrets from ``environ`` when set there."""
    config = load_yaml_config(path, ApproverConfig, what="approver")
    overrides = {
        field: SecretStr(value)
        for field, name in (("token", TOKEN_ENV), ("secret", SECRET_ENV))
        if (value := environ.get(name, "").strip())
    }
    config = config.model_copy(update=overrides)
    where = f"approver config {path}" if path is not None else "approver config"
    problem = _problem(config)
    if problem is not None:
        raise ConfigError(f"invalid {where}:\n  {problem}")
    return config


def _problem(config: ApproverConfig) -> str | None:
    """What is wrong across fields (checked after the environment is applied), naming the field."""
    if config.secret is not None and len(config.secret.get_secret_value()) < MIN_SECRET_CHARS:
        return f"secret: must be at least {MIN_SECRET_CHARS} characters"
    if config.token is None:
        return None
    if not _TOKEN.fullmatch(config.token.get_secret_value()):
        return "token: not a Telegram bot token (expected <digits>:<letters>)"
    if config.secret is None:
        return f"secret: required when a Telegram token is set (or set {SECRET_ENV})"
    if not config.chat_ids:
        return "chat_ids: required when a Telegram token is set (where should plans go?)"
    if not config.allowed_user_ids:
        return "allowed_user_ids: required when a Telegram token is set (nobody could decide)"
    return None
