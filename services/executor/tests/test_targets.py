"""Target config validation and step refusals: what is checked before anything is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from medbay.common.actions import ACTIONS
from medbay.executor.targets import (
    ActionRefused,
    CommandTarget,
    FilesTarget,
    KubernetesTarget,
    NotifierTarget,
    ProcessNameTarget,
    ProcessTarget,
    RedisTarget,
    StepOutcome,
    Target,
    TargetSpec,
    allowed_params,
)

TARGETS = TypeAdapter(dict[str, TargetSpec])

CONFIG = """
web: {kind: process, command: [python, -m, http.server, "8080"], pidfile: /run/web.pid,
      argv: [python3, -m, http.server], match_argv_prefix: true, user: root,
      env: {PYTHONUNBUFFERED: "1"}, log_file: /var/log/web.log, stop_timeout: 5}
worker: {kind: process, command: [/opt/worker/run, --queue, jobs], user: 0}
nginx: {kind: systemd, unit: nginx.service, env: {SYSTEMD_COLORS: "0"}}
api: {kind: docker, container: api, base_url: "unix:///var/run/docker.sock"}
shop: {kind: kubernetes, namespace: shop, deployment: web, min_replicas: 2, max_replicas: 6}
cache: {kind: redis, url: "redis://127.0.0.1:6379/0", pattern: "cache:*"}
db: {kind: postgres, dsn: "postgresql://medbay@127.0.0.1/app", max_query_seconds: 30,
     analyze_tables: [orders, public.customers]}
tmp: {kind: files, directories: [/var/tmp/app], globs: ["*.tmp"], older_than_days: 3}
logs: {kind: files, directories: [/var/log/app], globs: ["*.log"], keep: 3, compress: true}
hogs: {kind: process_name, names: [stress, "yes"], user: "0"}
host: {kind: command, commands: {reboot: [systemctl, reboot], scale_up: [/opt/scale.sh, up]},
       env: {PATH: /opt/bin, ZONE: eu}}
