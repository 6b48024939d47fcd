from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medbay.collector.config import (
    ConfigError,
    HttpCheck,
    OtlpReceiver,
    ProcessCheck,
    SpanmetricsScrape,
    TcpCheck,
    load_config,
)

EXAMPLE = Path(__file__).parents[1] / "collector.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.interval_seconds == 5
    assert [s.check for s in config.services] == ["process", "tcp", "http", "redis", "postgres"]
    api = config.services[2]
    assert isinstance(api, HttpCheck)
    assert (api.expect_status, api.timeout_seconds) == (200, 3)
    assert isinstance(config.services[1], TcpCheck) and config.services[1].port == 22
    assert config.scrape[0].name == "node" and config.scrape[0].max_samples == 5000
    assert config.startup_grace_seconds == 60
    assert [config.startup_grace(s) for s in config.services] == [60, 60, 120, 60, 60]
    logs, uploads = config.directories
    assert (logs.name, logs.path, logs.budget_bytes, logs.max_entries) == (
        "app-logs",
        Path("/var/log/app"),
        2_000_000_000,
        100_000,
    )
    assert uploads.max_entries == 500_000


def test_defaults(tmp_path: Path) -> None:
    for config in (load_config(None), load_config(write(tmp_path, ""))):
        assert config.host == socket.gethostname()
        assert (config.interval_seconds, config.top_processes) == (5, 5)
        assert config.startup_grace_seconds == 60
        assert config.services == [] and config.scrape == [] and config.directories == []
    config = load_config(write(tmp_path, "services: [{name: sshd, check: process}]"))
    check = config.services[0]
    assert isinstance(check, ProcessCheck) and check.timeout_seconds == 2
    assert check.process is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "services:\n  - {name: a, check: ftp}",
            "services[0]: Input tag 'ftp' found using 'check' does not match",
        ),
        (
            "services:\n  - {name: a, check: process}\n  - {name: b, check: process}\n"
            "  - {name: c, check: tcp, port: 70000}",
            "services[2].port: Input should be less than or equal to 65535",
        ),
        ("services:\n  - {check: tcp, port: 80}", "services[0].name: Field required"),
        (
            "services:\n  - {name: a, check: tcp, port: 1}\n  - {name: a, check: process}",
            "services: Value error, duplicate service name 'a'",
        ),
        ("services:\n  - {name: a, check: tcp, prot: 1}", "services[0].prot: Extra inputs"),
        ("interval_seconds: 0", "interval_seconds: Input should be greater than 0"),
        ("host: 'bad host'", "host: String should match pattern"),
        ("scrape: [{name: x, url: 'ftp://x'}]", "scrape[0].url: URL scheme should be"),
        ("services: [name: a", "is not valid YAML"),
        ("startup_grace_seconds: -1", "startup_grace_seconds: Input should be greater than"),
        (
            "services: [{name: a, check: process, startup_grace_seconds: 4000}]",
            "services[0].startup_grace_seconds: Input should be less than or equal to 3600",
        ),
        (
            "directories: [{name: logs, path: var/log, budget_bytes: 10}]",
            "directories[0].path: Value error, must be an absolute path, not 'var/log'",
        ),
        (
            "directories: [{name: logs, path: /var/log, budget_bytes: 0}]",
            "directories[0].budget_bytes: Input should be greater than 0",
        ),
        (
            "directories: [{name: logs, path: /var/log}]",
            "directories[0].budget_bytes: Field required",
        ),
        (
            "directories:\n  - {name: logs, path: /a, budget_bytes: 1}\n"
            "  - {name: logs, path: /b, budget_bytes: 1}",
            "directories: Value error, duplicate directory name 'logs'",
        ),
        (
            "directories: [{name: logs, path: /a, budget_bytes: 1, max_entries: 0}]",
            "directories[0].max_entries: Input should be greater than or equal to 1",
        ),
        ("- just\n- a list", "expected a mapping at the top level"),
        ("otlp: {port: 70000}", "otlp.port: Input should be less than or equal to 65535"),
        ("otlp: {prot: 4318}", "otlp.prot: Extra inputs are not permitted"),
        ("otlp: {host: ''}", "otlp.host: String should have at least 1 character"),
        ("otlp: {max_body_bytes: 10}", "otlp.max_body_bytes: Input should be greater than or"),
        ("otlp: {max_operations: 0}", "otlp.max_operations: Input should be greater than or"),
        (
            "otlp: {min_requests_for_ratio: 0}",
            "otlp.min_requests_for_ratio: Input should be greater than or equal to 1",
        ),
        ("spanmetrics: {}", "spanmetrics.url: Field required"),
        ("spanmetrics: {url: 'ftp://x'}", "spanmetrics.url: URL scheme should be"),
        (
            "spanmetrics: {url: 'http://x', timeout_seconds: 0}",
            "spanmetrics.timeout_seconds: Input should be greater than 0",
        ),
        (
            "spanmetrics: {url: 'http://x', calls_metric: 'calls total'}",
            "spanmetrics.calls_metric: String should match pattern",
        ),
        (
            "spanmetrics: {url: 'http://x', max_operations: 20000}",
            "spanmetrics.max_operations: Input should be less than or equal to 10000",
        ),
        (
            "otlp: {}\nspanmetrics: {url: 'http://x'}",
            "spanmetrics: Value error, otlp and spanmetrics both give this host's span_* "
            "samples: configure one",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


def test_trace_intakes(tmp_path: Path) -> None:
    assert (load_config(None).otlp, load_config(None).spanmetrics) == (None, None)
    otlp = load_config(write(tmp_path, "otlp: {}")).otlp
    assert otlp == OtlpReceiver(
        host="127.0.0.1",
        port=4318,
        max_body_bytes=8_388_608,
        max_operations=1000,
        min_requests_for_ratio=5,
    )
    scrape = load_config(write(tmp_path, "spanmetrics: {url: 'http://otel:8889/metrics'}"))
    assert scrape.spanmetrics == SpanmetricsScrape.model_validate(
        {
            "url": "http://otel:8889/metrics",
            "timeout_seconds": 2,
            "calls_metric": "traces_span_metrics_calls_total",
            "duration_metric": "traces_span_metrics_duration_milliseconds",
            "edges_metric": "traces_service_graph_request_total",
            "max_operations": 1000,
            "min_requests_for_ratio": 5,
        }
    )
    example = load_config(EXAMPLE)
    assert example.otlp is not None and example.otlp.port == 4318
    assert example.spanmetrics is None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read collector config"):
        load_config(tmp_path / "absent.yaml")


def test_bad_config_exits_2_before_connecting(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  - {name: db, check: tcp, port: 99999}")
    env = os.environ | {"MEDBAY_NATS_URL": "nats://127.0.0.1:1", "MEDBAY_HTTP_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "medbay.collector.main", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # starting Python is slow on a busy machine; this only guards a hang
    )
    assert result.returncode == 2
    assert "services[0].port: Input should be less than or equal to 65535" in result.stderr
    assert "starting" not in result.stderr


def test_no_more_checks_than_a_batch_can_give_reasons_for(tmp_path: Path) -> None:
    checks = "".join(f"  - {{name: s{i}, check: process}}\n" for i in range(1001))
    with pytest.raises(ConfigError, match="services: List should have at most 1000 items"):
        load_config(write(tmp_path, "services:\n" + checks))


def test_taken_otlp_port_exits_2_naming_it(tmp_path: Path, tcp_listener: int) -> None:
    path = write(tmp_path, f"otlp: {{port: {tcp_listener}}}")
    env = os.environ | {"MEDBAY_NATS_URL": "nats://127.0.0.1:1", "MEDBAY_HTTP_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "medbay.collector.main", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert (
        f"medbay collector: cannot listen for OTLP/HTTP traces on 127.0.0.1:{tcp_listener}"
        in result.stderr
    )
    assert "change otlp.port" in result.stderr
    assert "Traceback" not in result.stderr
