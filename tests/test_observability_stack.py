"""The observability stack around Medbay, checked offline (no OpenTelemetry Collector,
Jaeger, Prometheus or Grafana binary here): the Collector's tail sampling policies and
pipelines, every address one part gives for another resolving to a compose service
or a Kubernetes Service that listens there, and every metric the alerting rules and
the Grafana dashboards name being one Medbay's running services really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from medbay.common.settings import DEFAULT_HTTP_PORTS
from medbay.common.telemetry import CRITICAL_SPAN_ATTRIBUTE
from tests.helpers import free_port
from tests.test_manifests import (
    Network,
    compose_nats_servers,
    find,
    nats_pod_addressed,
    pod_labels,
    run,
    tool,
    workloads,
    write_nats_credentials,
)

if TYPE_CHECKING:
    from conftest import NatsServer, StartService

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose"
K8S = REPO / "k8s"
BIN = Path(sys.executable).parent
MEDBAY_SERVICES = ("collector", "detector", "planner", "approver", "executor", "gateway")

Obj = dict[str, Any]

OTEL_CONNECTOR_METRICS = {
    # spanmetrics (namespace traces.span.metrics, histogram unit ms)
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_milliseconds_bucket",
    "traces_span_metrics_duration_milliseconds_sum",
    "traces_span_metrics_duration_milliseconds_count",
    # servicegraph
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
    "traces_service_graph_request_server_seconds_sum",
    "traces_service_graph_request_server_seconds_count",
    "traces_service_graph_request_client_seconds_bucket",
    "traces_service_graph_request_client_seconds_sum",
    "traces_service_graph_request_client_seconds_count",
    "traces_service_graph_unpaired_spans_total",
    "traces_service_graph_dropped_spans_total",
}
"""What the OpenTelemetry Collector's connectors export on :8889 (the connectors'
documentation; docs/observability.md lists them): checked against that list, as no
Collector runs here."""
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus makes itself for every target."""


def load(path: Path) -> Obj:
    data: Obj = yaml.safe_load(path.read_text())
    return data


ENV_REFERENCE = re.compile(r"^\$\{env:([A-Z0-9_]+)(?::-(.*))?\}$", re.DOTALL)


def resolved(value: Any) -> Any:
    """A Collector config value as the Collector reads it with none of its variables
    set: ``${env:NAME:-DEFAULT}`` is DEFAULT parsed as YAML."""
    if isinstance(value, str) and (m := ENV_REFERENCE.match(value)):
        assert m.group(2) is not None, f"{value}: give a default"
        return yaml.safe_load(m.group(2))
    return value


def listening_ports(config: Any) -> set[int]:
    """The ports a Collector (or Jaeger) config listens on: every ``endpoint`` on all
    interfaces, and the Prometheus readers of its own telemetry."""
    ports: set[int] = set()
    if isinstance(config, dict):
        endpoint = config.get("endpoint")
        if isinstance(endpoint, str) and (m := re.fullmatch(r"(0\.0\.0\.0)?:(\d+)", endpoint)):
            ports.add(int(m.group(2)))
        if config.get("host") == "0.0.0.0" and isinstance(config.get("port"), int):
            ports.add(config["port"])
        for value in config.values():
            ports |= listening_ports(value)
    elif isinstance(config, list):
        for value in config:
            ports |= listening_ports(value)
    return ports


