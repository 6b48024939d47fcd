"""Process targets against real child processes: restart a command, kill by name."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from medbay.executor.targets import ActionRefused, ProcessNameTarget, ProcessTarget

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pids_in(text: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"PID (\d+)", text)}


def get(url: str, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Reaper:
    """Kills, at the end of a test whatever happened, what the test started."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, **kwargs)
        self.children.append(child)
        return child

    def close(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        for child in self.children:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()


@pytest.fixture
def reap() -> Iterator[Reaper]:
    reaper = Reaper()
    yield reaper
    reaper.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory whose unique path marks the test's processes in their command lines."""
    path = tmp_path / f"site-{uuid.uuid4().hex}"
    path.mkdir()
    (path / "index.html").write_text("hello")
    return path


async def test_restart_kills_the_running_server_and_starts_a_new_one(
    site: Path, tmp_path: Path, reap: Reaper
) -> None:
    port = free_port()
    command = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)]
    old = reap.start(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert get(f"http://127.0.0.1:{port}/") == 200
    log = tmp_path / "web.log"
    pidfile = tmp_path / "web.pid"
    target = ProcessTarget(
        kind="process", command=command, match=str(site), pidfile=pidfile, log_file=log
    )

    outcome = await target.perform("restart_service", {}, dry_run=False)

    assert outcome.ok, outcome.output
    assert f"PID {old.pid}" in outcome.output
    assert old.wait(10) is not None  # the old server is gone
    new_pid = int(pidfile.read_text())
    reap.pids.append(new_pid)
    assert new_pid != old.pid
    assert f"as PID {new_pid}; alive after 1 s" in outcome.output
    assert psutil.Process(new_pid).cmdline() == command
    assert get(f"http://127.0.0.1:{port}/") == 200  # the new one serves
    assert psutil.Process(new_pid).ppid() != os.getpid()  # detached from the executor


async def test_restart_kills_what_ignores_sigterm(site: Path, reap: Reaper) -> None:
    stubborn = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(600)"
    )
    command = [PY, "-c", stubborn, str(site)]
    old = reap.start(command, stdout=subprocess.PIPE)
    assert old.stdout is not None and old.stdout.readline() == b"ready\n"
    target = ProcessTarget(
        kind="process", command=command, match=str(site), stop_timeout=0.5, start_check_seconds=0.2
    )

    outcome = await target.perform("restart_service", {}, dry_run=False)

    assert outcome.ok, outcome.output
    assert "still running after 0.5 s, sent SIGKILL" in outcome.output
    assert old.wait(10) == -9
    new = pids_in(outcome.output.split("started")[-1])
    reap.pids.extend(new)
    assert len(new) == 1 and not gone(new.pop())


async def test_nothing_running_just_starts_then_pidfile_finds_it(
    tmp_path: Path, reap: Reaper
) -> None:
    pidfile = tmp_path / "sleeper.pid"
    target = ProcessTarget(
        kind="process", command=["sleep", "600"], pidfile=pidfile, start_check_seconds=0.2
    )

    first = await target.perform("restart_service", {}, dry_run=False)
    assert first.ok, first.output
    assert first.output.startswith("nothing running\nstarted sleep 600 as PID")
    pid = int(pidfile.read_text())
    reap.pids.append(pid)

    second = await target.perform("restart_service", {}, dry_run=False)
    assert second.ok, second.output
    assert f"stopped with SIGTERM:\n  PID {pid} (sleep 600)" in second.output
    new_pid = int(pidfile.read_text())
    reap.pids.append(new_pid)
    assert new_pid != pid and gone(pid) and not gone(new_pid)


async def test_a_reused_pid_in_the_pidfile_is_not_signalled(tmp_path: Path, reap: Reaper) -> None:
    other = reap.start(["sleep", "600"])
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{other.pid}\n")
    an_hour_ago = time.time() - 3600  # written before that process started: stale
    os.utime(pidfile, (an_hour_ago, an_hour_ago))
    target = ProcessTarget(
        kind="process", command=["sleep", "601"], pidfile=pidfile, start_check_seconds=0
    )

    outcome = await target.perform("restart_service", {}, dry_run=False)

    reap.pids.append(int(pidfile.read_text()))
    assert outcome.ok, outcome.output
    assert outcome.output.startswith("nothing running")
    assert other.poll() is None