oncall: {kind: notifier, via: webhook, url: "https://chat.example.com/hooks/T0"}
pager: {kind: notifier, via: command, command: [/usr/local/bin/page], env: {TEAM: ops}}
log: {kind: notifier}
"""


def errors_of(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        TARGETS.validate_python({"t": data})
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


def test_every_kind_validates_from_yaml() -> None:
    targets = TARGETS.validate_python(yaml.safe_load(CONFIG))
    kinds = {name: type(target).__name__ for name, target in targets.items()}
    assert kinds["web"] == "ProcessTarget"
    assert kinds["shop"] == "KubernetesTarget"
    assert kinds["log"] == "NotifierTarget"
    assert len(set(kinds.values())) == 10
    web, worker, hogs = targets["web"], targets["worker"], targets["hogs"]
    assert isinstance(web, ProcessTarget) and isinstance(worker, ProcessTarget)
    assert isinstance(hogs, ProcessNameTarget)
    assert (web.user, worker.user, hogs.user) == (0, 0, 0)
    assert isinstance(targets["db"], Target)
    assert targets["cache"].supports == frozenset({"clear_cache"})


def test_every_action_has_a_backend() -> None:
    supported = set().union(*(t.supports for t in Target.__subclasses__()))
    assert supported == set(ACTIONS)


def test_unknown_kind_names_the_kinds() -> None:
    [(loc, msg)] = errors_of({"kind": "ftp"})
    assert loc == ("t",)
    assert "'process'" in msg and "'notifier'" in msg


def test_unknown_field_is_named() -> None:
    [(loc, msg)] = errors_of({"kind": "redis", "url": "redis://h/0", "patern": "x"})
    assert loc == ("t", "redis", "patern")
    assert "Extra inputs" in msg


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"kind": "process", "command": ["x"], "match": "x"}, None, "match (a part of the"),
        ({"kind": "process", "command": []}, "command", "at least 1"),
        ({"kind": "process", "command": ["x"], "argv": []}, "argv", "at least 1"),
        (
            {"kind": "process", "command": ["python"], "match_argv_prefix": True},
            None,
            "at least 2 elements: ['python'] would match every process running python",
        ),
        (
            {"kind": "process", "command": ["x", "y"], "pidfile": "/p", "match_argv_prefix": True},
            None,
            "match_argv_prefix needs argv when pidfile is set",
        ),
        ({"kind": "process", "command": ["x"], "user": "no-such-user-x"}, "user", "no user named"),
        ({"kind": "process", "command": ["x"], "user": True}, "user", "valid integer"),
        ({"kind": "process_name", "names": ["x"], "user": -1}, "user", "greater than or equal"),
        ({"kind": "command", "commands": {"reboot": ["x"]}, "env": {"A B": "1"}}, "env", "pattern"),
        ({"kind": "notifier", "env": {"A": "1"}}, None, "env is only for via: command"),
        ({"kind": "redis", "url": "http://h"}, "url", "pattern"),
        ({"kind": "files", "directories": ["tmp"], "globs": ["*"]}, "directories", "absolute"),
        ({"kind": "files", "directories": ["/"], "globs": ["*"]}, "directories", "root"),
        ({"kind": "files", "directories": ["/x"], "globs": ["a/*.log"]}, "globs", "pattern"),
        (
            {"kind": "kubernetes", "deployment": "w", "min_replicas": 5, "max_replicas": 2},
            None,
            "min_replicas (5) is above max_replicas (2)",
        ),
        ({"kind": "kubernetes", "deployment": "Web_1"}, "deployment", "pattern"),
        (
            {"kind": "kubernetes", "deployment": "w", "in_cluster": True, "kubeconfig": "/k"},
            None,
            "in_cluster",
        ),
        ({"kind": "notifier", "via": "webhook"}, None, "via webhook needs url"),
        ({"kind": "notifier", "url": "https://h/x"}, None, "url is only for via: webhook"),
        ({"kind": "command", "commands": {"restart": ["x"]}}, "commands", "restart_service"),
        ({"kind": "command", "commands": {"reboot": []}}, "commands", "at least 1"),
        ({"kind": "process_name", "names": []}, "names", "at least 1"),
        ({"kind": "systemd", "unit": "-x.service"}, "unit", "pattern"),
        ({"kind": "postgres", "dsn": "x", "analyze_tables": ["a;drop"]}, "analyze_tables", ""),
        ({"kind": "notifier", "via": "telegram", "url": "https://h/x"}, None, "url is only for"),
        ({"kind": "notifier", "via": "log", "headers": {"A": "b"}}, None, "headers are only for"),
        ({"kind": "notifier", "via": "sms"}, "via", "'telegram'"),
        (
            {"kind": "redis", "url": "redis://h/0", "covers": ["cache", "cache"]},
            "covers",
            "more than once",
        ),
        ({"kind": "redis", "url": "redis://h/0", "covers": [" cache"]}, "covers", "pattern"),
        ({"kind": "redis", "url": "redis://h/0", "covers": [""]}, "covers", "at least 1"),
        ({"kind": "redis", "url": "redis://h/0", "covers": "cache"}, "covers", "valid list"),
    ],
)
def test_bad_config_names_the_field(data: dict[str, Any], field: str | None, words: str) -> None:
    problems = errors_of(data)
    assert problems
    loc, msg = problems[0]
    assert loc[:2] == ("t", data["kind"])
    if field is not None:
        assert loc[2] == field
    assert words in msg


def test_targets_are_frozen() -> None:
    target = RedisTarget(kind="redis", url="redis://h/0")
    with pytest.raises(ValidationError):
        target.pattern = "x"  # type: ignore[misc]


async def test_unsupported_action_is_refused() -> None:
    # an unreachable address: a refusal must come before any connection
    target = RedisTarget(kind="redis", url="redis://127.0.0.1:1/0")
    with pytest.raises(ActionRefused, match="a redis target cannot restart_service"):
        await target.perform("restart_service", {}, dry_run=False)
    with pytest.raises(ActionRefused, match="it supports: clear_cache"):
        await target.perform("reboot", {}, dry_run=True)


async def test_unknown_action_is_refused() -> None:
    target = RedisTarget(kind="redis", url="redis://127.0.0.1:1/0")
    with pytest.raises(ActionRefused, match="unknown action 'flush'"):
        await target.perform("flush", {}, dry_run=True)  # type: ignore[arg-type]


async def test_params_not_in_the_catalog_are_refused() -> None:
    target = RedisTarget(kind="redis", url="redis://127.0.0.1:1/0")
    with pytest.raises(ActionRefused, match=r"clear_cache does not take pattern \(it takes no"):
        await target.perform("clear_cache", {"pattern": "*"}, dry_run=True)


@pytest.mark.parametrize(
    ("action", "params", "words"),
    [
        ("scale_up", {"replicas": "2"}, "replicas must be an integer from 1 to 1000, got '2'"),
        ("scale_up", {"replicas": True}, "got True"),
        ("scale_down", {"replicas": 0}, "got 0"),
        ("scale_down", {"count": 1}, "does not take count (it takes replicas)"),
    ],
)
async def test_bad_scale_params_are_refused(
    action: Any, params: dict[str, Any], words: str
) -> None:
    target = KubernetesTarget(kind="kubernetes", deployment="web", kubeconfig="/nonexistent")
    with pytest.raises(ActionRefused) as caught:
        await target.perform(action, params, dry_run=True)
    assert words in str(caught.value)


async def test_bad_kill_params_are_refused() -> None:
    target = ProcessNameTarget(kind="process_name", names=["stress"])
    with pytest.raises(ActionRefused, match="signal must be 'TERM' or 'KILL', got 'HUP'"):
        await target.perform("kill_process", {"signal": "HUP"}, dry_run=True)
    with pytest.raises(ActionRefused, match="not in this target's allowlist"):
        await target.perform("kill_process", {"name": "sshd"}, dry_run=True)
    with pytest.raises(ActionRefused, match="does not take pid"):
        await target.perform("kill_process", {"pid": 1}, dry_run=True)


async def test_alert_message_must_be_text() -> None:
    target = NotifierTarget(kind="notifier")
    with pytest.raises(ActionRefused, match="message must be a non-empty string"):
        await target.perform("alert_human", {"message": ""}, dry_run=True)
    assert allowed_params("alert_human") == {"message"}


async def test_command_target_refuses_actions_without_a_command() -> None:
    target = CommandTarget(kind="command", commands={"reboot": ["true"]})
    with pytest.raises(ActionRefused, match="no command for scale_up; it has: reboot"):
        await target.perform("scale_up", {}, dry_run=True)


async def test_refusals_come_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "old.log").write_text("x")
    target = FilesTarget(kind="files", directories=[tmp_path], globs=["*.log"])
    with pytest.raises(ActionRefused):
        await target.perform("cleanup_disk", {"replicas": 1}, dry_run=False)
    assert (tmp_path / "old.log").exists()
    process = ProcessTarget(kind="process", command=["true", "never-matches-anything"])
    assert process.check("restart_service", {}) == {}


def test_step_outcome_is_positional() -> None:
    assert StepOutcome(False, "why") == StepOutcome(ok=False, output="why")
