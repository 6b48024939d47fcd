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
from medbay.common.events import ALL_EVENTS, MetricBatch, MetricSample
from medbay.common.streams import CHANNELS, METRICS
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def medbay(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    import os

    return subprocess.run(
        [sys.executable, "-m", "medbay.cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_refuses_a_taken_port_and_says_what_to_do(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = medbay(
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--no-demo",
            env={"MEDBAY_NATS_URL": ""},
        )
    assert out.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in out.stderr
    assert f"MEDBAY_NATS_URL=nats://127.0.0.1:{port} medbay up" in out.stderr
    assert f"medbay up --port {port + 1}" in out.stderr


def test_up_runs_everything_and_ctrl_c_stops_it(tmp_path: Path):
    import os

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MEDBAY_NATS_URL"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medbay.cli.main",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = {  # the CLI's own identity, made by `medbay up`
        "MEDBAY_NATS_URL": f"nats://127.0.0.1:{port}",
        "MEDBAY_NATS_USER": "cli",
        "MEDBAY_NATS_PASSWORD_FILE": str(tmp_path / "state" / "nats" / "cli.password"),
    }
    try:
        deadline = time.monotonic() + 60
        status = ""
        while time.monotonic() < deadline:
            status = medbay("status", env=url).stdout
            if all(f"{name:<12}ok" in status for name in SERVICES):
                metrics_line = next(x for x in status.splitlines() if x.startswith("METRICS"))
                if int(metrics_line.split()[2]) >= 2:
                    break
            time.sleep(1)
        assert all(f"{name:<12}ok" in status for name in SERVICES), status
        assert "METRICS/detector" in status and "PLANS/executor" in status
        tail = medbay("events", "tail", "METRICS", "--since", "5m", "--no-follow", env=url)
        assert "metric.batch" in tail.stdout and "trace=" in tail.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    for name in ("nats", "demo-web", *SERVICES):
        assert f"{name:>10} | " in output
    assert "Medbay stopped." in output
    with socket.socket() as s:  # the embedded server is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert (tmp_path / "state" / "jetstream").is_dir()


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