async def test_dry_run_restart_touches_nothing(site: Path, tmp_path: Path, reap: Reaper) -> None:
    command = [PY, "-c", "import time; time.sleep(600)", str(site)]
    running = reap.start(command)
    pidfile = tmp_path / "x.pid"
    target = ProcessTarget(kind="process", command=command, match=str(site), pidfile=pidfile)

    outcome = await target.perform("restart_service", {}, dry_run=True)

    assert outcome.ok
    assert f"would send SIGTERM to:\n  PID {running.pid} (" in outcome.output
    assert "then SIGKILL to any still running after 10 s" in outcome.output
    assert f"would start {PY} -c " in outcome.output
    assert f"PID to {pidfile}, and check it is alive after 1 s" in outcome.output
    assert running.poll() is None
    assert not pidfile.exists()


async def test_a_command_that_dies_at_once_fails_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    crash = "import sys; print('port already in use', flush=True); sys.exit(3)"
    target = ProcessTarget(
        kind="process", command=[PY, "-c", crash], match="never-running-xyz", log_file=log
    )

    outcome = await target.perform("restart_service", {}, dry_run=False)

    assert not outcome.ok
    assert "it exited within 1 s" in outcome.output
    assert "port already in use" in outcome.output


async def test_a_missing_program_stops_nothing(site: Path, reap: Reaper) -> None:
    running = reap.start([PY, "-c", "import time; time.sleep(600)", str(site)])
    target = ProcessTarget(kind="process", command=["no-such-program-x"], match=str(site))

    for dry_run in (True, False):
        outcome = await target.perform("restart_service", {}, dry_run=dry_run)
        assert not outcome.ok
        assert "no-such-program-x is not found on PATH; nothing was stopped" in outcome.output
    assert running.poll() is None


@pytest.fixture
def named(tmp_path: Path, reap: Reaper) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """Two sleeping processes with a name no other process on the host has."""
    name = f"mb{uuid.uuid4().hex[:10]}"
    program = tmp_path / name
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, program)
    procs = [reap.start([str(program), "600"]) for _ in range(2)]
    deadline = time.monotonic() + 10
    while any(psutil.Process(p.pid).name() != name for p in procs):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield name, procs


async def test_kill_process_signals_allowlisted_names(
    named: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    name, procs = named
    target = ProcessNameTarget(kind="process_name", names=["not-running-abc", name])

    dry = await target.perform("kill_process", {}, dry_run=True)
    assert dry.ok
    assert dry.output.startswith("would send SIGTERM to:")
    assert pids_in(dry.output) == {p.pid for p in procs}
    assert all(p.poll() is None for p in procs)

    outcome = await target.perform("kill_process", {"name": name}, dry_run=False)
    assert outcome.ok, outcome.output
    assert pids_in(outcome.output) == {p.pid for p in procs}
    assert "all of them exited" in outcome.output
    assert [p.wait(10) for p in procs] == [-15, -15]

    again = await target.perform("kill_process", {}, dry_run=False)
    assert again.ok
    assert "nothing to signal" in again.output


async def test_kill_with_sigkill(named: tuple[str, list[subprocess.Popen[bytes]]]) -> None:
    name, procs = named
    target = ProcessNameTarget(kind="process_name", names=[name])
    outcome = await target.perform("kill_process", {"signal": "KILL"}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output.startswith("sent SIGKILL to:")
    assert [p.wait(10) for p in procs] == [-9, -9]


async def test_kill_process_refuses_names_off_the_allowlist(
    named: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    name, procs = named
    target = ProcessNameTarget(kind="process_name", names=["stress"])
    with pytest.raises(ActionRefused, match=f"process name '{name}' is not in"):
        await target.perform("kill_process", {"name": name}, dry_run=False)
    assert all(p.poll() is None for p in procs)


async def test_kill_process_never_targets_the_executor_or_init() -> None:
    me = psutil.Process()
    names = [me.name(), psutil.Process(1).name()]
    names += [parent.name() for parent in me.parents()]
    target = ProcessNameTarget(kind="process_name", names=names)
    outcome = await target.perform("kill_process", {}, dry_run=True)  # dry run: others' too
    found = pids_in(outcome.output)
    assert os.getpid() not in found
    assert 1 not in found
    assert not found & {parent.pid for parent in me.parents()}
