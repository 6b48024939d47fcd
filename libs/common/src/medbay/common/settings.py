"""Settings every service reads from the environment (``MEDBAY_*``).

Service-specific configuration (checks, thresholds, ...) lives in each service's
own config file; only what all services share is here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HTTP_PORTS = {
    "collector": 9471,
    "detector": 9472,
    "planner": 9473,
    "approver": 9474,
    "executor": 9475,
    "gateway": 8470,
}


class BusSettings(BaseSettings):
    """How a service reaches NATS and exposes itself."""

    model_config = SettingsConfigDict(env_prefix="MEDBAY_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server URL (comma-separated for many)."
    )
    http_host: str = Field(default="127.0.0.1", description="Bind address for /metrics, /healthz.")
    http_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port for /metrics, /healthz (0: any free)."
    )
    max_event_bytes: int = Field(
        default=512 * 1024, gt=0, description="Larger messages are dead-lettered unread."
    )
    publish_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a PubAck.")
    log_level: str = Field(default="INFO")
    log_format: str = Field(default="json", pattern="^(json|text)$")

    def port_for(self, service: str) -> int:
        if self.http_port is not None:
            return self.http_port
        return DEFAULT_HTTP_PORTS.get(service, 0)
