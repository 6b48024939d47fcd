"""Targets that run programs: systemd (through a stand-in systemctl), commands, notifiers.

Every program runs in a minimal environment plus its target's ``env``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest

from medbay.executor.targets import CommandTarget, NotifierTarget, StepOutcome, SystemdTarget
from medbay.executor.targets.base import SAFE_PATH

PY = sys.executable
MINIMAL = {"PATH", "LANG", "LC_ALL", "HOME"}


def program(directory: Path, name: str, body: str) -> Path:
    """An executable Python script ``name`` in ``directory``."""
    path = directory / name
    path.write_text(f"#!{PY}\n{body}\n")
    path.chmod(0o755)
    return path


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in the executor's own environment, as its NATS credentials would be."""
    monkeypatch.setenv("MEDBAY_NATS_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIAfake")


class FakeSystemctl(NamedTuple):
    calls: Path
    env: dict[str, str]
    """The target env whose PATH finds it."""


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> FakeSystemctl:
    """A ``systemctl`` that records its argv, first on a target's PATH; systemd is not run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    program(
        bin_dir,
        "systemctl",
        "import sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'is-active': print('active')\n"
        "if sys.argv[-1] == 'broken.service':\n"
        "    print('Job for broken.service failed.'); sys.exit(1)",
    )
    return FakeSystemctl(calls, {"PATH": f"{bin_dir}:/usr/bin:/bin"})


async def test_systemd_restart_runs_systemctl(fake_systemctl: FakeSystemctl) -> None:
    target = SystemdTarget(kind="systemd", unit="web.service", env=fake_systemctl.env)
    outcome = await target.perform("restart_service", {}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output == "ran systemctl restart web.service: ok\nweb.service is active"
    assert fake_systemctl.calls.read_text() == "restart web.service\nis-active web.service\n"


async def test_systemd_restart_failure(fake_systemctl: FakeSystemctl) -> None:
    target = SystemdTarget(kind="systemd", unit="broken.service", env=fake_systemctl.env)
    outcome = await target.perform("restart_service", {}, dry_run=False)
    assert not outcome.ok
    assert "failed (exit status 1)\nJob for broken.service failed." in outcome.output


async def test_systemd_dry_run_only_asks(fake_systemctl: FakeSystemctl) -> None:
    target = SystemdTarget(kind="systemd", unit="web.service", env=fake_systemctl.env)
    outcome = await target.perform("restart_service", {}, dry_run=True)
    assert outcome.ok
    assert outcome.output == "would run: systemctl restart web.service (is-active now: active)"
    assert fake_systemctl.calls.read_text() == "is-active web.service\n"


async def test_systemd_without_systemctl(tmp_path: Path) -> None:
    target = SystemdTarget(kind="systemd", unit="web.service", env={"PATH": str(tmp_path)})
    for dry_run in (True, False):
        outcome = await target.perform("restart_service", {}, dry_run=dry_run)
        assert not outcome.ok
        assert outcome.output == "systemctl is not found on PATH: cannot restart web.service"


async def test_command_runs_the_argv_with_params_in_env(tmp_path: Path) -> None:
    script = program(
        tmp_path,
        "scale.py",
        "import os, sys\n"
        "print('scaling', sys.argv[1:], os.environ['MEDBAY_ACTION'],"
        " os.environ['MEDBAY_PARAM_REPLICAS'], os.environ['ZONE'])",
    )
    target = CommandTarget(
        kind="command",
        commands={"scale_up": [str(script), "up", "two words"], "reboot": ["false"]},
        env={"ZONE": "eu"},
    )

    outcome = await target.perform("scale_up", {"replicas": 2}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output == (
        f"ran {script} up 'two words': ok\nscaling ['up', 'two words'] scale_up 2 eu"
    )

    failed = await target.perform("reboot", {}, dry_run=False)
    assert not failed.ok
    assert failed.output == "ran false: failed (exit status 1)"


@pytest.mark.usefixtures("secrets_in_env")
async def test_a_command_sees_only_the_minimal_env_and_its_own() -> None:
    target = CommandTarget(kind="command", commands={"scale_up": ["env"]}, env={"ZONE": "eu"})

    outcome = await target.perform("scale_up", {"replicas": 2}, dry_run=False)

    assert outcome.ok, outcome.output
    head, *lines = outcome.output.splitlines()
    assert head == "ran env: ok"
    env = dict(line.split("=", 1) for line in lines)
    assert set(env) == MINIMAL | {"ZONE", "MEDBAY_ACTION", "MEDBAY_PARAM_REPLICAS"}
    assert (env["PATH"], env["LANG"], env["LC_ALL"]) == (SAFE_PATH, "C.UTF-8", "C.UTF-8")
    assert (env["ZONE"], env["MEDBAY_PARAM_REPLICAS"]) == ("eu", "2")
    assert "hunter2" not in outcome.output and "AKIAfake" not in outcome.output


async def test_the_path_is_the_targets_not_the_executors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program(tmp_path, "only-here", "print('found')")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    default = CommandTarget(kind="command", commands={"reboot": ["only-here"]})
    for dry_run in (True, False):
        outcome = await default.perform("reboot", {}, dry_run=dry_run)
        assert outcome.output == "cannot run only-here: only-here is not found on PATH"

    configured = default.model_copy(update={"env": {"PATH": str(tmp_path)}})
    outcome = await configured.perform("reboot", {}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output == "ran only-here: ok\nfound"


async def test_command_output_hides_secrets_in_its_argv() -> None:
    argv = [PY, "-c", "pass", "--password=s3cret", "--api-key", "k3y", "redis://:pw9@cache:6379"]
    target = CommandTarget(kind="command", commands={"reboot": argv})
    dry = await target.perform("reboot", {}, dry_run=True)
    live = await target.perform("reboot", {}, dry_run=False)
    shown = "--password=*** --api-key *** redis://:***@cache:6379"
    assert dry.output.startswith(f"would run: {PY} -c pass {shown} with MEDBAY_ACTION=reboot")
    assert live.output == f"ran {PY} -c pass {shown}: ok"


async def test_command_dry_run_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    target = CommandTarget(
        kind="command", commands={"scale_down": [PY, "-c", f"open({str(marker)!r}, 'w')"]}
    )
    outcome = await target.perform("scale_down", {"replicas": 3}, dry_run=True)
    assert outcome.ok
    assert outcome.output.startswith(f"would run: {PY} -c ")
    assert outcome.output.endswith("with MEDBAY_ACTION=scale_down MEDBAY_PARAM_REPLICAS=3")
    assert not marker.exists()


async def test_a_missing_command_fails_clearly() -> None:
    target = CommandTarget(kind="command", commands={"reboot": ["/nonexistent/reboot-now"]})
    outcome = await target.perform("reboot", {}, dry_run=True)
    assert not outcome.ok
    assert outcome.output == (
        "cannot run /nonexistent/reboot-now: /nonexistent/reboot-now is not an executable file"
    )


async def test_a_timed_out_command_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    tree = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '600'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)"
    )
    target = CommandTarget(kind="command", commands={"reboot": [PY, "-c", tree]})
    step = asyncio.create_task(target.perform("reboot", {}, dry_run=False))
    deadline = time.monotonic() + 20
    while not (pids.exists() and " " in pids.read_text()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(step, 0.2)
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 10
        while not gone(pid):
            assert time.monotonic() < deadline, f"PID {pid} survived the timeout"
            await asyncio.sleep(0.05)


async def test_notifier_log(caplog: pytest.LogCaptureFixture) -> None:
    target = NotifierTarget(kind="notifier")
    with caplog.at_level(logging.WARNING, "medbay.executor.alerts"):
        dry = await target.perform("alert_human", {"message": "disk full on db1"}, dry_run=True)
        assert not caplog.records
        outcome = await target.perform(
            "alert_human", {"message": "disk full on db1"}, dry_run=False
        )
    assert dry.output == "would log the alert: disk full on db1"
    assert outcome.ok
    assert outcome.output == "logged the alert: disk full on db1"
    assert [r.getMessage() for r in caplog.records] == ["disk full on db1"]


async def test_notifier_via_telegram_leaves_the_message_for_the_approvers_bot() -> None:
    target = NotifierTarget(kind="notifier", via="telegram")
    dry = await target.perform("alert_human", {"message": "db1 is down"}, dry_run=True)
    assert dry == StepOutcome(
        True, "would hand the alert to the approver's Telegram bot: db1 is down"
    )
    live = await target.perform("alert_human", {"message": "db1 is down"}, dry_run=False)
    assert live.ok and live.alert == "db1 is down"  # the executor publishes it (AlertRaised)
    assert live.output == "handed the alert to the approver's Telegram bot: db1 is down"


async def test_notifier_command_gets_the_message_on_stdin(tmp_path: Path) -> None:
    got = tmp_path / "got"
    page = program(tmp_path, "page", f"import sys; open({str(got)!r}, 'w').write(sys.stdin.read())")
    target = NotifierTarget(kind="notifier", via="command", command=[str(page)])

    dry = await target.perform("alert_human", {"message": "db1 is down"}, dry_run=True)
    assert dry.output == f"would run {page} with the alert on stdin: db1 is down"
    assert not got.exists()

    outcome = await target.perform("alert_human", {"message": "db1 is down"}, dry_run=False)
    assert outcome.ok, outcome.output
    assert got.read_text() == "db1 is down"

    default = await target.perform("alert_human", {}, dry_run=False)
    assert default.ok
    assert "Medbay needs a person" in got.read_text()


@pytest.mark.usefixtures("secrets_in_env")
async def test_notifier_command_sees_only_the_minimal_env_and_its_own(tmp_path: Path) -> None:
    seen = tmp_path / "env.json"
    dump = f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"
    target = NotifierTarget(
        kind="notifier", via="command", command=[PY, "-c", dump], env={"CHANNEL": "ops"}
    )
    outcome = await target.perform("alert_human", {"message": "hi"}, dry_run=False)
    assert outcome.ok, outcome.output
    env = json.loads(seen.read_text())
    assert set(env) == MINIMAL | {"CHANNEL"}
    assert env["PATH"] == SAFE_PATH


async def test_notifier_command_that_hangs_times_out(tmp_path: Path) -> None:
    target = NotifierTarget(
        kind="notifier", via="command", command=["sleep", "600"], timeout_seconds=0.3
    )
    outcome = await target.perform("alert_human", {"message": "hello"}, dry_run=False)
    assert not outcome.ok
    assert outcome.output == "sleep 600 did not finish within 0.3 s\nalert: hello"