def host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """``http://jaeger:16686/x`` or ``jaeger:4317`` -> ("jaeger", port)."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    port = parts.port or default_port
    assert parts.hostname and port, address
    return parts.hostname, port


# --- the OpenTelemetry Collector's config ------------------------------------------------


@pytest.fixture(scope="module")
def otel() -> Obj:
    return load(COMPOSE / "otel-collector.yaml")


def test_kubernetes_runs_the_same_collector_and_jaeger_configs_as_compose():
    for name in ("otel-collector.yaml", "jaeger.yaml"):
        assert (K8S / "config" / name).read_text() == (COMPOSE / name).read_text(), (
            f"k8s/config/{name} differs from compose/{name}: copy it over"
        )


def test_tail_sampling_keeps_errors_slow_and_critical_traces_and_a_tenth_of_the_rest(otel: Obj):
    sampling = otel["processors"]["tail_sampling"]
    policies = {p["type"]: p for p in sampling["policies"]}
    assert len(policies) == len(sampling["policies"]) == 5
    assert policies["status_code"]["status_code"] == {"status_codes": ["ERROR"]}
    assert resolved(policies["latency"]["latency"]["threshold_ms"]) == 1000
    assert "upper_threshold_ms" not in policies["latency"]["latency"]
    assert policies["boolean_attribute"]["boolean_attribute"] == {
        "key": CRITICAL_SPAN_ATTRIBUTE,
        "value": True,
    }
    routes = policies["string_attribute"]["string_attribute"]
    assert routes["key"] == "http.route"
    default_routes = resolved(routes["values"])
    assert isinstance(default_routes, list) and default_routes
    assert all(isinstance(r, str) and r.startswith("/") for r in default_routes)
    assert resolved(policies["probabilistic"]["probabilistic"]["sampling_percentage"]) == 10
    # no policy that drops or inverts: any "keep" keeps the trace
    assert not {"drop", "and", "composite"} & set(policies)
    assert not any("invert_match" in str(p) for p in sampling["policies"])
    # each figure can be changed from the environment, as docs/observability.md says
    variables = {
        ENV_REFERENCE.match(v).group(1)  # type: ignore[union-attr]
        for v in (
            policies["latency"]["latency"]["threshold_ms"],
            routes["values"],
            policies["probabilistic"]["probabilistic"]["sampling_percentage"],
            sampling["decision_wait"],
        )
    }
    assert variables == {
        "MEDBAY_SAMPLING_SLOW_MS",
        "MEDBAY_SAMPLING_CRITICAL_ROUTES",
        "MEDBAY_SAMPLING_PERCENT",
        "MEDBAY_SAMPLING_DECISION_WAIT",
    }
    docs = (REPO / "docs" / "observability.md").read_text()
    compose_env = load(COMPOSE / "compose.yaml")["services"]["otel-collector"]["environment"]
    for variable in variables:
        assert variable in docs, f"{variable} is not in docs/observability.md"
        assert variable in compose_env, f"compose does not pass {variable} on"


def test_late_spans_of_a_kept_trace_are_kept(otel: Obj):
    sampling = otel["processors"]["tail_sampling"]
    wait = resolved(sampling["decision_wait"])
    assert re.fullmatch(r"\d+s", wait) and 5 <= int(wait[:-1]) <= 60, wait
    cache = sampling["decision_cache"]
    # ids of kept traces outlive the traces held in memory, by far
    assert cache["sampled_cache_size"] >= 4 * sampling["num_traces"]
    # a late span of a dropped trace is judged again (a late error is still kept)
    assert cache.get("non_sampled_cache_size", 0) == 0


def pipelines_feeding(otel: Obj, component: str) -> list[tuple[str, Obj]]:
    return [
        (name, p)
        for name, p in otel["service"]["pipelines"].items()
        if component in p.get("exporters", [])
    ]


def assert_sees_every_span(pipeline: Obj, what: str) -> None:
    """``pipeline`` gets the spans straight from the OTLP receiver, unsampled."""
    assert "otlp" in pipeline["receivers"], f"{what}: not fed by the OTLP receiver"
    assert "tail_sampling" not in pipeline.get("processors", []), f"{what}: after sampling"
    for processor in pipeline.get("processors", []):
        assert processor.split("/")[0] in ("memory_limiter", "batch"), (what, processor)


@pytest.mark.parametrize("config", ["compose/otel-collector.yaml", "k8s/config/otel-agent.yaml"])
def test_span_metrics_count_every_span_before_sampling(config: str):
    otel = load(REPO / config)
    # the agents have no service graph: a node sees only part of the calls
    for connector in [c for c in ("spanmetrics", "servicegraph") if c in otel["connectors"]]:
        feeding = pipelines_feeding(otel, connector)
        assert feeding, f"nothing feeds {connector}"
        for name, pipeline in feeding:
            assert_sees_every_span(pipeline, f"{config} {name} -> {connector}")
        # and its metrics go out on the Prometheus endpoint
        (metrics,) = [
            p for p in otel["service"]["pipelines"].values() if connector in p.get("receivers", [])
        ]
        assert metrics["exporters"] == ["prometheus"]
    assert otel["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"
    spanmetrics = otel["connectors"]["spanmetrics"]
    # the names Medbay's collector reads by default (its spanmetrics section)
    assert spanmetrics["namespace"] == "traces.span.metrics"
    assert spanmetrics["histogram"]["unit"] == "ms"
    assert {d["name"] for d in spanmetrics["dimensions"]} == {
        "http.route",
        "http.response.status_code",
    }


def test_only_sampled_traces_reach_jaeger(otel: Obj):
    (name, pipeline), *others = pipelines_feeding(otel, "otlp/jaeger")
    assert not others
    assert pipeline["processors"][0] == "tail_sampling", name
    # fed with every span: by the receiver, or by a connector of a pipeline that is
    for receiver in pipeline["receivers"]:
        if receiver == "otlp":
            continue
        assert receiver in otel["connectors"], receiver
        for upstream_name, upstream in pipelines_feeding(otel, receiver):
            assert_sees_every_span(upstream, f"{upstream_name} -> {receiver}")


@pytest.mark.parametrize(
    "config",
    ["compose/otel-collector.yaml", "k8s/config/otel-agent.yaml", "compose/jaeger.yaml"],
)
def test_every_component_a_pipeline_names_is_configured(config: str):
    otel = load(REPO / config)
    for name, pipeline in otel["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                defined = otel.get(kind, {}) or {}
                connectors = otel.get("connectors", {}) or {}
                assert component in defined or (kind != "processors" and component in connectors), (
                    f"{config}: pipeline {name} names {kind[:-1]} {component}, not configured"
                )
    for extension in otel["service"].get("extensions", []):
        assert extension in otel["extensions"], f"{config}: extension {extension}"


def test_jaeger_keeps_traces_30_days_in_badger_on_a_volume():
    jaeger = load(COMPOSE / "jaeger.yaml")
    backends = jaeger["extensions"]["jaeger_storage"]["backends"]
    store = jaeger["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert jaeger["extensions"]["jaeger_query"]["storage"]["traces"] == store
    badger = backends[store]["badger"]
    assert badger["ephemeral"] is False
    assert badger["ttl"]["spans"] == "720h"
    directories = set(badger["directories"].values())
    assert all(d.startswith("/badger/") for d in directories)
    compose = load(COMPOSE / "compose.yaml")
    assert "jaeger-data:/badger" in [
        v.split(" ")[0] for v in compose["services"]["jaeger"]["volumes"]
    ]
    assert "jaeger-data" in compose["volumes"]
    assert compose["services"]["jaeger-volume"]["volumes"] == ["jaeger-data:/badger"]


# --- compose: who talks to whom -----------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Obj:
    return load(COMPOSE / "compose.yaml")


def compose_listens(compose: Obj) -> dict[str, set[int]]:
    """What each compose service listens on, on the compose network."""
    ports = {name: {port} for name, port in DEFAULT_HTTP_PORTS.items()}
    ports["otel-collector"] = listening_ports(load(COMPOSE / "otel-collector.yaml"))
    ports["jaeger"] = listening_ports(load(COMPOSE / "jaeger.yaml"))
    ports["prometheus"] = {9090}
    ports["grafana"] = {3000}
    for server in compose_nats_servers(compose):
        ports[server] = {4222, 6222, 8222}
    assert set(ports) == set(compose["services"]) - {"cli", "jaeger-volume"}
    return ports


def assert_compose_reaches(compose: Obj, address: str, what: str, default: int = 0) -> None:
    host, port = host_port(address, default or None)
    listens = compose_listens(compose)
    assert host in listens, f"{what}: {host} is no compose service"
    assert port in listens[host], f"{what}: {host} does not listen on {port}"


def test_compose_wires_every_address_to_a_service_that_listens_there(compose: Obj):
    otel = load(COMPOSE / "otel-collector.yaml")
    assert_compose_reaches(compose, otel["exporters"]["otlp/jaeger"]["endpoint"], "otlp/jaeger")
    # the Medbay services' spans go to the Collector by default (empty: none)
    env = compose["x-medbay-env"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    m = re.fullmatch(r"\$\{OTEL_EXPORTER_OTLP_ENDPOINT-(.+)\}", env)
    assert m, env
    assert_compose_reaches(compose, m.group(1), "OTEL_EXPORTER_OTLP_ENDPOINT")
    for name, service in compose["services"].items():
        if service.get("image") == "medbay:local" and name != "cli":
            assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == env, name
    # Medbay's collector reads the span metrics and checks every NATS server and service
    collector = load(COMPOSE / "collector.yaml")
    assert_compose_reaches(compose, collector["spanmetrics"]["url"], "collector spanmetrics")
    checked = set()
    for check in collector["services"]:
        address = check["url"] if check["check"] == "http" else f"{check['host']}:{check['port']}"
        assert_compose_reaches(compose, address, f"collector check {check['name']}")
        checked.add(host_port(address)[0])
    assert set(compose_nats_servers(compose)) <= checked
    # Prometheus scrapes every replica of every Medbay service (found by DNS, as
    # `--scale` makes several), the Collector and Jaeger
    prometheus = load(COMPOSE / "prometheus" / "prometheus.yml")
    scraped: dict[str, str] = {}
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert_compose_reaches(compose, target, f"scrape job {job['job_name']}")
                scraped[target] = static.get("labels", {}).get("medbay_service", "")
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A", "a service's name resolves to its containers"
            relabeled = {
                r["target_label"]: r["source_labels"] for r in job.get("relabel_configs", [])
            }
            for name in dns["names"]:
                target = f"{name}:{dns['port']}"
                assert_compose_reaches(compose, target, f"scrape job {job['job_name']}")
                # __meta_dns_name is the name looked up: the compose service
                found = name if relabeled.get("medbay_service") == ["__meta_dns_name"] else ""
                scraped[target] = found
    for name, port in DEFAULT_HTTP_PORTS.items():
        assert scraped.get(f"{name}:{port}") == name, f"Prometheus does not scrape {name}"
    assert "otel-collector:8889" in scraped
    # Grafana's data sources
    for source in load(COMPOSE / "grafana/provisioning/datasources/medbay.yaml")["datasources"]:
        assert_compose_reaches(compose, source["url"], f"Grafana data source {source['name']}")


def test_compose_mounts_each_config_where_its_program_reads_it(compose: Obj):
    services = compose["services"]
    mounts = {
        "otel-collector": ("./otel-collector.yaml", "--config="),
        "jaeger": ("./jaeger.yaml", "--config="),
    }
    for name, (source, flag) in mounts.items():
        (target,) = [
            v.split(":")[1] for v in services[name]["volumes"] if v.split(":")[0] == source
        ]
        assert services[name]["command"] == [f"{flag}{target}"], name
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    rule_files = load(COMPOSE / "prometheus" / "prometheus.yml")["rule_files"]
    on_host = [
        p
        for pattern in rule_files
        for p in (COMPOSE / "prometheus").glob(pattern.removeprefix("/etc/prometheus/"))
    ]
    assert on_host == [COMPOSE / "prometheus" / "rules" / "medbay.yaml"]
    grafana = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/etc/grafana/dashboards:ro" in grafana
    (provider,) = load(COMPOSE / "grafana/provisioning/dashboards/medbay.yaml")["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    # the old in-memory Jaeger profile is gone
    assert not [s for s in services.values() if "tracing" in s.get("profiles", [])]
    # the gateway links traces to the Jaeger UI that compose publishes
    gateway = load(COMPOSE / "gateway.yaml")
    assert f"127.0.0.1:{urlsplit(gateway['jaeger_url']).port}:16686" in [
        p.split(" ")[0] for p in services["jaeger"]["ports"]
    ]


# --- Kubernetes: who talks to whom ---------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
    write_nats_credentials(copy / "secrets")
    result = run(tool("kubectl"), "kustomize", str(copy))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def service_named(rendered: list[Obj], host: str, namespace: str) -> Obj:
    """The Service a DNS name means from a pod in ``namespace``."""
    name, _, rest = host.partition(".")
    ns = rest.split(".")[0] if rest else namespace
    assert rest in ("", ns, f"{ns}.svc", f"{ns}.svc.cluster.local"), host
    found = [
        s
        for s in find(rendered, "Service")
        if s["metadata"]["name"] == name and s["metadata"]["namespace"] == ns
    ]
    assert found, f"no Service {ns}/{name} for {host}"
    return found[0]


def pods_behind(rendered: list[Obj], service: Obj) -> list[tuple[Obj, Obj]]:
    selector = service["spec"]["selector"]
    return [
        (o, pod)
        for o, pod in workloads(rendered)
        if o["metadata"]["namespace"] == service["metadata"]["namespace"]
        and selector.items() <= pod_labels(o).items()
    ]


def assert_k8s_reaches(rendered: list[Obj], address: str, namespace: str, what: str) -> Obj:
    """``address`` is a Service with that port, whose pods have the port it targets."""
    host, port = host_port(address)
    service = service_named(rendered, host, namespace)
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    assert port in ports, f"{what}: Service {host} has no port {port}"
    pods = pods_behind(rendered, service)
    assert pods, f"{what}: no pod behind Service {host}"
    target = ports[port].get("targetPort", port)
    for o, pod in pods:
        container_ports = {
            p.get("name"): p["containerPort"] for c in pod["containers"] for p in c["ports"]
        }
        assert target in container_ports or target in container_ports.values(), (what, o)
    return service


def configmap_text(rendered: list[Obj], pod: Obj, namespace: str) -> tuple[str, str]:
    """(key, text) of the one file of the ConfigMap the pod mounts as its config."""
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    name = volume["configMap"]["name"]
    (configmap,) = [
        c
        for c in find(rendered, "ConfigMap")
        if c["metadata"]["name"] == name and c["metadata"]["namespace"] == namespace
    ]
    ((key, text),) = configmap["data"].items()
    return key, text


def test_k8s_runs_the_agent_on_every_node_and_the_gateway_with_the_compose_config(
    rendered: list[Obj],
):
    kinds = {(o["kind"], o["metadata"]["name"]): pod for o, pod in workloads(rendered)}
    agent = kinds[("DaemonSet", "otel-agent")]
    gateway = kinds[("Deployment", "otel-gateway")]
    jaeger = kinds[("StatefulSet", "jaeger")]
    for pod, expected, config in (
        (agent, "otel-agent.yaml", K8S / "config" / "otel-agent.yaml"),
        (gateway, "otel-collector.yaml", COMPOSE / "otel-collector.yaml"),
        (jaeger, "jaeger.yaml", COMPOSE / "jaeger.yaml"),
    ):
        key, text = configmap_text(rendered, pod, "medbay")
        assert key == expected and text == config.read_text()
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
        assert container["args"] == [f"--config={mount['mountPath']}/{key}"]
    assert agent["tolerations"] == [{"operator": "Exists"}]
    # Jaeger's Badger store is on the claim
    (statefulset,) = [o for o in find(rendered, "StatefulSet") if o["metadata"]["name"] == "jaeger"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    (container,) = jaeger["containers"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/badger"} in container["volumeMounts"]


def test_k8s_wires_every_address_to_a_service_that_listens_there(rendered: list[Obj]):
    agent_config = load(K8S / "config" / "otel-agent.yaml")
    balancing = agent_config["exporters"]["loadbalancing"]
    assert balancing["routing_key"] == "traceID"
    dns = balancing["resolver"]["dns"]
    headless = assert_k8s_reaches(
        rendered, f"{dns['hostname']}:{dns['port']}", "medbay", "loadbalancing"
    )
    assert headless["spec"]["clusterIP"] == "None", "the agents need every gateway's address"
    assert {o["metadata"]["name"] for o, _ in pods_behind(rendered, headless)} == {"otel-gateway"}
    gateway_config = load(K8S / "config" / "otel-collector.yaml")
    jaeger = assert_k8s_reaches(
        rendered, gateway_config["exporters"]["otlp/jaeger"]["endpoint"], "medbay", "otlp/jaeger"
    )
    assert {o["metadata"]["name"] for o, _ in pods_behind(rendered, jaeger)} == {"jaeger"}
    # every Medbay service sends its spans to the agent of its node
    for o, pod in workloads(rendered):
        name = o["metadata"]["name"]
        if name not in MEDBAY_SERVICES:
            continue
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        agent = assert_k8s_reaches(
            rendered, env["OTEL_EXPORTER_OTLP_ENDPOINT"], o["metadata"]["namespace"], name
        )
        assert agent["metadata"]["name"] == "otel-agent", name
        assert agent["spec"]["internalTrafficPolicy"] == "Local"
    # the Medbay collector reads its node's agent's span metrics, checks the services
    # and each NATS server by its pod's name
    collector = load(K8S / "config" / "collector.yaml")
    assert_k8s_reaches(rendered, collector["spanmetrics"]["url"], "medbay-node", "spanmetrics")
    nats_checked = []
    for check in collector["services"]:
        if check["check"] == "http":
            assert_k8s_reaches(rendered, check["url"], "medbay-node", check["name"])
        else:
            assert (check["check"], check["port"]) == ("tcp", 4222), check
            url = f"nats://{check['host']}:{check['port']}"
            nats_checked.append(nats_pod_addressed(rendered, url, "medbay-node"))
    (nats,) = [o for o in find(rendered, "StatefulSet") if o["metadata"]["name"] == "nats"]
    assert nats_checked == [f"nats-{i}" for i in range(nats["spec"]["replicas"])]


def test_k8s_network_policies_let_the_spans_through_and_nothing_else(rendered: list[Obj]):
    net = Network(rendered)
    pods = {
        o["metadata"]["name"]: (o["metadata"]["namespace"], pod_labels(o))
        for o, _ in workloads(rendered)
    }
    app = ("shop", {"app": "checkout"})  # an application in a namespace of its own
    for sender in (app, pods["detector"], pods["collector"], pods["gateway"]):
        assert net.allows(sender, pods["otel-agent"], (4318, "otlp-http")), sender
        assert net.allows(sender, pods["otel-agent"], (4317, "otlp-grpc")), sender
    assert net.allows(pods["collector"], pods["otel-agent"], (8889, "spanmetrics"))
    assert not net.allows(app, pods["otel-agent"], (8889, "spanmetrics"))
    assert net.allows(pods["otel-agent"], pods["otel-gateway"], (4317, "otlp-grpc"))
    assert not net.allows(app, pods["otel-gateway"], (4317, "otlp-grpc"))
    assert net.allows(pods["otel-gateway"], pods["jaeger"], (4317, "otlp-grpc"))
    assert not net.allows(app, pods["jaeger"], (4317, "otlp-grpc"))
    assert not net.allows(app, pods["jaeger"], (16686, "ui"))


@pytest.fixture(scope="module")
def monitoring() -> list[Obj]:
    result = run(tool("kubectl"), "kustomize", str(K8S / "monitoring"))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_k8s_monitoring_ships_the_rules_scrape_config_and_dashboards(
    monitoring: list[Obj], rendered: list[Obj]
):
    (rule,) = find(monitoring, "PrometheusRule")
    assert (
        rule["spec"]
        == yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())["spec"]
    )
    (dashboards,) = find(monitoring, "ConfigMap")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {p.name: p.read_text() for p in (COMPOSE / "grafana" / "dashboards").glob("*.json")}
    assert dashboards["data"] == shipped, "k8s/monitoring/dashboards differ from compose's"
    # every Medbay service is scraped, labelled medbay_service like compose's targets
    monitors = {m["metadata"]["name"]: m for m in find(monitoring, "PodMonitor")}
    medbay = monitors["medbay"]["spec"]
    (endpoint,) = medbay["podMetricsEndpoints"]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "targetLabel": "medbay_service",
    } in endpoint["relabelings"]
    scraped = set()
    for o, pod in workloads(rendered):
        ns, labels = o["metadata"]["namespace"], pod_labels(o)
        if ns in medbay["namespaceSelector"]["matchNames"] and all(
            labels.get(e["key"]) in e["values"] for e in medbay["selector"]["matchExpressions"]
        ):
            assert endpoint["port"] in {p.get("name") for p in pod["containers"][0]["ports"]}
            scraped.add(o["metadata"]["name"])
    assert scraped == set(MEDBAY_SERVICES)
    # Prometheus in `monitoring` may scrape them
    net = Network([*rendered, *find(monitoring, "NetworkPolicy")])
    prometheus = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
    for o, pod in workloads(rendered):
        name = o["metadata"]["name"]
        if name in MEDBAY_SERVICES:
            port = pod["containers"][0]["ports"][0]["containerPort"]
            assert net.allows(
                prometheus, (o["metadata"]["namespace"], pod_labels(o)), (port, "http")
            )
    (gateway,) = [
        (o["metadata"]["namespace"], pod_labels(o))
        for o, _ in workloads(rendered)
        if o["metadata"]["name"] == "otel-gateway"
    ]
    assert net.allows(prometheus, gateway, (8889, "spanmetrics"))


# --- metric names: what the rules and dashboards read exists --------------------------------

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names, strings, ranges or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = m.group(0)
        if word.lower() in KEYWORDS or text[m.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names(
        'sum by (host, service) (rate(medbay_x_total{a="b", c=~"$d"}[$__rate_interval])) '
        "unless on (host) count by (host) (medbay_y) > 0.5 * medbay_z offset 5m"
    ) == {"medbay_x_total", "medbay_y", "medbay_z"}
    assert metric_names("histogram_quantile(0.95, sum(rate(h_bucket[5m])) by (le))") == {"h_bucket"}
    assert metric_names('up{medbay_service!=""} == 0') == {"up"}


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page exports, or will once its labels are used."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names |= {s.name for s in family.samples}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def send_spans(port: int) -> None:
    """A client in `frontend` calling `checkout`, one call in four failing, sent by the
    official SDK's unmodified OTLP/HTTP exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    def provider(service: str) -> TracerProvider:
        made = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=5)
        made.add_span_processor(SimpleSpanProcessor(exporter))
        return made

    frontend, checkout = provider("frontend"), provider("checkout")
    try:
        for i in range(8):
            with frontend.get_tracer("t").start_as_current_span(
                "GET /checkout", kind=SpanKind.CLIENT
            ) as call:
                context = set_span_in_context(call)
                with checkout.get_tracer("t").start_as_current_span(
                    "POST /checkout", context=context, kind=SpanKind.SERVER
                ) as served:
                    if i % 4 == 0:
                        served.set_status(Status(StatusCode.ERROR, "boom"))
    finally:
        frontend.shutdown()
        checkout.shutdown()


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


