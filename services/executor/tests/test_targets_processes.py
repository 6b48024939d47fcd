"""Process targets against real child processes: restart a command, kill by name.

Processes are identified exactly (pidfile, whole argv, user), never by a part of
their command line; commands start in a minimal environment; outputs hide secrets.
"""

from __future__ import annotations

import contextlib
import json
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
from medbay.executor.targets.base import SAFE_PATH

PY = sys.executable
SLEEP = "import time; time.sleep(600)"
NOBODY = 65534
OTHER_UID = NOBODY if os.getuid() != NOBODY else 0
"""A uid the test's processes do not run as."""


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
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()


@pytest.fixture
def reap() -> Iterator[Reaper]:
    reaper = Reaper()
    yield reaper
    reaper.close()


@pytest.fixture
def seconds() -> str:
    """A ``sleep`` duration no other process on the host is sleeping."""
    return f"1000.{uuid.uuid4().int % 10**9:09d}"


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
    target = ProcessTarget(kind="process", command=command, log_file=log)

    outcome = await target.perform("restart_service", {}, dry_run=False)

    assert outcome.ok, outcome.output
    assert f"stopped with SIGTERM:\n  PID {old.pid} ({PY} -m http.server" in outcome.output
    assert old.wait(10) is not None  # the old server is gone
    [new_pid] = pids_in(outcome.output.split("started")[-1])
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
        kind="process", command=command, stop_timeout=0.5, start_check_seconds=0.2
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
    command = [PY, "-c", SLEEP, str(site)]
    running = reap.start(command)
    pidfile = tmp_path / "x.pid"
    pidfile.write_text(f"{running.pid}\n")
    target = ProcessTarget(kind="process", command=command, pidfile=pidfile)

    outcome = await target.perform("restart_service", {}, dry_run=True)

    assert outcome.ok
    assert f"would send SIGTERM to:\n  PID {running.pid} (" in outcome.output
    assert "then SIGKILL to any still running after 10 s" in outcome.output
    assert f"would start {PY} -c " in outcome.output
    assert f"PID to {pidfile}, and check it is alive after 1 s" in outcome.output
    assert running.poll() is None
    assert pidfile.read_text() == f"{running.pid}\n"


async def test_a_command_that_dies_at_once_fails_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    crash = "import sys; print('port already in use', flush=True); sys.exit(3)"
    target = ProcessTarget(kind="process", command=[PY, "-c", crash], log_file=log)

    outcome = await target.perform("restart_service", {}, dry_run=False)

    assert not outcome.ok
    assert "it exited within 1 s" in outcome.output
    assert "port already in use" in outcome.output


async def test_a_missing_program_stops_nothing(site: Path, reap: Reaper) -> None:
    running = reap.start([PY, "-c", SLEEP, str(site)])
    target = ProcessTarget(
        kind="process", command=["no-such-program-x"], argv=[PY, "-c", SLEEP, str(site)]
    )

    for dry_run in (True, False):
        outcome = await target.perform("restart_service", {}, dry_run=dry_run)
        assert not outcome.ok
        assert "no-such-program-x is not found on PATH; nothing was stopped" in outcome.output
    assert running.poll() is None


async def test_only_the_exact_argv_is_matched(seconds: str, reap: Reaper) -> None:
    exact = reap.start(["sleep", seconds])
    longer = reap.start(["sleep", seconds + "1"])  # "sleep 1000.x" is a substring of its line
    wrapper = reap.start([PY, "-c", SLEEP, "sleep", seconds])  # so it is of this one's
    shell = reap.start(["sh", "-c", f"read line  # sleep {seconds}"], stdin=subprocess.PIPE)
    target = ProcessTarget(kind="process", command=["sleep", seconds], start_check_seconds=0.2)

    dry = await target.perform("restart_service", {}, dry_run=True)
    assert pids_in(dry.output) == {exact.pid}
    assert f"would send SIGTERM to:\n  PID {exact.pid} (sleep {seconds})\n" in dry.output

    outcome = await target.perform("restart_service", {}, dry_run=False)
    assert outcome.ok, outcome.output
    [new_pid] = pids_in(outcome.output.split("started")[-1])
    reap.pids.append(new_pid)
    assert exact.wait(10) == -15
    assert all(p.poll() is None for p in (longer, wrapper, shell))
    assert psutil.Process(new_pid).cmdline() == ["sleep", seconds]


