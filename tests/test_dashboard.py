"""The dashboard in a real headless Chromium against a running Medbay: every
service as a process on a real nats-server, the gateway serving the built
dashboard. The browser script (services/gateway/dashboard/e2e/run.mjs) checks
load time and bundle size, a live metric update, an approval clicked through
the UI, the polling fallback, a viewer's read-only view and an axe-core scan of
every page in both themes; here we also check that the executor acted on the
plan approved in the browser. NATS runs secured, a user per service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest

from medbay.common.events import ActionResult

if TYPE_CHECKING:
    from conftest import NatsServer

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "services/gateway/dashboard"
STATIC = REPO / "services/gateway/src/medbay/gateway/static"
OPERATOR = "operator-token-for-the-browser"
VIEWER = "viewer-token-for-the-browser"


def check_prerequisites() -> None:
    missing = [
        what
        for what, ok in (
            ("Chromium (/usr/bin/chromium)", Path("/usr/bin/chromium").exists()),
            ("the dashboard's npm packages", (DASHBOARD / "node_modules").is_dir()),
            ("the built dashboard", (STATIC / "index.html").exists()),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make test` sets them up")


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


@pytest.mark.timeout(420)
async def test_dashboard_in_a_real_browser(nats_server, services, tmp_path: Path):
    check_prerequisites()
    (tmp_path / "collector.yaml").write_text("interval_seconds: 1\ntop_processes: 0\n")
    (tmp_path / "executor.yaml").write_text(
        "escalate_to: oncall\n"
        "targets:\n"
        "  demo-web: {kind: process_name, names: [medbay-e2e-none]}\n"
        "  oncall: {kind: notifier, via: log}\n"
        "safety:\n"
        "  allow: {kill_process: [demo-web], alert_human: [oncall]}\n"
    )
    services("collector", "--config", str(tmp_path / "collector.yaml"))
    services("detector")
    planner = services("planner", wait_healthy=False)
    executor = services("executor", "--config", str(tmp_path / "executor.yaml"), wait_healthy=False)
    planner.wait_healthy()
    executor.wait_healthy()
    services("approver")
    (tmp_path / "gateway.yaml").write_text(
        "tokens:\n"
        f"  - {{name: ops-alice, token: {OPERATOR}, role: operator}}\n"
        f"  - {{name: wallboard, token: {VIEWER}, role: viewer}}\n"
        f"health: {{urls: {{executor: 'http://127.0.0.1:{executor.port}/healthz'}}}}\n"
    )
    gateway = services("gateway", "--config", str(tmp_path / "gateway.yaml"))

    env = {
        **os.environ,
        "MEDBAY_GATEWAY_URL": f"http://127.0.0.1:{gateway.port}/",
        "MEDBAY_OPERATOR_TOKEN": OPERATOR,
        "MEDBAY_VIEWER_TOKEN": VIEWER,
        "MEDBAY_SCREENSHOTS_DIR": str(tmp_path / "screenshots"),
        "CHROMIUM": "/usr/bin/chromium",
    }
    started = time.monotonic()
    run = await asyncio.to_thread(
        subprocess.run,
        ["node", "e2e/run.mjs"],
        cwd=DASHBOARD,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    print(run.stdout[-4000:], run.stderr[-2000:], sep="\n")
    print(f"browser checks took {time.monotonic() - started:.0f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    checks = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    mode = next(c for c in checks if c.get("check") == "executor-mode")
    assert mode["mode"] == "dry-run" and mode["banner"], mode  # the banner says so
    approved = next(c for c in checks if c.get("check") == "approve")
    plan_id = approved["plan_id"]

    # the executor acted on the plan approved in the browser
    nc = await nats.connect(nats_server.url, **nats_server.client("cli"))
    try:
        sub = await nc.jetstream().pull_subscribe("medbay.results.>", stream="RESULTS")
        results: list[ActionResult] = []
        deadline = time.monotonic() + 30
        while not any(r.plan_id == plan_id and r.status == "finished" for r in results):
            assert time.monotonic() < deadline, f"no result for plan {plan_id}: {results}"
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:  # nats-py raises its own or the built-in one
                continue
            results += [ActionResult.model_validate_json(m.data) for m in msgs]
        finished = next(r for r in results if r.plan_id == plan_id and r.status == "finished")
        assert finished.action == "kill_process" and finished.target == "demo-web"
        assert finished.dry_run and finished.outcome == "dry_run", finished.output
        assert nats_server.violations() == []
    finally:
        await nc.close()
