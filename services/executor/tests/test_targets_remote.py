"""Docker, Kubernetes and webhook targets against a local fake HTTP server.

No Docker daemon or Kubernetes cluster runs here: the real clients (docker SDK,
kubernetes client, httpx) talk to a small server that answers like the Docker
Engine API and the Kubernetes API do for the calls used, and records the
requests. So these tests check the requests, not a real restart or rollout.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from medbay.executor.targets import ActionRefused, DockerTarget, KubernetesTarget, NotifierTarget

Reply = tuple[int, Any]
Route = Callable[["Request"], Reply]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Names in lower case."""
    body: Any


@dataclass
class FakeApi:
    """Answers ``routes[(method, path)]``; 404 for anything else. Records every request."""

    url: str = ""
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def calls(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests if method in (None, r.method)]


def serve(api: FakeApi) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self) -> None:
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                path,
                query,
                {name.lower(): value for name, value in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            api.requests.append(request)
            route = api.routes.get((self.command, path))
            status, body = route(request) if route else (404, {"message": f"no {path}"})
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = handle_any

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    server = serve(api)
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield api
    server.shutdown()
    server.server_close()
    thread.join(10)


# Docker Engine API

DOCKER_ID = "4f1c2a9e8b7d" + "0" * 52


def docker_daemon(api: FakeApi, status_after: str = "running") -> None:
    state = {"status": "running"}

    def inspect(_: Request) -> Reply:
        body = {"Id": DOCKER_ID, "Name": "/web", "State": {"Status": state["status"]}}
        return 200, body

    def restart(_: Request) -> Reply:
        state["status"] = status_after
        return 204, None

    api.routes[("GET", "/version")] = lambda _: (200, {"ApiVersion": "1.44", "Version": "26"})
    for ref in ("web", DOCKER_ID):
        api.routes[("GET", f"/v1.44/containers/{ref}/json")] = inspect
    api.routes[("POST", f"/v1.44/containers/{DOCKER_ID}/restart")] = restart


def docker_target(api: FakeApi, container: str = "web") -> DockerTarget:
    base_url = api.url.replace("http://", "tcp://")
    return DockerTarget(kind="docker", container=container, base_url=base_url, stop_timeout=7)


async def test_docker_restart(fake_api: FakeApi) -> None:
    docker_daemon(fake_api)
    outcome = await docker_target(fake_api).perform("restart_service", {}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output == "restarted container web (ID 4f1c2a9e8b7d, running); now running"
    [restart] = [r for r in fake_api.requests if r.method == "POST"]
    assert restart.path == f"/v1.44/containers/{DOCKER_ID}/restart"
    assert restart.query == "t=7"


async def test_docker_container_not_running_after_restart(fake_api: FakeApi) -> None:
    docker_daemon(fake_api, status_after="restarting")
    outcome = await docker_target(fake_api).perform("restart_service", {}, dry_run=False)
    assert not outcome.ok
    assert outcome.output.endswith("now restarting")


async def test_docker_dry_run_only_inspects(fake_api: FakeApi) -> None:
    docker_daemon(fake_api)
    outcome = await docker_target(fake_api).perform("restart_service", {}, dry_run=True)
    assert outcome.ok
    assert outcome.output == (
        "would restart container web (ID 4f1c2a9e8b7d, running) with a 7 s stop timeout"
    )
    assert fake_api.calls("POST") == []


async def test_docker_unknown_container(fake_api: FakeApi) -> None:
    docker_daemon(fake_api)
    outcome = await docker_target(fake_api, "db").perform("restart_service", {}, dry_run=False)
    assert not outcome.ok
    assert outcome.output.startswith("failed running restart_service: NotFound: 404")


async def test_docker_daemon_unreachable() -> None:
    target = DockerTarget(kind="docker", container="web", base_url="tcp://127.0.0.1:1")
    outcome = await target.perform("restart_service", {}, dry_run=True)
    assert not outcome.ok
    assert outcome.output.startswith("failed inspecting for restart_service: DockerException")


# Kubernetes API

SCALE = "/apis/apps/v1/namespaces/shop/deployments/web/scale"
DEPLOYMENT = "/apis/apps/v1/namespaces/shop/deployments/web"


def cluster(api: FakeApi, tmp_path: Path, replicas: int) -> Path:
    """Serve a deployment shop/web with ``replicas``; the kubeconfig that reaches it."""
    state = {"replicas": replicas}

    def scale(_: Request) -> Reply:
        return 200, {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42"},
            "spec": {"replicas": state["replicas"]},
        }

    def patch_scale(request: Request) -> Reply:
        state["replicas"] = request.body["spec"]["replicas"]
        return scale(request)

    api.routes[("GET", SCALE)] = scale
    api.routes[("PATCH", SCALE)] = patch_scale
    api.routes[("PATCH", DEPLOYMENT)] = lambda _: (200, {"kind": "Deployment"})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "ops", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ops"}}],
                "current-context": "fake",
            }
        )
    )
    return kubeconfig


def deployment(kubeconfig: Path, **fields: Any) -> KubernetesTarget:
    return KubernetesTarget.model_validate(
        {
            "kind": "kubernetes",
            "namespace": "shop",
            "deployment": "web",
            "kubeconfig": kubeconfig,
            **fields,
        }
    )


