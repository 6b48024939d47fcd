"""``medbay rules export``: Prometheus alerting rules from the detector's config.

The detector judges every batch itself; these rules let Prometheus (and so
Alertmanager and Grafana) raise the same alerts from the ``medbay_<sample>``
gauges the collector serves on its ``/metrics`` (its latest batch, labelled
``host`` and the sample's own labels). One alert per threshold rule and level,
``for:`` the rule's ``for_samples`` batches; a service's traffic and a host's
batches stopping; and Medbay's own health: a service down, dead letters, the
detector falling behind the collectors.

What PromQL cannot say is left out and listed in the file's header: the anomaly
rules (the detector's own scoring) and the detector's hysteresis (a rule
resolves once its series is back past the threshold; ``keep_firing_for`` holds
it for ``clear_samples`` batches, close to the detector's behaviour).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medbay.detector.config import DetectorConfig, ThresholdRule

FORMATS = ("prometheus", "prometheus-operator")
DEFAULT_INTERVAL_SECONDS = 5.0
"""The collector's default ``interval_seconds``: one batch per host every 5 s."""
MAX_INTERVAL_SECONDS = 3600.0

HOST_PRESENCE_METRIC = "medbay_memory_percent"
"""A gauge every batch carries (the host's memory): its series is there while the
host's batches come."""
HOST_MEMORY_SECONDS = 86_400.0
"""How long back a host's batches count as its own: a host gone longer is forgotten."""
SERVICE_LABEL = "medbay_service"
"""The target label naming the Medbay service a Prometheus scrape target is (compose's
static_configs and the k8s PodMonitor set it)."""

_INVALID_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_:]")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rules", help="Prometheus alerting rules from the detector's config")
    actions = p.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write Prometheus alerting rules matching the detector's thresholds",
        description="Prometheus alerting rules on the medbay_<sample> gauges of the "
        "collector's /metrics: one alert per threshold rule and level, a service's spans "
        "or a host's batches stopping, and Medbay's own health.",
    )
    export.add_argument(
        "--format",
        choices=FORMATS,
        default="prometheus",
        help="a Prometheus rules file, or a PrometheusRule object for the Prometheus "
        "Operator (default: prometheus)",
    )
    export.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="DETECTOR_YAML",
        help="the detector's config file (default: its built-in rules)",
    )
    export.add_argument(
        "--interval",
        type=interval_seconds,
        default=DEFAULT_INTERVAL_SECONDS,
        metavar="SECONDS",
        help="seconds between a host's batches, the collector's interval_seconds: "
        f"for: is for_samples times this (default: {DEFAULT_INTERVAL_SECONDS:g})",
    )
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(func=run)


def interval_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give seconds above 0 and at most {MAX_INTERVAL_SECONDS:g}"
        )
    return value


def duration(seconds: float) -> str:
    """``seconds`` as a Prometheus duration: ``90`` -> ``1m30s``, ``2.5`` -> ``2s500ms``."""
    millis = max(0, round(seconds * 1000))
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def metric_name(sample: str) -> str:
    """The collector's gauge for a sample name: ``cpu_percent`` -> ``medbay_cpu_percent``."""
    return "medbay_" + _INVALID_METRIC_CHARS.sub("_", sample)


def label_name(label: str) -> str:
    """A sample's label as the collector's gauges carry it."""
    from medbay.collector.exposition import export_labels

    (name,) = set(export_labels("", {label: ""})) - {"host"}
    return name


def quoted(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metric: str, labels: dict[str, str]) -> str:
    if not labels:
        return metric
    matchers = ", ".join(f"{label_name(k)}={quoted(v)}" for k, v in sorted(labels.items()))
    return f"{metric}{{{matchers}}}"


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^a-zA-Z0-9]+", name))


