"""The catalog of targets the executor writes for the planner: what each target may do
and the names it answers to, from the config alone (no server)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from medbay.common.records import TargetCatalog
from medbay.executor.catalog import build_catalog
from medbay.executor.config import ExecutorConfig

NOW = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)


def executor_config(text: str, **changes: Any) -> ExecutorConfig:
    return ExecutorConfig.model_validate({**yaml.safe_load(text), **changes})


def catalog_of(config: ExecutorConfig) -> tuple[TargetCatalog, list[str]]:
    return build_catalog(config.targets, config.safety, config.mode, NOW)


def mount_of(path: Path) -> str:
    path = Path(os.path.realpath(path))
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def test_every_target_is_listed_with_the_actions_it_may_take(tmp_path: Path) -> None:
    config = executor_config(f"""
        mode: live
        targets:
          web: {{kind: process, command: [python3, -m, http.server], covers: [website]}}
          hogs: {{kind: process_name, names: [stress, "yes"]}}
          nginx: {{kind: systemd, unit: nginx.service}}
          api: {{kind: docker, container: api-1}}
          shop: {{kind: kubernetes, namespace: shop, deployment: front}}
          cache: {{kind: redis, url: "redis://127.0.0.1/0", covers: [sessions]}}
          scratch: {{kind: files, directories: ['{tmp_path}'], globs: ["*.tmp"]}}
          host: {{kind: command, commands: {{reboot: [systemctl, reboot], scale_up: [up]}}}}
          oncall: {{kind: notifier, via: telegram}}
        safety:
          allow:
            restart_service: [web, nginx, shop]
            scale_up: [shop, host]
            kill_process: [hogs]
            cleanup_disk: [scratch]
            rotate_logs: [scratch]
            alert_human: [oncall]
    """)
    catalog, notes = catalog_of(config)
    assert notes == []
    assert catalog.mode == "live" and catalog.written_at == NOW
    entries = {name: (t.kind, t.actions, t.covers) for name, t in catalog.targets.items()}
    assert entries == {
        "web": ("process", ["restart_service"], ["website"]),
        "hogs": ("process_name", ["kill_process"], ["stress", "yes"]),
        "nginx": ("systemd", ["restart_service"], ["nginx.service"]),
        "api": ("docker", [], ["api-1"]),  # nothing allowlisted: listed, with no action
        "shop": ("kubernetes", ["restart_service", "scale_up"], ["front", "shop/front"]),
        "cache": ("redis", [], ["sessions"]),
        "scratch": ("files", ["cleanup_disk", "rotate_logs"], [str(tmp_path), mount_of(tmp_path)]),
        "host": ("command", ["scale_up"], []),  # it has a command for reboot: not allowlisted
        "oncall": ("notifier", ["alert_human"], []),
    }
    # the nginx unit's stem is its target's own name: no need to cover it
    assert catalog.resolve("restart_service", "nginx") == "nginx"


def test_the_planner_resolves_an_issues_resource_through_the_catalog(tmp_path: Path) -> None:
    config = executor_config(f"""
        targets:
          web: {{kind: process, command: [python3, -m, http.server], covers: [website]}}
          hogs: {{kind: process_name, names: [stress]}}
          scratch: {{kind: files, directories: ['{tmp_path}'], globs: ["*.tmp"]}}
        safety:
          allow: {{restart_service: [web], kill_process: [hogs], cleanup_disk: [scratch]}}
    """)
    catalog, _ = catalog_of(config)
    assert catalog.mode == "dry-run"
    assert catalog.resolve("restart_service", "website") == "web"
    assert catalog.resolve("restart_service", "web") == "web"
    assert catalog.resolve("kill_process", "stress") == "hogs"
    assert catalog.resolve("cleanup_disk", str(tmp_path)) == "scratch"
    assert catalog.resolve("kill_process", "website") is None  # web cannot kill
    assert catalog.resolve("restart_service", "python3") is None  # not derived from command
    assert catalog.permits("restart_service", "web")
    assert not catalog.permits("clear_cache", "web")


def test_a_derived_name_two_targets_answer_to_is_left_out_for_both(tmp_path: Path) -> None:
    config = executor_config(f"""
        targets:
          root-hogs: {{kind: process_name, names: [stress, burn], user: 0}}
          app-hogs: {{kind: process_name, names: [stress]}}
          logs: {{kind: files, directories: ['{tmp_path / "logs"}'], globs: ["*.log"]}}
          tmp: {{kind: files, directories: ['{tmp_path / "tmp"}'], globs: ["*.tmp"]}}
          nginx: {{kind: docker, container: web, covers: [stress]}}
          web: {{kind: systemd, unit: web.service}}
        safety:
          allow: {{kill_process: [root-hogs, app-hogs]}}
    """)
    (tmp_path / "logs").mkdir()
    (tmp_path / "tmp").mkdir()
    catalog, notes = catalog_of(config)
    covers = {name: t.covers for name, t in catalog.targets.items()}
    mount = mount_of(tmp_path)
    assert covers == {
        "root-hogs": ["burn"],
        "app-hogs": [],
        "logs": [str(tmp_path / "logs")],  # both are on one mount: neither covers it
        "tmp": [str(tmp_path / "tmp")],
        "nginx": ["stress"],  # configured: kept
        "web": ["web.service"],  # the container is named "web", and so is this target
    }
    assert catalog.resolve("kill_process", "stress") is None
    assert "app-hogs does not cover 'stress': another target answers to it" in notes
    assert f"logs does not cover {mount!r}: another target answers to it" in notes
    assert "nginx does not cover 'web': another target answers to it" in notes


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            """
            targets:
              web: {kind: process, command: [x], covers: [web]}
            """,
            "targets.web.covers lists its own name",
        ),
        (
            """
            targets:
              web: {kind: process, command: [x]}
              api: {kind: process, command: [y], covers: [web]}
            """,
            "targets.api.covers lists 'web', which is another target's name",
        ),
        (
            """
            targets:
              web: {kind: process, command: [x], covers: [site]}
              web2: {kind: systemd, unit: web.service, covers: [site]}
            safety: {allow: {restart_service: [web, web2]}}
            """,
            "targets web, web2 all cover 'site' and may all restart_service",
        ),
        (
            """
            targets:
              log: {kind: files, directories: [/var/log/x], globs: ["*"]}
            escalate_to: log
            """,
            "escalate_to names 'log', which cannot alert_human",
        ),
    ],
)
def test_covers_that_would_not_say_which_target_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        executor_config(text)


def test_one_name_may_pick_different_targets_for_different_actions() -> None:
    config = executor_config("""
        targets:
          worker: {kind: process, command: [x], covers: [jobs]}
          hogs: {kind: process_name, names: [jobrunner], covers: [jobs]}
        safety: {allow: {restart_service: [worker], kill_process: [hogs]}}
    """)
    catalog, _ = catalog_of(config)
    assert catalog.resolve("restart_service", "jobs") == "worker"
    assert catalog.resolve("kill_process", "jobs") == "hogs"