async def test_kubernetes_scale_up_within_bounds(fake_api: FakeApi, tmp_path: Path) -> None:
    target = deployment(cluster(fake_api, tmp_path, replicas=2), max_replicas=5)

    outcome = await target.perform("scale_up", {"replicas": 2}, dry_run=False)

    assert outcome.ok, outcome.output
    assert outcome.output == "scaled deployment shop/web from 2 to 4 replicas"
    patch = fake_api.requests[-1]
    assert (patch.method, patch.path) == ("PATCH", SCALE)
    assert patch.headers["content-type"] == "application/merge-patch+json"
    assert patch.headers["authorization"] == "Bearer t0ken"
    assert patch.body == {"metadata": {"resourceVersion": "42"}, "spec": {"replicas": 4}}


async def test_kubernetes_scale_down_by_one(fake_api: FakeApi, tmp_path: Path) -> None:
    target = deployment(cluster(fake_api, tmp_path, replicas=3), min_replicas=2)
    outcome = await target.perform("scale_down", {}, dry_run=False)
    assert outcome.ok, outcome.output
    assert fake_api.requests[-1].body["spec"] == {"replicas": 2}


@pytest.mark.parametrize(
    ("action", "params", "replicas", "words"),
    [
        ("scale_up", {"replicas": 3}, 4, "from 4 to 7 replicas, outside its bounds [1, 6]"),
        ("scale_up", {}, 6, "from 6 to 7 replicas"),
        ("scale_down", {}, 1, "scale_down by 1 would take deployment shop/web from 1 to 0"),
    ],
)
async def test_kubernetes_refuses_to_scale_beyond_bounds(
    fake_api: FakeApi,
    tmp_path: Path,
    action: Any,
    params: dict[str, Any],
    replicas: int,
    words: str,
) -> None:
    target = deployment(cluster(fake_api, tmp_path, replicas), min_replicas=1, max_replicas=6)
    for dry_run in (True, False):
        with pytest.raises(ActionRefused) as caught:
            await target.perform(action, params, dry_run=dry_run)
        assert words in str(caught.value)
    assert fake_api.calls("PATCH") == []


async def test_kubernetes_dry_runs_only_read(fake_api: FakeApi, tmp_path: Path) -> None:
    target = deployment(cluster(fake_api, tmp_path, replicas=2))
    scale = await target.perform("scale_up", {}, dry_run=True)
    restart = await target.perform("restart_service", {}, dry_run=True)
    assert scale.output == "would scale deployment shop/web from 2 to 3 replicas"
    assert restart.output == (
        "would rollout-restart deployment shop/web (2 replicas) by setting its pod template "
        "annotation kubectl.kubernetes.io/restartedAt"
    )
    assert fake_api.calls() == [f"GET {SCALE}", f"GET {SCALE}"]


async def test_kubernetes_rollout_restart(fake_api: FakeApi, tmp_path: Path) -> None:
    target = deployment(cluster(fake_api, tmp_path, replicas=2))
    outcome = await target.perform("restart_service", {}, dry_run=False)
    assert outcome.ok, outcome.output
    patch = fake_api.requests[-1]
    assert (patch.method, patch.path) == ("PATCH", DEPLOYMENT)
    assert patch.headers["content-type"] == "application/merge-patch+json"
    annotations = patch.body["spec"]["template"]["metadata"]["annotations"]
    stamp = annotations["kubectl.kubernetes.io/restartedAt"]
    assert stamp.endswith("Z") and "T" in stamp
    assert outcome.output.endswith(f"kubectl.kubernetes.io/restartedAt={stamp}")


async def test_kubernetes_missing_deployment(fake_api: FakeApi, tmp_path: Path) -> None:
    kubeconfig = cluster(fake_api, tmp_path, replicas=2)
    target = deployment(kubeconfig).model_copy(update={"deployment": "api"})
    outcome = await target.perform("restart_service", {}, dry_run=False)
    assert not outcome.ok
    assert outcome.output.startswith("failed running restart_service: NotFoundException")


async def test_kubernetes_bad_kubeconfig(tmp_path: Path) -> None:
    target = deployment(tmp_path / "missing")
    outcome = await target.perform("scale_up", {}, dry_run=True)
    assert not outcome.ok
    assert "ConfigException" in outcome.output


# Webhook


async def test_webhook_posts_the_alert(fake_api: FakeApi) -> None:
    fake_api.routes[("POST", "/hooks/secret-token")] = lambda _: (200, {"ok": True})
    target = NotifierTarget(
        kind="notifier",
        via="webhook",
        url=f"{fake_api.url}/hooks/secret-token",
        headers={"Authorization": "Bearer abc"},
    )

    dry = await target.perform("alert_human", {"message": "db1 down"}, dry_run=True)
    assert dry.output == f"would POST the alert to {fake_api.url}: db1 down"
    assert fake_api.requests == []

    outcome = await target.perform("alert_human", {"message": "db1 down"}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output == f"posted the alert to {fake_api.url} (HTTP 200): db1 down"
    [post] = fake_api.requests
    assert post.body == {"text": "db1 down", "source": "medbay"}
    assert post.headers["authorization"] == "Bearer abc"
    assert "secret-token" not in dry.output + outcome.output


async def test_webhook_error_status_fails(fake_api: FakeApi) -> None:
    target = NotifierTarget(kind="notifier", via="webhook", url=f"{fake_api.url}/gone")
    outcome = await target.perform("alert_human", {"message": "x"}, dry_run=False)
    assert not outcome.ok
    assert outcome.output == f"the webhook refused the alert: {fake_api.url} (HTTP 404): x"