def referenced_metrics() -> dict[str, set[str]]:
    """Metric names per file: the rules files and every dashboard panel."""
    found: dict[str, set[str]] = {}
    for path in (
        COMPOSE / "prometheus" / "rules" / "medbay.yaml",
        K8S / "monitoring" / "prometheusrule.yaml",
    ):
        document = load(path)
        groups = document["spec"]["groups"] if "spec" in document else document["groups"]
        found[path.name] = {
            name for g in groups for rule in g["rules"] for name in metric_names(rule["expr"])
        }
    for path in sorted((COMPOSE / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        exprs += [
            re.sub(r"^label_values\((.*), *\w+\)$", r"\1", v["query"]["query"])
            for v in dashboard["templating"]["list"]
        ]
        found[path.name] = {name for expr in exprs for name in metric_names(expr)}
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_metric_the_rules_and_dashboards_read_is_exported(
    services: StartService, redis_url: str, postgres_url: str, tmp_path: Path
):
    """Medbay's six services run on a real nats-server; the collector watches a Redis, a
    PostgreSQL, a directory and a TCP port and receives spans, so that every
    medbay_<sample> gauge a rule or panel names shows on its real /metrics."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.config_set("maxmemory", str(64 * 1024 * 1024))  # redis_memory_percent
    client.close()
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "f").write_bytes(b"x" * 1000)
    otlp_port = free_port()
    web_port = free_port()
    listener = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(web_port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "host": "stack-host",
                "interval_seconds": 1,
                "top_processes": 3,
                "startup_grace_seconds": 0,
                "services": [
                    {"name": "web", "check": "tcp", "host": "127.0.0.1", "port": web_port},
                    {"name": "cache", "check": "redis", "url": redis_url},
                    {"name": "db", "check": "postgres", "dsn": postgres_url},
                ],
                "directories": [{"name": "watched", "path": str(watched), "budget_bytes": 10_000}],
                "otlp": {"host": "127.0.0.1", "port": otlp_port, "min_requests_for_ratio": 1},
            }
        )
    )
    gateway_config = tmp_path / "gateway.yaml"
    gateway_config.write_text(
        "tokens: [{name: ops, token: 'a-token-of-16-chars-or-more', role: operator}]\n"
    )
    try:
        running = {
            "collector": services("collector", "--config", str(config)),
            "detector": services("detector"),
            "planner": services("planner", wait_healthy=False),
            "executor": services("executor", wait_healthy=False),
        }
        running["planner"].wait_healthy(120)
        running["executor"].wait_healthy(120)
        running["approver"] = services("approver")
        running["gateway"] = services("gateway", "--config", str(gateway_config))

        referenced = referenced_metrics()
        wanted = set().union(*referenced.values())
        medbay_metrics = {name for name in wanted if name.startswith("medbay_")}
        exported: set[str] = set()
        deadline = time.monotonic() + 120
        while True:
            send_spans(otlp_port)
            exported = set()
            for proc in running.values():
                exported |= exported_names(scrape(proc.port))
            if medbay_metrics <= exported or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        listener.terminate()
        listener.wait(10)

    known = exported | OTEL_CONNECTOR_METRICS | PROMETHEUS_SERIES
    unknown = {f: sorted(names - known) for f, names in referenced.items() if names - known}
    assert not unknown, f"metrics no Medbay service exports: {unknown}"
    # the checks are not vacuous: each source names metrics of its own
    assert all(referenced.values()), referenced
    assert "medbay_span_service_errors_per_second" in referenced["medbay.yaml"]
    assert "medbay_consumer_messages_total" in referenced["medbay.yaml"]


def test_the_connector_metrics_the_dashboards_read_are_documented():
    docs = (REPO / "docs" / "observability.md").read_text()
    for name in OTEL_CONNECTOR_METRICS:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base in docs, f"{base} is not in docs/observability.md"


# --- Grafana and Prometheus files -----------------------------------------------------------


def dashboards() -> Iterator[tuple[Path, Obj]]:
    for path in sorted((COMPOSE / "grafana" / "dashboards").glob("*.json")):
        yield path, json.loads(path.read_text())


def test_grafana_dashboards_use_the_provisioned_data_sources():
    sources = load(COMPOSE / "grafana/provisioning/datasources/medbay.yaml")["datasources"]
    uids = {s["uid"]: s["type"] for s in sources}
    assert uids == {"prometheus": "prometheus", "jaeger": "jaeger"}
    titles = set()
    found = {path.name for path, _ in dashboards()}
    assert found == {"medbay-pipeline.json", "medbay-red.json", "medbay-remediation.json"}
    for path, dashboard in dashboards():
        assert dashboard["uid"] == path.stem and dashboard["title"] not in titles
        titles.add(dashboard["title"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            where = f"{path.name}: {panel['title']}"
            refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            refs += [v["datasource"] for v in dashboard["templating"]["list"]]
            for ref in refs:
                assert uids.get(ref["uid"]) == ref["type"], where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert metric_names(target["expr"]), where
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
                assert used <= variables, (where, used - variables)
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, where


def test_the_prometheus_config_is_complete():
    prometheus = load(COMPOSE / "prometheus" / "prometheus.yml")
    assert set(prometheus) == {"global", "rule_files", "scrape_configs"}
    for key in ("scrape_interval", "evaluation_interval"):
        assert re.fullmatch(r"\d+(ms|s|m|h)", prometheus["global"][key]), key
    jobs = [job["job_name"] for job in prometheus["scrape_configs"]]
    assert len(jobs) == len(set(jobs))
    # the alerting rules count batches of 5 s: rules are evaluated at least that often
    assert prometheus["global"]["evaluation_interval"] == "5s"