def number(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else str(value)


def threshold_alerts(config: DetectorConfig, interval: float) -> list[dict[str, Any]]:
    """One alert per threshold rule and level it has."""
    alerts: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for rule in config.thresholds:
        base = f"Medbay{camel(rule.metric)}"
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            base += str(seen[base])
        for level, value in (("warning", rule.warning), ("critical", rule.critical)):
            if value is not None:
                alerts.append(threshold_alert(rule, base + level.title(), level, value, interval))
    return alerts


def threshold_alert(
    rule: ThresholdRule, name: str, level: str, value: float, interval: float
) -> dict[str, Any]:
    op, side = (">", "above") if rule.direction == "above" else ("<", "below")
    where = "{{ $labels.host }}"
    if rule.resource_label:
        where += f" ({rule.resource_label} {{{{ $labels.{label_name(rule.resource_label)} }}}})"
    alert: dict[str, Any] = {
        "alert": name,
        "expr": f"{selector(metric_name(rule.metric), rule.labels)} {op} {number(value)}",
        "for": duration(rule.for_samples * interval),
    }
    if rule.clear_samples > 1:
        alert["keep_firing_for"] = duration(rule.clear_samples * interval)
    alert["labels"] = {"severity": level, "kind": rule.kind}
    alert["annotations"] = {
        "summary": f"{rule.metric} on {where} is {{{{ $value }}}}, {side} {number(value)}",
        "description": f"Medbay's detector opens a {level} {rule.kind} issue when "
        f"{rule.metric} stays {side} {number(value)} for {rule.for_samples} batches.",
    }
    return alert


def silence_alerts(config: DetectorConfig, interval: float) -> list[dict[str, Any]]:
    """A host whose batches stopped, and a service whose spans stopped while its host's
    batches keep coming: series seen lately but absent now."""
    alerts: list[dict[str, Any]] = []
    silence = config.silence
    if silence.enabled:
        quiet = max(silence.intervals * interval, silence.min_seconds)
        seen = duration(HOST_MEMORY_SECONDS)
        alerts.append(
            {
                "alert": "MedbayHostSilent",
                "expr": f"count by (host) (last_over_time({HOST_PRESENCE_METRIC}[{seen}])) "
                f"unless count by (host) ({HOST_PRESENCE_METRIC})",
                "for": duration(quiet),
                "labels": {"severity": "critical", "kind": "host_silent"},
                "annotations": {
                    "summary": "No metrics from {{ $labels.host }}",
                    "description": "The collector of {{ $labels.host }} published batches "
                    f"in the last {seen} but none for {duration(quiet)}: its collector is "
                    "down or cannot be scraped.",
                },
            }
        )
    traffic = config.traffic
    if traffic.enabled:
        series = metric_name(traffic.metric)
        resource = label_name(traffic.resource_label)
        seen = duration(traffic.forget_after_seconds)
        quiet = max(traffic.intervals * interval, traffic.min_seconds)
        alerts.append(
            {
                "alert": "MedbayNoTraffic",
                "expr": f"(count by (host, {resource}) (last_over_time({series}[{seen}])) "
                f"unless count by (host, {resource}) ({series})) "
                f"and on (host) count by (host) ({HOST_PRESENCE_METRIC})",
                "for": duration(quiet),
                "labels": {"severity": "warning", "kind": "no_traffic"},
                "annotations": {
                    "summary": f"No spans from {{{{ $labels.{resource} }}}} on "
                    "{{ $labels.host }}",
                    "description": f"{traffic.metric} of {{{{ $labels.{resource} }}}} was "
                    f"reported in the last {seen} but not for {duration(quiet)}, while "
                    "{{ $labels.host }} still sends its batches: the service stopped "
                    "serving or stopped sending spans.",
                },
            }
        )
    return alerts


def health_alerts(config: DetectorConfig, interval: float) -> list[dict[str, Any]]:
    """Medbay's own services, from the metrics they export."""
    quiet = duration(max(config.silence.intervals * interval, config.silence.min_seconds))
    return [
        {
            "alert": "MedbayServiceDown",
            "expr": f'up{{{SERVICE_LABEL}!=""}} == 0',
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"Medbay {{{{ $labels.{SERVICE_LABEL} }}}} at "
                "{{ $labels.instance }} cannot be scraped",
                "description": "Prometheus has not reached its /metrics for a minute: the "
                "process is down, restarting or unreachable.",
            },
        },
        {
            "alert": "MedbayCollectorNotPublishing",
            "expr": "sum by (instance) (increase(medbay_collector_samples_total[1m])) == 0",
            "for": quiet,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The collector at {{ $labels.instance }} publishes no metrics",
                "description": "It runs but published no sample in the last minute (NATS "
                "unreachable, or every scrape failing: see "
                "medbay_collector_scrape_failures_total{stage}).",
            },
        },
        {
            "alert": "MedbayDeadLetters",
            "expr": f"sum by ({SERVICE_LABEL}, consumer) (increase("
            'medbay_consumer_messages_total{outcome="dead_lettered"}[15m])) > 0',
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.consumer }} dead-lettered {{ $value }} messages "
                "in 15 minutes",
                "description": "Messages it could not handle went to DEADLETTER; see "
                "`medbay events tail DEADLETTER` for why.",
            },
        },
        {
            "alert": "MedbayConsumerRetrying",
            "expr": f"sum by ({SERVICE_LABEL}, consumer) (increase("
            'medbay_consumer_messages_total{outcome="retried"}[15m])) > 10',
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.consumer }} keeps retrying messages",
                "description": "More than 10 retries in 15 minutes: its handler fails and "
                "the backlog behind it grows.",
            },
        },
        {
            "alert": "MedbayNoActiveReplica",
            "expr": f"max by ({SERVICE_LABEL}) (medbay_replica_active) == 0",
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "No {{ $labels.medbay_service }} replica is active",
                "description": "Its replicas run but none has held the active lease for a "
                "minute (one should take it within seconds): nothing is planned or asked "
                "about. Their logs say why (NATS unreachable, the bucket missing).",
            },
        },
        {
            "alert": "MedbayConsumerLagging",
            "expr": f"max by ({SERVICE_LABEL}, consumer) (medbay_consumer_pending) > 1000",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.consumer }} has {{ $value }} messages waiting",
                "description": "For 5 minutes the durable consumer {{ $labels.consumer }} of "
                "{{ $labels.medbay_service }} had more than 1000 messages waiting: it falls "
                "behind, so what it does (issues, plans, fixes) comes late.",
            },
        },
    ]


