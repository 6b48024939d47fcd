"""The executor's action backends, chosen per target in its config.

A target is one entry of the config's ``targets`` mapping, validated strictly
into one of the models below by its ``kind``; any kind may list ``covers``, the
other names it answers to in issues (see ``medbay.executor.catalog``).
``perform(action, params, dry_run=...)`` does a plan step on it: it refuses
(ActionRefused) an action the kind does not support or params the action does
not take, and in dry-run only inspects, read-only, and says exactly what it
would do. Commands run in a minimal environment (``base.command_env``); command
lines in outputs are redacted (``medbay.common.redact``).

.. code-block:: yaml

    targets:
      web: {kind: process, command: [python3, -m, http.server, "8080"], pidfile: /run/web.pid}
      api: {kind: process, command: [/opt/api/run, --port, "9000"], user: api, env: {TZ: UTC}}
      cache: {kind: redis, url: "redis://127.0.0.1:6379/0", pattern: "cache:*", covers: [sessions]}
      logs: {kind: files, directories: [/var/log/app], globs: ["*.log"], keep: 5}
      oncall: {kind: notifier, via: telegram}
      chat: {kind: notifier, via: webhook, url: "https://chat.example.com/hooks/T0"}
"""

from typing import Annotated

from pydantic import Field

from medbay.executor.targets.base import ActionRefused, StepOutcome, Target, allowed_params
from medbay.executor.targets.commands import CommandTarget, SystemdTarget
from medbay.executor.targets.datastores import PostgresTarget, RedisTarget
from medbay.executor.targets.files import FilesTarget
from medbay.executor.targets.notifier import NotifierTarget
from medbay.executor.targets.orchestrators import DockerTarget, KubernetesTarget
from medbay.executor.targets.processes import ProcessNameTarget, ProcessTarget

TargetSpec = Annotated[
    ProcessTarget
    | SystemdTarget
    | DockerTarget
    | KubernetesTarget
    | RedisTarget
    | PostgresTarget
    | FilesTarget
    | ProcessNameTarget
    | CommandTarget
    | NotifierTarget,
    Field(discriminator="kind"),
]

__all__ = [
    "ActionRefused",
    "CommandTarget",
    "DockerTarget",
    "FilesTarget",
    "KubernetesTarget",
    "NotifierTarget",
    "PostgresTarget",
    "ProcessNameTarget",
    "ProcessTarget",
    "RedisTarget",
    "StepOutcome",
    "SystemdTarget",
    "Target",
    "TargetSpec",
    "allowed_params",
]
