"""The health of every Medbay service, from each one's ``/healthz``, with the facts
each states there (``info``: e.g. the executor's ``mode``, "dry-run" or "live").

Polled on demand, all at once, and remembered for ``cache_seconds`` so that many
dashboards polling the gateway do not multiply the load on the services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from medbay.common.settings import DEFAULT_HTTP_PORTS
from medbay.gateway.config import HealthConfig
from medbay.gateway.schemas import ServiceHealth

OwnHealth = Callable[[], tuple[bool, dict[str, object]]]


def _info(body: dict[str, Any] | None) -> dict[str, Any]:
    """The facts a ``/healthz`` body states (``info``), if it is a JSON object."""
    info = None if body is None else body.get("info")
    return info if isinstance(info, dict) else {}


class HealthBoard:
    def __init__(
        self,
        config: HealthConfig,
        *,
        own_url: str,
        own_health: OwnHealth,
        client: httpx.AsyncClient,
    ) -> None:
        self.config = config
        self.own_url = own_url
        self.own_health = own_health
        self.client = client
        self._cached: list[ServiceHealth] = []
        self._cached_at = float("-inf")
        self._lock = asyncio.Lock()

    def url_for(self, service: str) -> str:
        if service in self.config.urls:
            return self.config.urls[service]
        port = self.config.ports.get(service, DEFAULT_HTTP_PORTS[service])
        return f"http://{self.config.host}:{port}/healthz"

    async def services(self) -> list[ServiceHealth]:
        """Every service's health, the gateway's own included, in a fixed order."""
        async with self._lock:  # one poll at a time; the others wait and share it
            if time.monotonic() - self._cached_at >= self.config.cache_seconds:
                names = [n for n in DEFAULT_HTTP_PORTS if n != "gateway"]
                polled = await asyncio.gather(*(self._poll(n) for n in names))
                self._cached, self._cached_at = list(polled), time.monotonic()
        ok, body = self.own_health()
        own = ServiceHealth(
            service="gateway",
            url=self.own_url,
            status="ok" if ok else "unhealthy",
            http_status=200 if ok else 503,
            latency_ms=0.0,
            detail=body,
            info=_info(body),
            error=None,
        )
        return [*self._cached, own]

    async def _poll(self, service: str) -> ServiceHealth:
        url = self.url_for(service)
        started = time.perf_counter()
        try:
            response = await self.client.get(url, timeout=self.config.timeout_seconds)
        except httpx.HTTPError as exc:
            return ServiceHealth(
                service=service,
                url=url,
                status="unreachable",
                http_status=None,
                latency_ms=None,
                detail=None,
                info={},
                error=f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__,
            )
        latency = round((time.perf_counter() - started) * 1000, 2)
        detail: dict[str, Any] | None
        try:
            parsed = response.json()
            detail = parsed if isinstance(parsed, dict) else None
        except ValueError:
            detail = None
        return ServiceHealth(
            service=service,
            url=url,
            status="ok" if response.status_code == 200 else "unhealthy",
            http_status=response.status_code,
            latency_ms=latency,
            detail=detail,
            info=_info(detail),
            error=None if response.status_code == 200 else f"HTTP {response.status_code}",
        )
