"""``medbay rules export``: the Prometheus alerting rules follow the detector's config,
and the rules files shipped in compose/ and k8s/ are its current output.

Whether every metric the rules name is one Medbay really exports is checked against
running services in tests/test_observability_stack.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from medbay.detector.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {
    "prometheus": REPO / "compose" / "prometheus" / "rules" / "medbay.yaml",
    "prometheus-operator": REPO / "k8s" / "monitoring" / "prometheusrule.yaml",
}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def medbay(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDBAY_DETECTOR_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "medbay.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def seconds(duration: str) -> float:
    assert DURATION.match(duration), duration
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def alerts(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups = document["spec"]["groups"] if "spec" in document else document["groups"]
    found: dict[str, dict[str, Any]] = {}
    for group in groups:
        for rule in group["rules"]:
            assert rule["alert"] not in found, f"alert {rule['alert']} twice"
            found[rule["alert"]] = rule
    return found


@pytest.mark.parametrize("fmt", sorted(SHIPPED))
def test_the_shipped_rules_files_are_current(fmt: str, tmp_path: Path):
    """Regenerate with `medbay rules export [--format prometheus-operator] --out FILE`."""
    out = tmp_path / "rules.yaml"
    result = medbay("rules", "export", "--format", fmt, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == SHIPPED[fmt].read_text(), f"{SHIPPED[fmt]} is stale"


def test_the_rules_files_are_valid_prometheus_rules():
    for fmt, path in SHIPPED.items():
        document = yaml.safe_load(path.read_text())
        if fmt == "prometheus-operator":
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            assert document["kind"] == "PrometheusRule"
            assert document["metadata"]["namespace"] == "medbay"
            groups = document["spec"]["groups"]
        else:
            assert set(document) == {"groups"}
            groups = document["groups"]
        assert len({g["name"] for g in groups}) == len(groups)
        for group in groups:
            assert set(group) <= {"name", "interval", "rules"}, group["name"]
            seconds(group["interval"])
            for rule in group["rules"]:
                where = f"{path.name}: {rule.get('alert')}"
                assert set(rule) <= {
                    "alert",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations",
                }, where
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), where
                assert isinstance(rule["expr"], str) and rule["expr"].strip(), where
                assert rule["expr"].count("(") == rule["expr"].count(")"), where
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        seconds(rule[key])
                assert rule["labels"]["severity"] in ("warning", "critical"), where
                assert rule["annotations"]["summary"], where


def test_every_threshold_rule_and_level_becomes_an_alert():
    config = load_config(None)
    document = yaml.safe_load(SHIPPED["prometheus"].read_text())
    (group,) = [g for g in document["groups"] if g["name"] == "medbay-detector-thresholds"]
    rules = alerts({"groups": [group]})
    levels = 0
    for rule in config.thresholds:
        for level, value in (("warning", rule.warning), ("critical", rule.critical)):
            if value is None:
                continue
            levels += 1
            op = ">" if rule.direction == "above" else "<"
            matching = [
                a
                for a in rules.values()
                if a["labels"] == {"severity": level, "kind": rule.kind}
                and a["expr"] == f"medbay_{rule.metric} {op} {value:g}"
            ]
            assert len(matching) == 1, (rule.metric, level, matching)
            assert seconds(matching[0]["for"]) == rule.for_samples * 5
            if rule.clear_samples > 1:
                assert seconds(matching[0]["keep_firing_for"]) == rule.clear_samples * 5
    assert len(rules) == levels
    # service_up is "below": a service is down under 0.5
    (down,) = [a for a in rules.values() if a["expr"].startswith("medbay_service_up")]
    assert down["expr"] == "medbay_service_up < 0.5" and down["for"] == "10s"


def test_silence_follows_the_detector_and_anomalies_are_listed_as_left_out():
    config = load_config(None)
    text = SHIPPED["prometheus"].read_text()
    rules = alerts(yaml.safe_load(text))
    host = rules["MedbayHostSilent"]
    assert host["labels"]["kind"] == "host_silent"
    assert seconds(host["for"]) == max(config.silence.intervals * 5, config.silence.min_seconds)
    traffic = rules["MedbayNoTraffic"]
    assert traffic["labels"]["kind"] == "no_traffic"
    assert f"medbay_{config.traffic.metric}" in traffic["expr"]
    assert f"by (host, {config.traffic.resource_label})" in traffic["expr"]
    assert seconds(traffic["for"]) == max(config.traffic.intervals * 5, config.traffic.min_seconds)
    # a series seen within the detector's memory of it, absent now, on a host still reporting
    assert "last_over_time(" in traffic["expr"] and " unless " in traffic["expr"]
    assert "and on (host)" in traffic["expr"]
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    for rule in config.anomaly:
        assert rule.metric in header, f"anomaly rule on {rule.metric} not listed as left out"


def test_a_custom_detector_config_changes_thresholds_and_for(tmp_path: Path):
    config = tmp_path / "detector.yaml"
    config.write_text(
        "thresholds:\n"
        "  - {metric: queue_depth, kind: other, warning: 100, critical: 1000, for_samples: 4,\n"
        "     labels: {queue: 'or\"ders', k8s.namespace: prod}, resource_label: queue}\n"
        "  - {metric: free_slots, kind: other, critical: 2, direction: below, clear_samples: 3}\n"
        "anomaly: []\n"
        "silence: {intervals: 3, min_seconds: 10}\n"
        "traffic: {enabled: false}\n"
    )
    out = tmp_path / "rules.yaml"
    result = medbay(
        "rules", "export", "--config", str(config), "--interval", "30", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert str(config) in " ".join(text.splitlines()[:3])
    rules = alerts(yaml.safe_load(text))
    # label names as the collector's gauges carry them (k8s.namespace -> k8s_namespace)
    assert rules["MedbayQueueDepthWarning"]["expr"] == (
        'medbay_queue_depth{k8s_namespace="prod", queue="or\\"ders"} > 100'
    )
    assert rules["MedbayQueueDepthWarning"]["for"] == "2m"  # 4 batches of 30 s
    assert rules["MedbayQueueDepthCritical"]["expr"].endswith(" > 1000")
    assert "{{ $labels.queue }}" in rules["MedbayQueueDepthCritical"]["annotations"]["summary"]
    assert rules["MedbayFreeSlotsCritical"]["expr"] == "medbay_free_slots < 2"
    assert rules["MedbayFreeSlotsCritical"]["keep_firing_for"] == "1m30s"
    assert "MedbayFreeSlotsWarning" not in rules
    assert rules["MedbayHostSilent"]["for"] == "1m30s"  # max(3 x 30 s, 10 s)
    assert "MedbayNoTraffic" not in rules
    assert "MedbayCpuPercentWarning" not in rules
    assert "anomaly" not in "".join(line for line in text.splitlines() if line.startswith("#"))


def test_the_operator_format_wraps_the_same_groups():
    plain = yaml.safe_load(SHIPPED["prometheus"].read_text())
    operator = yaml.safe_load(SHIPPED["prometheus-operator"].read_text())
    assert operator["spec"]["groups"] == plain["groups"]


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        (
            "thresholds:\n  - {metric: cpu_percent, kind: cpu, warning: 95, critical: 90}\n",
            "thresholds[0]: Value error, warning must come before critical",
        ),
        ("thresholds:\n  - {metric: cpu_percent, kind: cpu, warn: 95}\n", "thresholds[0].warn"),
        ("silence: [not, a, mapping]\n", "silence"),
        ("thresholds: [\n", "is not valid YAML"),
    ],
)
def test_a_bad_detector_config_is_refused_with_the_reason(
    tmp_path: Path, config_text: str, expected: str
):
    config = tmp_path / "detector.yaml"
    config.write_text(config_text)
    out = tmp_path / "rules.yaml"
    result = medbay("rules", "export", "--config", str(config), "--out", str(out))
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("medbay rules export: ")
    assert expected in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "/nonexistent/detector.yaml"], "cannot read detector config"),
        (["--interval", "0"], "--interval: '0': give seconds above 0"),
        (["--interval", "soon"], "--interval: 'soon' is not a number of seconds"),
        (["--format", "grafana"], "--format: invalid choice: 'grafana'"),
    ],
)
def test_bad_arguments_are_refused_with_exit_status_2(args: list[str], expected: str):
    result = medbay("rules", "export", *args)
    assert result.returncode == 2, result.stdout
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