def groups(config: DetectorConfig, interval: float) -> list[dict[str, Any]]:
    every = duration(interval)
    return [
        {
            "name": "medbay-detector-thresholds",
            "interval": every,
            "rules": threshold_alerts(config, interval),
        },
        {"name": "medbay-silence", "interval": every, "rules": silence_alerts(config, interval)},
        {"name": "medbay-health", "interval": "30s", "rules": health_alerts(config, interval)},
    ]


def header(config: DetectorConfig, source: Path | None, interval: float) -> str:
    import textwrap

    origin = f"the detector config {source}" if source else "the detector's built-in rules"
    paragraphs = [
        f"Medbay's alerting rules: `medbay rules export` over {origin}, a batch every "
        f"{interval:g} s. Regenerate rather than edit.",
        "They read the collector's medbay_<sample> gauges (label host and the sample's "
        "labels) and Medbay's own metrics; scrape targets carry medbay_service=<service>.",
        "An alert resolves as soon as its series is back past the threshold: the "
        "detector's hysteresis has no PromQL equivalent.",
    ]
    if config.anomaly:
        scored = ", ".join(f"{rule.metric} ({rule.detector})" for rule in config.anomaly)
        paragraphs.append(
            f"Not expressible in PromQL, left to the detector: the anomaly rules on {scored}."
        )
    return "".join(
        f"# {line}\n"
        for paragraph in paragraphs
        for line in textwrap.wrap(paragraph, 86, break_long_words=False, break_on_hyphens=False)
    )


def render(
    config: DetectorConfig,
    *,
    fmt: str = "prometheus",
    interval: float = DEFAULT_INTERVAL_SECONDS,
    source: Path | None = None,
) -> str:
    """The rules file's text."""
    import yaml

    body: dict[str, Any] = {"groups": groups(config, interval)}
    if fmt == "prometheus-operator":
        body = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": "medbay",
                "namespace": "medbay",
                "labels": {"app.kubernetes.io/part-of": "medbay"},
            },
            "spec": body,
        }
    text = yaml.safe_dump(body, sort_keys=False, width=1000, allow_unicode=True)
    return header(config, source, interval) + text


def run(args: argparse.Namespace) -> int:
    from medbay.detector.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"medbay rules export: {exc}", file=sys.stderr)
        return 2
    text = render(config, fmt=args.format, interval=args.interval, source=args.config)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"medbay rules export: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(args.out)
    return 0