async def test_match_argv_prefix_compares_only_the_first_elements(site: Path, reap: Reaper) -> None:
    first = reap.start([PY, "-c", SLEEP, str(site), "--port", "1"])
    second = reap.start([PY, "-c", SLEEP, str(site), "--port", "2"])
    other = reap.start([PY, "-c", SLEEP + " ", str(site), "--port", "1"])
    prefix = [PY, "-c", SLEEP, str(site)]

    exact = ProcessTarget(kind="process", command=prefix)
    assert (await exact.perform("restart_service", {}, dry_run=True)).output.startswith(
        "nothing running"
    )
    loose = ProcessTarget(kind="process", command=prefix, match_argv_prefix=True)
    dry = await loose.perform("restart_service", {}, dry_run=True)
    assert pids_in(dry.output) == {first.pid, second.pid}
    assert other.poll() is None


async def test_a_pidfile_process_must_have_the_configured_argv(
    seconds: str, tmp_path: Path, reap: Reaper
) -> None:
    running = reap.start(["sleep", seconds])
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{running.pid}\n")
    command = ["sleep", "601"]

    def target(**fields: Any) -> ProcessTarget:
        return ProcessTarget(kind="process", command=command, pidfile=pidfile, **fields)

    cases: list[tuple[set[int], dict[str, Any]]] = [
        ({running.pid}, {}),  # the PID alone: it may have exec'd or retitled itself
        ({running.pid}, {"argv": ["sleep", seconds]}),
        (set(), {"argv": ["sleep", seconds + "1"]}),
        (set(), {"argv": ["sleep", seconds, "x"], "match_argv_prefix": True}),
    ]
    for found, fields in cases:
        dry = await target(**fields).perform("restart_service", {}, dry_run=True)
        assert pids_in(dry.output) == found, fields
    assert running.poll() is None


def test_user_narrows_the_match(seconds: str, reap: Reaper) -> None:
    me = os.getuid()
    mine = reap.start(["sleep", seconds])
    theirs = reap.start(["sleep", seconds], user=NOBODY) if me == 0 else None  # root only

    def found(user: int | str) -> set[int]:
        target = ProcessTarget(kind="process", command=["sleep", seconds], user=user)
        return {p.pid for p in target.running()}

    assert found(me) == found(psutil.Process().username()) == {mine.pid}
    assert found(OTHER_UID) == (set() if theirs is None else {theirs.pid})


async def test_the_command_gets_a_minimal_environment(
    tmp_path: Path, reap: Reaper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDBAY_NATS_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIAfake")
    seen = tmp_path / "env.json"
    dump = "import json, os, sys, time; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    target = ProcessTarget(
        kind="process",
        command=[PY, "-c", dump + "; time.sleep(600)", str(seen)],
        env={"APP_MODE": "demo"},
        start_check_seconds=0.2,
    )

    outcome = await target.perform("restart_service", {}, dry_run=False)

    assert outcome.ok, outcome.output
    reap.pids.extend(pids_in(outcome.output))
    deadline = time.monotonic() + 10
    while not seen.exists() or not seen.read_text().endswith("}"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    env = json.loads(seen.read_text())
    assert set(env) == {"PATH", "LANG", "LC_ALL", "HOME", "APP_MODE"}
    assert env["PATH"] == SAFE_PATH
    assert env["LANG"] == env["LC_ALL"] == "C.UTF-8"
    assert env["APP_MODE"] == "demo"


async def test_outputs_hide_secrets_in_command_lines(site: Path, reap: Reaper) -> None:
    command = [
        PY, "-c", SLEEP, str(site), "--password=s3cret", "--token", "t0k3n",
        "postgresql://app:pw9@db/app",
    ]  # fmt: skip
    running = reap.start(command)
    target = ProcessTarget(kind="process", command=command, stop_timeout=5)

    dry = await target.perform("restart_service", {}, dry_run=True)
    live = await target.perform("restart_service", {}, dry_run=False)

    reap.pids.extend(pids_in(live.output) - {running.pid})
    assert live.ok, live.output
    assert running.wait(10) == -15
    shown = "--password=*** --token *** postgresql://app:***@db/app"
    assert f"would send SIGTERM to:\n  PID {running.pid} ({PY} -c " in dry.output
    assert f"{shown})\nthen SIGKILL" in dry.output
    assert f"would start {PY} -c " in dry.output
    assert f"stopped with SIGTERM:\n  PID {running.pid} (" in live.output
    assert live.output.count(shown) == 2  # the process stopped, the one started
    for secret in ("s3cret", "t0k3n", "pw9"):
        assert secret not in dry.output + live.output


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


async def test_kill_process_narrowed_to_a_user(
    named: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    name, procs = named
    theirs = ProcessNameTarget(kind="process_name", names=[name], user=OTHER_UID)
    outcome = await theirs.perform("kill_process", {}, dry_run=False)
    assert outcome.ok and "nothing to signal" in outcome.output
    assert all(p.poll() is None for p in procs)
    mine = ProcessNameTarget(kind="process_name", names=[name], user=os.getuid())
    dry = await mine.perform("kill_process", {}, dry_run=True)
    assert pids_in(dry.output) == {p.pid for p in procs}
