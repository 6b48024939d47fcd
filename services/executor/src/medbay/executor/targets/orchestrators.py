"""Containers and deployments: a Docker container, a Kubernetes deployment.

Both clients block, so each call runs in a thread with a request timeout.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import docker
import docker.errors
import urllib3.exceptions
from docker.models.containers import Container
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import Field, model_validator

from medbay.common.events import ActionName
from medbay.executor.targets.base import ActionRefused, StepOutcome, Target, in_thread

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
"""The pod-template annotation ``kubectl rollout restart`` sets; changing it rolls the pods."""

MERGE_PATCH = "application/merge-patch+json"

DnsLabel = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
DnsName = Annotated[str, Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


class DockerTarget(Target):
    """restart_service restarts a container through the Docker Engine API.

    ``base_url`` is e.g. ``unix:///var/run/docker.sock`` or ``tcp://host:2375``;
    without it the client is configured from the environment (DOCKER_HOST...).
    """

    kind: Literal["docker"]
    container: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Name or ID.")
    base_url: str | None = Field(default=None, min_length=1)
    stop_timeout: int = Field(default=10, ge=0, le=600, description="SIGKILL after this.")
    api_timeout: int = Field(default=30, ge=1, le=600, description="Per API request, seconds.")

    supports: ClassVar[frozenset[ActionName]] = frozenset({"restart_service"})
    system_errors: ClassVar[tuple[type[Exception], ...]] = (OSError, docker.errors.DockerException)

    def derived_covers(self) -> list[str]:
        return [self.container]

    def _client(self) -> docker.DockerClient:
        if self.base_url is None:
            return docker.from_env(timeout=self.api_timeout)
        return docker.DockerClient(base_url=self.base_url, timeout=self.api_timeout)

    def _describe(self, container: Container) -> str:
        return f"container {container.name} (ID {container.short_id}, {container.status})"

    def _restart(self, dry_run: bool) -> StepOutcome:
        client = self._client()
        try:
            container = client.containers.get(self.container)
            before = self._describe(container)
            if dry_run:
                return StepOutcome(
                    True, f"would restart {before} with a {self.stop_timeout} s stop timeout"
                )
            container.restart(timeout=self.stop_timeout)
            container.reload()
            return StepOutcome(
                container.status == "running", f"restarted {before}; now {container.status}"
            )
        finally:
            client.close()

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        return await in_thread(lambda _: self._restart(dry_run))


class KubernetesTarget(Target):
    """A deployment: rollout restart, and scaling within [min_replicas, max_replicas].

    The client is configured from ``kubeconfig`` (default: the usual
    ``~/.kube/config`` or KUBECONFIG), optionally one ``context`` of it, or from
    the pod's service account with ``in_cluster: true``. It needs get and patch
    on ``deployments/scale`` and patch on ``deployments``.
    """

    kind: Literal["kubernetes"]
    namespace: DnsLabel = "default"
    deployment: DnsName
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    in_cluster: bool = False
    kubeconfig: Path | None = None
    context: str | None = Field(default=None, min_length=1)
    request_timeout: float = Field(default=30.0, gt=0, le=600)

    supports: ClassVar[frozenset[ActionName]] = frozenset(
        {"restart_service", "scale_up", "scale_down"}
    )
    system_errors: ClassVar[tuple[type[Exception], ...]] = (
        OSError,
        ApiException,
        ConfigException,
        urllib3.exceptions.HTTPError,
    )

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesTarget:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("in_cluster: true takes no kubeconfig or context")
        return self

    def derived_covers(self) -> list[str]:
        return [self.deployment, f"{self.namespace}/{self.deployment}"]

    @property
    def _name(self) -> str:
        return f"deployment {self.namespace}/{self.deployment}"

    def _api_client(self) -> k8s.ApiClient:
        configuration = k8s.Configuration()
        if self.in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=None if self.kubeconfig is None else str(self.kubeconfig),
                context=self.context,
                client_configuration=configuration,
                persist_config=False,
            )
        return k8s.ApiClient(configuration)

    def _act(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        with self._api_client() as api_client:
            apps = k8s.AppsV1Api(api_client)
            scale = apps.read_namespaced_deployment_scale(
                self.deployment, self.namespace, _request_timeout=self.request_timeout
            )
            current = (scale.spec.replicas or 0) if scale.spec else 0
            if action == "restart_service":
                return self._rollout_restart(apps, current, dry_run)
            step = params.get("replicas", 1) * (1 if action == "scale_up" else -1)
            wanted = current + step
            if not self.min_replicas <= wanted <= self.max_replicas:
                raise ActionRefused(
                    f"{action} by {abs(step)} would take {self._name} from {current} to {wanted} "
                    f"replicas, outside its bounds [{self.min_replicas}, {self.max_replicas}]"
                )
            change = f"{self._name} from {current} to {wanted} replicas"
            if dry_run:
                return StepOutcome(True, f"would scale {change}")
            version = scale.metadata.resource_version if scale.metadata else None
            apps.patch_namespaced_deployment_scale(
                self.deployment,
                self.namespace,
                # the resourceVersion makes the patch fail if the scale changed meanwhile
                {"metadata": {"resourceVersion": version}, "spec": {"replicas": wanted}},
                _content_type=MERGE_PATCH,
                _request_timeout=self.request_timeout,
            )
            return StepOutcome(True, f"scaled {change}")

    def _rollout_restart(self, apps: k8s.AppsV1Api, replicas: int, dry_run: bool) -> StepOutcome:
        if dry_run:
            return StepOutcome(
                True,
                f"would rollout-restart {self._name} ({replicas} replicas) by setting "
                f"its pod template annotation {RESTARTED_AT}",
            )
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        apps.patch_namespaced_deployment(
            self.deployment,
            self.namespace,
            patch,
            _content_type=MERGE_PATCH,
            _request_timeout=self.request_timeout,
            _preload_content=False,
        )
        return StepOutcome(
            True, f"rollout-restarted {self._name} ({replicas} replicas): {RESTARTED_AT}={now}"
        )

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        return await in_thread(lambda _: self._act(action, params, dry_run))
