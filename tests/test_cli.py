"""The medbay command against real processes and a real nats-server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from prometheus_client import CollectorRegistry

from medbay.cli.schema import asyncapi_document, event_schemas
from medbay.cli.services import SERVICES
from medbay.common.bus import declare_streams, make_broker, publish_event
from medbay.common.events import (
    ALL_EVENTS,
    ActionRequested,
    ActionResult,
    AlertRaised,
    Approval,
    BreakerReset,
    IssueOpened,
    MetricBatch,
    MetricSample,
    Plan,
    PlanFinished,
    PlanStep,
    Risk,
    Severity,
)
from medbay.common.streams import CHANNELS, METRICS
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def medbay(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    cwd: Path | None = None,
    clear_medbay: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``clear_medbay``: with no MEDBAY_* from this process's environment."""
    import os

    inherited = {k: v for k, v in os.environ.items() if not (clear_medbay and "MEDBAY_" in k)}
    return subprocess.run(
        [sys.executable, "-m", "medbay.cli.main", *args],
        env={**inherited, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("option", ["--port", "--gateway-port"])
def test_up_refuses_a_taken_port_and_says_what_to_do(tmp_path: Path, option: str):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        any_free = {"--port": str(free_port()), "--service-ports": "0", "--gateway-port": "0"}
        ports = {**any_free, option: str(port)}  # only the one under test is taken
        out = medbay(
            "up",
            *(word for pair in ports.items() for word in pair),
            "--data-dir",
            str(tmp_path),
            "--no-demo",
            env={"MEDBAY_NATS_URL": ""},
        )
    assert out.returncode == 1, out.stdout + out.stderr
    if option == "--port":
        assert f"127.0.0.1:{port} is already in use" in out.stderr
        assert f"MEDBAY_NATS_URL=nats://127.0.0.1:{port} medbay up" in out.stderr
        assert f"medbay up --port {port + 1}" in out.stderr
    else:
        assert f"ports {port} (gateway) are already in use" in out.stderr
        assert "--service-ports 0 --gateway-port 0 --demo-port 0" in out.stderr
    assert not (tmp_path / "up.json").exists()


def test_up_runs_everything_and_ctrl_c_stops_it(tmp_path: Path):
    import json
    import os

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBAY_")}
    any_free = ["--service-ports", "0", "--gateway-port", "0", "--demo-port", "0"]
    any_free += ["--otlp-port", str(free_port())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "medbay.cli.main", "up", "--port", str(port), *any_free],
        env=env,
        cwd=tmp_path,  # state in ./.medbay, where `medbay status` looks
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    up_file = tmp_path / ".medbay" / "up.json"  # what the other commands read
    ports: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 180  # seven processes starting on a busy machine
        status = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"medbay up exited: {proc.communicate()[0][-3000:]}")
            checked = medbay("status", cwd=tmp_path, clear_medbay=True)
            status = checked.stdout or checked.stderr
            if all(f"{name:<12}ok" in status for name in SERVICES):
                metrics_line = next(x for x in status.splitlines() if x.startswith("METRICS"))
                stored = metrics_line.split()[2]  # "not" (declared yet) before the collector
                if stored.isdigit() and int(stored) >= 2:
                    break
            time.sleep(1)
        assert all(f"{name:<12}ok" in status for name in SERVICES), status
        assert "METRICS/detector" in status and "PLANS/executor" in status
        assert f"from {Path('.medbay') / 'up.json'}" in status
        tail = medbay(
            "events",
            "tail",
            "METRICS",
            "--since",
            "5m",
            "--no-follow",
            cwd=tmp_path,
            clear_medbay=True,
        )
        assert "metric.batch" in tail.stdout and "trace=" in tail.stdout
        assert up_file.stat().st_mode & 0o777 == 0o600
        written = json.loads(up_file.read_text())
        ports = written.pop("http_ports")
        assert written == {
            "nats_url": f"nats://127.0.0.1:{port}",
            "credentials": str(tmp_path / ".medbay" / "nats"),
            "gateway_url": f"http://127.0.0.1:{ports['gateway']}",
            "pid": proc.pid,
        }
        assert sorted(ports) == sorted(SERVICES) and len(set(ports.values())) == len(SERVICES)
        assert 8470 not in ports.values()  # any free port, not the default
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"Dashboard (read-only login): http://127.0.0.1:{ports['gateway']}/#token=" in output
    assert not up_file.exists()
    assert f"NATS: nats://127.0.0.1:{port}" in output and "up.json" in output
    assert "bin/medbay status" in output and "bin/activate" in output
    for name in ("nats", "demo-web", *SERVICES):
        assert f"{name:>10} | " in output
    assert "Medbay stopped." in output
    with socket.socket() as s:  # the embedded server is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert (tmp_path / ".medbay" / "jetstream").is_dir()


async def test_replay_prints_and_republishes_under_a_prefix(nats_server):
    broker = make_broker("collector", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [METRICS])
    sent = []
    for host in ("a", "b", "a"):
        batch = MetricBatch(
            host=host,
            collected_at=datetime.now(UTC),
            samples=[MetricSample(name="cpu_percent", value=1.0)],
        )
        await publish_event(broker, batch, stream=METRICS)
        sent.append(batch)
    await broker.stop()
    env = {"MEDBAY_NATS_URL": nats_server.url}

    printed = medbay("replay", "--stream", "METRICS", "--since", "10m", "--print", env=env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.count("metric.batch") == 3

    nc = await nats.connect(nats_server.url)
    sub = await nc.subscribe("sandbox.>")
    await nc.flush()
    out = medbay(
        "replay",
        "--stream",
        "METRICS",
        "--since",
        "10m",
        "--subject",
        "medbay.metrics.a",
        "--to",
        "sandbox",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "2 events re-published under sandbox." in out.stdout
    got = [await sub.next_msg(timeout=5) for _ in range(2)]
    assert [m.subject for m in got] == ["sandbox.medbay.metrics.a"] * 2
    assert [MetricBatch.model_validate_json(m.data) for m in got] == [sent[0], sent[2]]
    await nc.close()

    refused = medbay("replay", "--stream", "METRICS", "--since", "10m", "--to", "medbay", env=env)
    assert refused.returncode != 0 and "not 'medbay'" in refused.stderr
    bad_time = medbay("replay", "--stream", "METRICS", "--since", "yesterday", "--print", env=env)
    assert bad_time.returncode != 0 and "is not a time" in bad_time.stderr


def test_cli_says_clearly_when_nats_is_not_there():
    out = medbay("status", env={"MEDBAY_NATS_URL": f"nats://127.0.0.1:{free_port()}"})
    assert out.returncode != 0
    assert "cannot reach NATS" in out.stderr and "medbay up" in out.stderr


def test_exported_contracts_are_current(tmp_path: Path):
    """docs/contracts is generated from the code; regenerate with `medbay schema export`."""
    out = medbay("schema", "export", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for path in tmp_path.iterdir():
        committed = REPO / "docs" / "contracts" / path.name
        assert committed.read_text() == path.read_text(), f"{path.name} is stale"
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    assert {
        m["payload"]["$ref"].rsplit("/", 1)[1] for m in doc["components"]["messages"].values()
    } == {e.__name__ for e in ALL_EVENTS}
    assert {c["address"] for c in doc["channels"].values()} >= {p for p, _, _ in CHANNELS}
    assert all("event_id" in s["properties"] for s in event_schemas().values())


@pytest.mark.parametrize("when", ["10m", "2h", "1d", "2026-01-31T12:00:00Z"])
def test_time_arguments(when: str):
    from medbay.cli.eventlog import parse_time

    assert parse_time(when).tzinfo is not None


def test_run_starts_a_service_with_its_own_options(tmp_path: Path):
    bad = tmp_path / "collector.yaml"
    bad.write_text("interval_seconds: -1\n")
    out = medbay("run", "collector", "--config", str(bad))
    assert out.returncode == 2
    assert "interval_seconds" in out.stderr
    unknown = medbay("run", "nothing")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_no_command_prints_a_nats_password_from_the_url():
    url = f"nats://someone:s3cret-pw@127.0.0.1:{free_port()}"
    for args in (("status",), ("plans",), ("breaker", "list")):
        out = medbay(*args, env={"MEDBAY_NATS_URL": url, "MEDBAY_NATS_USER": ""})
        text = out.stdout + out.stderr
        assert out.returncode != 0 and "someone:***@127.0.0.1" in text, text
        assert "s3cret-pw" not in text


def test_the_readme_shows_the_ownership_table_as_generated():
    from medbay.cli.auth import table

    page = REPO / "docs" / "security.md"
    assert table() in page.read_text(), "docs/security.md: paste `medbay auth table`"


def test_up_writes_tokens_and_gateway_config_private_and_no_anonymous_reader(tmp_path: Path):
    from medbay.cli.up import default_gateway_config

    config, viewer, operator_file = default_gateway_config(tmp_path, anonymous_viewer=False)
    for path in (config, operator_file, tmp_path / "gateway-viewer-token"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    text = config.read_text()
    assert "allow_anonymous_viewer: false" in text and viewer in text
    again, viewer_again, _ = default_gateway_config(tmp_path, anonymous_viewer=True)
    assert viewer_again == viewer  # made once
    assert "allow_anonymous_viewer: true" in again.read_text()


# --- which server: .medbay/up.json ----------------------------------------------------


def medbay_here(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`medbay` in ``cwd``, with no MEDBAY_NATS_* from this environment unless given."""
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDBAY_NATS")}
    return subprocess.run(
        [sys.executable, "-m", "medbay.cli.main", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_up_file(where: Path, url: str, credentials: Path, pid: int) -> None:
    import json

    (where / ".medbay").mkdir(parents=True, exist_ok=True)
    (where / ".medbay" / "up.json").write_text(
        json.dumps(
            {
                "nats_url": url,
                "credentials": str(credentials),
                "gateway_url": "http://127.0.0.1:8470",
                "pid": pid,
            }
        )
    )


def test_commands_use_the_server_that_medbay_up_in_this_directory_serves(
    secured_nats, tmp_path: Path
):
    import os

    write_up_file(tmp_path, secured_nats.url, secured_nats.credentials, os.getpid())
    status = medbay_here("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    header = status.stdout.splitlines()[0]
    assert header.startswith(f"NATS {secured_nats.url}  (from .medbay/up.json;"), header

    listed = medbay_here("breaker", "list", cwd=tmp_path)  # as `cli`, from up.json's dir
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "no open breakers\n"
    assert listed.stderr == f"medbay: NATS {secured_nats.url} (from .medbay/up.json)\n"
    quiet = medbay_here("-q", "breaker", "list", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""

    chosen = medbay_here(  # MEDBAY_NATS_URL still wins, and says so
        "breaker", "list", cwd=tmp_path, env={"MEDBAY_NATS_URL": secured_nats.url}
    )
    assert f"NATS {secured_nats.url} (MEDBAY_NATS_URL)" in chosen.stderr


def test_a_stale_up_file_is_ignored_and_said_to_be(tmp_path: Path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_up_file(tmp_path, f"nats://127.0.0.1:{free_port()}", tmp_path, gone.pid)
    out = medbay_here("breaker", "list", cwd=tmp_path, env={"MEDBAY_NATS_URL": ""})
    assert ".medbay/up.json is stale" in out.stderr, out.stderr
    assert "nats://127.0.0.1:4222" in out.stderr


def test_up_file_is_private_and_only_its_writer_removes_it(tmp_path: Path):
    import os

    from medbay.cli import upfile

    info = upfile.UpInfo("nats://127.0.0.1:4310", tmp_path / "nats", "http://x", os.getpid())
    path = upfile.write(tmp_path, info)
    assert path.stat().st_mode & 0o777 == 0o600
    assert upfile.read(path) == info
    upfile.remove(tmp_path, os.getpid() + 1)
    assert path.exists()
    upfile.remove(tmp_path, os.getpid())
    assert not path.exists()


# --- events, one readable line each -------------------------------------------------------


def _remediation_events() -> tuple[Plan, ActionResult, Approval, ActionRequested, BreakerReset]:
    now = datetime.now(UTC)
    plan = Plan(
        plan_id="p-1",
        issue_fingerprint="f" * 16,
        issue_event_id="e-1",
        host="vm",
        issue_kind="service_down",
        metric="service_up",
        value=0.0,
        threshold=0.5,
        severity=Severity.CRITICAL,
        steps=[
            PlanStep(
                action="restart_service", target="demo-web", risk=Risk.LOW, estimated_seconds=5
            ),
            PlanStep(action="alert_human", target="oncall", risk=Risk.LOW, estimated_seconds=1),
        ],
        confidence=0.8,
        risk=Risk.LOW,
        estimated_seconds=6,
        requires_approval=True,
        reason="restarts fixed it before",
        model_version="rules",
    )
    result = ActionResult(
        plan_id="p-1",
        issue_fingerprint="f" * 16,
        issue_kind="service_down",
        step_index=0,
        action="restart_service",
        target="demo-web",
        host="vm",
        status="finished",
        outcome="success",
        output="would restart demo-web\nsecond line",
        verified=True,
        dry_run=True,
        started_at=now,
        finished_at=now,
    )
    approval = Approval(
        plan_id="p-1", decision="approve", decided_by="alice", channel="gateway", reason="ok"
    )
    request = ActionRequested(
        host="vm",
        action="restart_service",
        target="demo-web",
        requested_by="bob",
        channel="cli",
        reason="slow",
    )
    reset = BreakerReset(target="demo-web", reset_by="carol", channel="cli")
    return plan, result, approval, request, reset


async def test_events_tail_gives_each_event_a_readable_line_and_json(nats_server):
    import json

    from medbay.common.streams import ALL_STREAMS, STREAMS_BY_NAME

    broker = make_broker("collector", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, list(ALL_STREAMS))
    events = _remediation_events()
    streams = ("PLANS", "RESULTS", "APPROVALS", "REQUESTS", "AUDIT")
    for event, name in zip(events, streams, strict=True):
        await publish_event(broker, event, stream=STREAMS_BY_NAME[name])
    await broker.stop()
    env = {"MEDBAY_NATS_URL": nats_server.url}

    expected = {
        "PLANS": "plan p-1 for service_down on vm: restart_service demo-web, then alert_human "
        "oncall (confidence 0.80, risk low, needs approval: restarts fixed it before)",
        "RESULTS": "step 1 restart_service demo-web on vm: success, verified (dry-run) "
        "| would restart demo-web",
        "APPROVALS": "approve plan p-1 by alice (gateway): ok",
        "REQUESTS": "request restart_service demo-web on vm by bob (cli): slow",
        "AUDIT": "breaker reset for demo-web by carol (cli)",
    }
    for name, line in expected.items():
        out = medbay("events", "tail", name, "--no-follow", env=env)
        assert out.returncode == 0, out.stderr
        assert line in out.stdout, out.stdout
        assert "trace=" in out.stdout and "second line" not in out.stdout

        raw = medbay("events", "tail", name, "--no-follow", "--json", env=env)
        assert raw.returncode == 0, raw.stderr
        (obj,) = [json.loads(x) for x in raw.stdout.splitlines()]
        assert obj["stream"] == name and obj["seq"] == 1
        assert obj["subject"].startswith("medbay.") and "trace_id" in obj
        assert obj["type"] == events[streams.index(name)].type
        assert "medbay: NATS" in raw.stderr and "medbay" not in raw.stdout.replace('"medbay.', "")

    empty = medbay("events", "tail", "DEADLETTER", "--since", "1h", "--no-follow", env=env)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no events on DEADLETTER since " in empty.stderr


async def test_events_tail_and_replay_show_plan_ends_alerts_and_what_was_wrong(nats_server):
    import json

    from medbay.common.streams import ISSUES, RESULTS

    broker = make_broker("executor", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [ISSUES, RESULTS])
    _, result, *_ = _remediation_events()
    finished = PlanFinished(
        plan_id="p-1",
        issue_fingerprint="f" * 16,
        issue_kind="service_down",
        host="vm",
        outcome="not_fixed",
        detail="demo-web still answers 503\nafter the restart",
        steps_run=1,
        escalated=True,
        dry_run=False,
    )
    alert = AlertRaised(
        alert_id="a-1",
        plan_id="p-1",
        issue_fingerprint="f" * 16,
        issue_kind="service_down",
        host="vm",
        target="oncall",
        message="demo-web is still down after a restart",
    )
    for event in (result, finished, alert):
        await publish_event(broker, event, stream=RESULTS)
    now = datetime.now(UTC)
    opened = IssueOpened(
        fingerprint="f" * 16,
        host="vm",
        kind="service_down",
        resource="demo-web",
        metric="service_up",
        value=0.0,
        threshold=0.5,
        severity=Severity.CRITICAL,
        detector="threshold",
        detail="connection refused",
        first_seen=now,
        last_seen=now,
    )
    await publish_event(broker, opened, stream=ISSUES)
    await broker.stop()
    env = {"MEDBAY_NATS_URL": nats_server.url}

    out = medbay("events", "tail", "RESULTS", "--no-follow", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and "step 1 restart_service demo-web on vm: success" in lines[0]
    assert [line.split(" ")[3] for line in lines] == [
        "medbay.results.vm",
        "medbay.outcomes.vm",
        "medbay.alerts.vm",
    ]
    assert (
        "plan p-1 for service_down on vm ended not_fixed (1 step run, a person alerted): "
        "demo-web still answers 503 trace=" in lines[1]
    )
    assert (
        "alert a-1 to oncall for plan p-1 (service_down on vm): demo-web is still down "
        "after a restart trace=" in lines[2]
    )

    alerts = medbay("events", "tail", "medbay.alerts.>", "--no-follow", "--json", env=env)
    assert alerts.returncode == 0, alerts.stderr
    (obj,) = [json.loads(x) for x in alerts.stdout.splitlines()]
    assert (obj["type"], obj["alert_id"], obj["stream"], obj["seq"]) == (
        "alert.raised",
        "a-1",
        "RESULTS",
        3,
    )

    issues = medbay("events", "tail", "--no-follow", env=env)  # ISSUES by default
    assert issues.returncode == 0, issues.stderr
    assert (
        "issue.opened critical service_down on vm demo-web: service_up=0 (threshold 0.5, "
        "threshold) | connection refused" in issues.stdout
    )

    printed = medbay("replay", "--stream", "RESULTS", "--since", "10m", "--print", env=env)
    assert printed.returncode == 0, printed.stderr
    assert [line.split(" ")[3] for line in printed.stdout.splitlines()[:3]] == [
        "medbay.results.vm",
        "medbay.outcomes.vm",
        "medbay.alerts.vm",
    ]
    assert "3 events printed" in printed.stdout


async def test_plans_say_how_each_plan_ended(nats_server):
    from medbay.common.records import PLAN_BOOK, PlanRecord, plan_key

    plan = _remediation_events()[0]
    nc = await nats.connect(nats_server.url)
    kv = await nc.jetstream().create_key_value(bucket=PLAN_BOOK.name)
    records = {
        "p-wait": PlanRecord(state="pending"),
        "p-run": PlanRecord(state="running", decided_at="2026-01-01T10:00:00+00:00"),
        "p-ok": PlanRecord(
            state="done",
            outcome="verified",
            decided_at="2026-01-01T10:01:00+00:00",
            note="step 1 restart_service demo-web: fixed",
        ),
        "p-no": PlanRecord(
            state="done",
            outcome="not_fixed",
            decided_at="2026-01-01T10:02:00+00:00",
            note="demo-web still answers 503\nafter the restart",
        ),
        "p-late": PlanRecord(
            state="rejected",
            outcome="expired",
            decided_by="expiry",
            decided_at="2026-01-01T10:03:00+00:00",
            note="not decided within 15 minutes",
        ),
    }
    for plan_id, record in records.items():
        record.plan = plan.model_copy(update={"plan_id": plan_id}).model_dump_json()
        await kv.put(plan_key(plan_id), record.model_dump_json().encode())
    await nc.close()
    env = {"MEDBAY_NATS_URL": nats_server.url}

    current = medbay("plans", env=env)
    assert current.returncode == 0, current.stderr
    assert [line.split()[:2] for line in current.stdout.splitlines()] == [
        ["p-wait", "pending"],
        ["p-run", "running"],
    ]

    everything = medbay("plans", "--all", env=env)
    assert everything.returncode == 0, everything.stderr
    lines = everything.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["p-wait", "pending"],
        ["p-run", "running"],
        ["p-ok", "verified"],
        ["p-no", "not_fixed"],
        ["p-late", "expired"],
    ]
    steps = "service_down on vm: restart_service demo-web, then alert_human oncall"
    assert lines[3] == (
        f"p-no  not_fixed    {steps} (confidence 0.80, risk low) | demo-web still answers 503"
    )
    assert lines[4].startswith("p-late  expired     by expiry  service_down on vm: ")
    assert lines[4].endswith(" | not decided within 15 minutes")


# --- approving only what exists ----------------------------------------------------------


async def test_approve_refuses_an_unknown_plan_unless_forced(nats_server):
    from medbay.common.records import PLAN_BOOK
    from medbay.common.streams import APPROVALS, PLANS

    broker = make_broker("planner", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [PLANS, APPROVALS])
    plan = _remediation_events()[0]
    await publish_event(broker, plan, stream=PLANS)
    await broker.stop()
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().create_key_value(bucket=PLAN_BOOK.name)
    env = {"MEDBAY_NATS_URL": nats_server.url}

    unknown = medbay("approve", "nonexistent-plan", env=env)
    assert unknown.returncode == 1
    assert "no plan 'nonexistent-plan'" in unknown.stderr and "--force" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    forced = medbay("approve", "still-coming", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "approved plan still-coming" in forced.stdout

    seen = medbay("reject", "p-1", "--reason", "not now", env=env)  # on PLANS, not in the book
    assert seen.returncode == 0, seen.stderr
    assert "rejected plan p-1" in seen.stdout
    info = await nc.jetstream().stream_info(APPROVALS.name)
    assert info.state.messages == 2
    await nc.close()


# --- no tracebacks ------------------------------------------------------------------------


async def test_a_reader_that_goes_away_ends_the_command_quietly(nats_server):
    import os

    from medbay.common.streams import METRICS

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(METRICS.declaration())
    now = datetime.now(UTC)
    for i in range(3000):  # far more than a pipe holds
        batch = MetricBatch(host=f"h{i % 7}", collected_at=now, samples=[])
        await js.publish(f"medbay.metrics.{batch.host}", batch.model_dump_json().encode())
    await nc.close()
    env = {**os.environ, "MEDBAY_NATS_URL": nats_server.url}
    command = f"{sys.executable} -m medbay.cli.main"
    for args in ("events tail METRICS --since 1h", "replay --stream METRICS --since 1h --print"):
        out = subprocess.run(
            ["bash", "-c", f"{command} {args} | head -2; echo status=${{PIPESTATUS[0]}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.count("metric.batch") == 2, out.stdout
        assert "status=0" in out.stdout, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and "exception" not in out.stderr, out.stderr


def test_bad_input_ends_in_a_clear_error_not_a_traceback(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    checks = [
        (("schema", "export", "--out", str(a_file / "contracts")), "cannot write to"),
        (
            ("replay", "--stream", "METRICS", "--since", "1h", "--until", "2h", "--print"),
            "--until 2h",
        ),
        (("events", "tail", "METRICS", "--since", "1h", "--until", "2h"), "--since 1h"),
        (("up", "--port", "99999"), "is not a port"),
        (("up", "--approver-config", str(tmp_path / "missing.yaml")), "--approver-config"),
        (("auth", "init", "--dir", str(a_file / "nats")), "cannot write to"),
        (("events", "tail", "NOPE"), "neither a stream"),
    ]
    for args, says in checks:
        out = medbay(*args, env={"MEDBAY_NATS_URL": f"nats://127.0.0.1:{free_port()}"})
        assert out.returncode != 0, args
        assert says in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr, (args, out.stderr)
    reversed_range = medbay(
        "replay", "--stream", "METRICS", "--since", "1h", "--until", "2h", "--print"
    )
    assert "--since 1h" in reversed_range.stderr and "reversed" in reversed_range.stderr


def test_detect_names_the_line_of_a_timestamp_that_is_not_a_time(tmp_path: Path):
    csv = tmp_path / "series.csv"
    csv.write_text("timestamp,value\n2014-04-01 00:00:00,1.0\n1396310700,2.0\nnot-a-time,3.0\n")
    out = medbay("detect", str(csv))
    assert out.returncode == 2
    assert "line 4: timestamp 'not-a-time' is not a time" in out.stderr
    assert out.stdout.splitlines()[1:] and out.stdout.count("\n") == 3  # the rows before it
    assert "Traceback" not in out.stderr


# --- fast help ------------------------------------------------------------------------------


def test_help_imports_nothing_heavy():
    script = (
        "import sys\n"
        "from medbay.cli.main import main\n"
        "for argv in (['--help'], ['up', '--help'], ['status', '--help'], "
        "['events', 'tail', '--help'], ['approve', '--help'], ['replay', '--help'], "
        "['detect', '--help'], ['schema', 'export', '--help'], ['auth', 'init', '--help'], "
        "['bench', 'cli', '--help'], ['breaker', 'reset', '--help'], ['plans', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = {'numpy', 'faststream', 'nats', 'pydantic', 'bcrypt'} & set(sys.modules)\n"
        "print('HEAVY', sorted(heavy), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr


def test_names_in_the_parsers_match_the_catalogues():
    from medbay.cli import names, nats_url, replay, up
    from medbay.common.access import CLI
    from medbay.common.settings import DEFAULT_HTTP_PORTS
    from medbay.common.streams import PREFIX, STREAMS_BY_NAME
    from medbay.detector.anomaly import DEFAULT_DETECTOR, DETECTORS

    assert tuple(STREAMS_BY_NAME) == names.STREAM_NAMES
    assert tuple(sorted(DETECTORS)) == names.DETECTOR_NAMES
    assert DEFAULT_DETECTOR == names.DEFAULT_DETECTOR
    assert nats_url.CLI == CLI and replay.PREFIX == PREFIX
    assert DEFAULT_HTTP_PORTS["gateway"] == up.GATEWAY_PORT


# --- medbay up and make up ------------------------------------------------------------------


def test_up_passes_each_services_config_on(tmp_path: Path):
    import argparse

    from medbay.cli.up import service_argv

    args = argparse.Namespace(
        collector_config=None,
        detector_config=Path("d.yaml"),
        planner_config=Path("p.yaml"),
        executor_config=None,
        approver_config=Path("a.yaml"),
        gateway_config=None,
    )
    generated = {"collector": Path("gen-c.yaml"), "gateway": Path("gen-g.yaml")}
    argv = {
        name: service_argv(name, module, args, generated, tmp_path, 9480)
        for name, module in SERVICES.items()
    }
    assert argv["detector"][-2:] == ["--config", "d.yaml"]
    assert argv["planner"][-2:] == ["--config", "p.yaml"]
    assert argv["approver"][-2:] == ["--config", "a.yaml"]
    assert argv["collector"][-2:] == ["--config", "gen-c.yaml"]
    assert argv["executor"][-1] == str(tmp_path / "executor.yaml")
    args.approver_config = None
    assert "--config" not in service_argv("approver", "m", args, generated, tmp_path, 9480)


def test_make_up_passes_args_to_medbay_up():
    out = subprocess.run(
        ["make", "-n", "-s", "up", "NATS_PORT=4310", "ARGS=--no-demo --approver-config f.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "/medbay up --port 4310 --no-demo --approver-config f.yaml" in out.stdout


def test_text_logs_show_the_trace_id():
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from medbay.common.telemetry import TextFormatter

    formatter = TextFormatter("detector")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert formatter.format(record).endswith("detector INFO hello there")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = formatter.format(record)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert line.endswith(f"detector INFO hello there trace={trace_id}")
