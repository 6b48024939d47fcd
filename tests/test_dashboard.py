"""The dashboard in a real headless Chromium against a running Medbay: every
service as a process on a real nats-server, the gateway serving the built
dashboard. The browser script (services/gateway/dashboard/e2e/run.mjs) checks
load time and bundle size, a live metric update, an approval clicked through
the UI, how the approved plan ended as its incident shows it, the lab's report
on the Automation page, the Monitoring page drawing the spans the browser script
sends to the collector's OTLP/HTTP receiver, the trace search, trace links only
when a Jaeger UI is configured, the polling fallback, a viewer's read-only view and
an axe-core scan of every page in both themes; here we also check that the executor
acted on the plan approved in the browser. NATS runs secured, a user per service."""

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
from tests.helpers import free_port

if TYPE_CHECKING:
    from conftest import NatsServer

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "services/gateway/dashboard"
STATIC = REPO / "services/gateway/src/medbay/gateway/static"
OPERATOR = "operator-token-for-the-browser"
VIEWER = "viewer-token-for-the-browser"


def lab_report() -> dict[str, object]:
    """A report as `medbay lab --train` writes it: two faults, one escalated as it should
    be; the model trained, and the rule table's run on the same faults beside it."""
    fault = {
        "expected": "auto_resolved",
        "injected": 3,
        "detected": 3,
        "auto_resolved": 3,
        "escalated": 0,
        "silent": 0,
        "needless_actions": 0,
        "outside_policy": 0,
        "mttr_median_s": 9.1,
        "mttr_p90_s": 12.0,
    }
    escalated = {**fault, "expected": "escalated", "auto_resolved": 0, "escalated": 3}
    escalated["mttr_median_s"] = None
    plain_totals = {
        **fault,
        "injected": 6,
        "detected": 6,
        "escalated": 3,
        "mttr_median_s": 9.1,
        "mttr_p90_s": 12.0,
        "quiet_issues": 0,
        "quiet_plans": 0,
        "quiet_actions": 0,
    }
    run = {
        "schema": "medbay.lab/1",
        "started_at": "2026-11-29T10:00:00Z",
        "finished_at": "2026-11-29T10:40:00Z",
        "commit": "41d8f32",
        "seed": 7,
        "rounds": 3,
        "quiet_seconds": 120.0,
        "planner": "rules-v1",
        "lab_trained": False,
        "totals": plain_totals,
        "faults": {"service_killed": fault, "disk_filled": escalated},
    }
    totals = {**plain_totals, "as_expected": 6, "steps": 3, "fixable": 3}
    totals["fixable_auto_resolved"] = 3
    model = {
        "file": "/data/lab/model.zip",
        "version": "rf-20261129-12",
        "trained_on": "lab",
        "validation_accuracy": 0.8,
        "trained_outcomes": 12,
        "success": 10,
        "failure": 2,
        "corpus": {"file": "/data/lab/outcomes.json", "outcomes": 12},
    }
    training = {"seed": 1007, "rounds": 2, "planner": "rules-v1", "totals": totals}
    faults = {"service_killed": {**fault, "steps": 3}, "disk_filled": {**escalated, "steps": 0}}
    return {
        **run,
        "faults": faults,
        "planner": "rf-20261129-12, rules-v1",
        "lab_trained": True,
        "totals": totals,
        "model": model,
        "training": training,
        "rule_table": {**run, "totals": {**totals, "steps": 5}},
    }


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
    otlp_port = free_port()
    (tmp_path / "collector.yaml").write_text(
        f"interval_seconds: 1\ntop_processes: 0\notlp: {{port: {otlp_port}}}\n"
    )
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
    lab = tmp_path / "lab" / "latest.json"
    lab.parent.mkdir()
    lab.write_text(json.dumps(lab_report()))
    (tmp_path / "gateway.yaml").write_text(
        "tokens:\n"
        f"  - {{name: ops-alice, token: {OPERATOR}, role: operator}}\n"
        f"  - {{name: wallboard, token: {VIEWER}, role: viewer}}\n"
        f"health: {{urls: {{executor: 'http://127.0.0.1:{executor.port}/healthz'}}}}\n"
        f"lab_report: {lab}\n"
    )
    gateway = services("gateway", "--config", str(tmp_path / "gateway.yaml"))

    env = {
        **os.environ,
        "MEDBAY_GATEWAY_URL": f"http://127.0.0.1:{gateway.port}/",
        "MEDBAY_OPERATOR_TOKEN": OPERATOR,
        "MEDBAY_VIEWER_TOKEN": VIEWER,
        "MEDBAY_SCREENSHOTS_DIR": str(tmp_path / "screenshots"),
        "MEDBAY_E2E_OTLP_URL": f"http://127.0.0.1:{otlp_port}/v1/traces",
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
    ended = next(c for c in checks if c.get("check") == "honest-outcome")
    # a dry-run executor changes nothing, and the incident says so
    assert ended["outcome"] == "dry_run" and ended["shown"] == "Dry run, nothing done", ended
    shown = next(c for c in checks if c.get("check") == "lab")
    assert (shown["state"], shown["faults"], shown["compared"]) == ("ok", 2, 8), shown
    monitoring = next(c for c in checks if c.get("check") == "monitoring")
    assert sorted(monitoring["services"]) == ["checkout", "frontend", "payments"], monitoring

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
