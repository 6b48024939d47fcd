"""The app without NATS: the dashboard's files or a pointer to the docs at ``/``,
the docs served without a CDN, and ``/api`` refusing politely until the history is
read."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from medbay.gateway.api import build_app
from medbay.gateway.config import GatewayConfig, TokenConfig
from medbay.gateway.service import GatewayService

TOKEN = "v" * 20


def client(static_dir: Path | None = None) -> httpx.AsyncClient:
    config = GatewayConfig(
        tokens=[TokenConfig(name="victor", token=SecretStr(TOKEN), role="viewer")],
        static_dir=static_dir,
    )
    registry = CollectorRegistry()
    service = GatewayService(config, registry=registry, max_event_bytes=1024)
    starting: tuple[bool, dict[str, object]] = (
        False,
        {"service": "gateway", "status": "unhealthy", "problems": {}},
    )
    app = build_app(service, registry=registry, own_health=lambda: starting, static_dir=static_dir)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost:8470"
    )


async def test_root_points_at_the_docs_without_a_dashboard(monkeypatch, tmp_path):
    monkeypatch.setattr("medbay.gateway.api.PACKAGE_STATIC", tmp_path / "no-dashboard")
    async with client() as http:
        assert (await http.get("/")).json()["docs"] == "/docs"
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "Medbay gateway"
        assert (await http.get("/healthz")).status_code == 503
        starting = await http.get("/api/incidents", headers={"Authorization": f"Bearer {TOKEN}"})
        assert starting.status_code == 503 and starting.headers["retry-after"] == "1"
        assert "waiting for the streams" in starting.json()["detail"]
        assert (await http.get("/api/incidents")).status_code == 401
        assert "medbay_gateway_incidents 0.0" in (await http.get("/metrics")).text


async def test_root_serves_the_dashboard_when_there_is_one(tmp_path):
    (tmp_path / "index.html").write_text("<h1>Medbay</h1>")
    async with client(tmp_path) as http:
        assert (await http.get("/")).text == "<h1>Medbay</h1>"
        assert (await http.get("/docs")).status_code == 200
        assert (await http.get("/api/me")).status_code == 401


async def test_the_docs_need_nothing_from_the_internet():
    async with client() as http:
        html = (await http.get("/docs")).text
        assert "://" not in html  # no CDN: every URL is the gateway's
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(assets) == 3, html  # script, style sheet, icon
        for asset in [*assets, *re.findall(r"url: '([^']+)'", html)]:
            answer = await http.get(asset)
            assert answer.status_code == 200 and answer.content, asset
        assert (await http.get("/redoc")).status_code == 404  # it would fetch its logo
