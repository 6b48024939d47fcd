"""Local processes: a supervised command to restart, and allowlisted names to kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import psutil
from pydantic import Field, model_validator

from medbay.common.events import ActionName
from medbay.executor.targets.base import (
    ActionRefused,
    StepOutcome,
    Target,
    in_thread,
    listing,
    missing_program,
    run_command,
    shown,
    tail,
)

NonEmpty = Annotated[str, Field(min_length=1)]
ProcessName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/\x00]+$")]

KILL_WAIT_SECONDS = 5.0
"""How long a process may take to go after SIGKILL before the step gives up on it."""

SPAWN = """\
import subprocess, sys
out = open(sys.argv[1], "ab") if sys.argv[1] else subprocess.DEVNULL
proc = subprocess.Popen(
    sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
    start_new_session=True,
)
print(proc.pid)
"""
"""Starts the command from a short-lived intermediate process, so the service is
reparented away from the executor: it outlives an executor restart and never
lingers as the executor's zombie."""


def protected_pids() -> set[int]:
    """PIDs never signalled: init, the executor and every process above it."""
    pids = {1, os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive_pid(pid: int) -> bool:
    try:
        return alive(psutil.Process(pid))
    except psutil.Error:
        return False


def parent_pid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def describe(proc: psutil.Process) -> str:
    try:
        argv = proc.cmdline()
        text = shown(argv) if argv else proc.name()
    except psutil.Error:
        text = "?"
    return f"PID {proc.pid} ({text})"


async def wait_gone(procs: Iterable[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait until the processes are gone; those still alive after ``seconds``."""
    deadline = time.monotonic() + seconds
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def send(procs: Iterable[psutil.Process], sig: signal.Signals) -> list[psutil.Process]:
    """Signal each process (psutil checks it is still the same process); those not permitted."""
    denied = []
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            denied.append(proc)
    return denied


class ProcessTarget(Target):
    """A local command the executor supervises: restart_service stops and starts it.

    The running instance is found through ``pidfile`` (the PID the executor wrote
    when it last started the command, trusted only if that process is older than
    the file, so a reused PID is never signalled) and/or ``match``, a substring
    of the command line. The command starts detached, in its own session.
    """

    kind: Literal["process"]
    command: list[NonEmpty] = Field(min_length=1, description="argv to start (no shell).")
    cwd: Path | None = None
    env: dict[str, str] = Field(
        default_factory=dict, description="Added to the executor's environment."
    )
    pidfile: Path | None = Field(default=None, description="Where the started PID is written.")
    match: str | None = Field(
        default=None, min_length=3, description="Command-line substring of the running process."
    )
    log_file: Path | None = Field(default=None, description="stdout and stderr, appended.")
    stop_timeout: float = Field(default=10.0, gt=0, le=600, description="SIGKILL after this.")
    start_check_seconds: float = Field(
        default=1.0, ge=0, le=60, description="The new process must be alive after this long."
    )

    supports: ClassVar[frozenset[ActionName]] = frozenset({"restart_service"})

    @model_validator(mode="after")
    def _findable(self) -> ProcessTarget:
        if self.pidfile is None and self.match is None:
            raise ValueError("set pidfile and/or match, so the running process can be found")
        return self

    def _from_pidfile(self) -> psutil.Process | None:
        if self.pidfile is None:
            return None
        try:
            written = self.pidfile.stat().st_mtime
            proc = psutil.Process(int(self.pidfile.read_text().strip()))
            started = proc.create_time()
        except (OSError, ValueError, psutil.Error):
            return None
        return proc if alive(proc) and started <= written + 1.0 else None

    def _matching(self) -> list[psutil.Process]:
        if self.match is None:
            return []
        protected = protected_pids()
        found = []
        for pid in psutil.pids():
            if pid in protected:
                continue
            try:
                proc = psutil.Process(pid)
                if self.match in " ".join(proc.cmdline()) and alive(proc):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def running(self) -> list[psutil.Process]:
        """The live processes of this target."""
        found = {p.pid: p for p in self._matching()}
        proc = self._from_pidfile()
        if proc is not None and proc.pid not in protected_pids():
            found[proc.pid] = proc
        return [found[pid] for pid in sorted(found)]

    def _start_plan(self) -> str:
        where = f" in {self.cwd}" if self.cwd else ""
        out = f", output to {self.log_file}" if self.log_file else ""
        pid = f", PID to {self.pidfile}" if self.pidfile else ""
        return f"start {shown(self.command)}{where}{out}{pid}"

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        if self.cwd is not None and not self.cwd.is_dir():
            problem: str | None = f"cwd {self.cwd} is not a directory"
        else:
            problem = missing_program(self.command, self.cwd, self.env.get("PATH"))
        if problem is not None:
            return StepOutcome(False, f"cannot start the command: {problem}; nothing was stopped")
        running = await in_thread(lambda _: self.running())
        names = [describe(p) for p in running]
        if dry_run:
            if running:
                stop = (
                    f"would send SIGTERM to:\n{listing(names)}\n"
                    f"then SIGKILL to any still running after {self.stop_timeout:g} s"
                )
            else:
                stop = "nothing running"
            check = f", and check it is alive after {self.start_check_seconds:g} s"
            return StepOutcome(True, f"{stop}\nwould {self._start_plan()}{check}")
        stopped = await self._stop(running) if running else StepOutcome(True, "nothing running")
        if not stopped.ok:
            return stopped
        started = await self._start()
        return StepOutcome(started.ok, f"{stopped.output}\n{started.output}")

    async def _stop(self, procs: list[psutil.Process]) -> StepOutcome:
        """SIGTERM the topmost processes, then SIGKILL whatever is left after stop_timeout."""
        named = {p.pid: describe(p) for p in procs}
        roots = [p for p in procs if parent_pid(p) not in named]
        denied = send(roots, signal.SIGTERM)
        if denied:
            text = "not permitted to send SIGTERM to:\n" + listing([named[p.pid] for p in denied])
            sent = [named[p.pid] for p in roots if p not in denied]
            if sent:
                text += "\nsent SIGTERM to:\n" + listing(sent)
            return StepOutcome(False, f"{text}\nnothing was started")
        left = await wait_gone(procs, self.stop_timeout)
        text = "stopped with SIGTERM:\n" + listing(list(named.values()))
        if not left:
            return StepOutcome(True, text)
        text += f"\nstill running after {self.stop_timeout:g} s, sent SIGKILL:\n"
        text += listing([named[p.pid] for p in left])
        send(left, signal.SIGKILL)  # one it may not signal stays in left
        left = await wait_gone(left, KILL_WAIT_SECONDS)
        if left:
            text += "\nstill running:\n" + listing([named[p.pid] for p in left])
            return StepOutcome(False, f"{text}\nnothing was started")
        return StepOutcome(True, text)

    async def _start(self) -> StepOutcome:
        log = str(self.log_file) if self.log_file else ""
        spawn = [sys.executable, "-I", "-c", SPAWN, log, *self.command]
        result = await run_command(spawn, cwd=self.cwd, env=self.env)
        last = result.output.strip().splitlines()[-1:] or [""]
        if result.returncode != 0 or not last[0].isdigit():
            return StepOutcome(False, f"could not {self._start_plan()}:\n{tail(result.output)}")
        pid = int(last[0])
        if self.pidfile is not None:
            temporary = self.pidfile.with_name(f".{self.pidfile.name}.{pid}")
            temporary.write_text(f"{pid}\n")
            temporary.replace(self.pidfile)
        await asyncio.sleep(self.start_check_seconds)
        text = f"started {shown(self.command)} as PID {pid}"
        if alive_pid(pid):
            return StepOutcome(True, f"{text}; alive after {self.start_check_seconds:g} s")
        log_tail = ""
        if self.log_file is not None:
            log_tail = "\n" + tail(self.log_file.read_text(errors="replace"), 1000)
        exited = f"{text}; it exited within {self.start_check_seconds:g} s"
        return StepOutcome(False, exited + log_tail)


class ProcessNameTarget(Target):
    """Processes killable by name: only names in ``names``; never PID 1 or the executor."""

    kind: Literal["process_name"]
    names: list[ProcessName] = Field(min_length=1, description="The allowlist of process names.")
    wait_seconds: float = Field(
        default=5.0, gt=0, le=120, description="How long signalled processes may take to exit."
    )

    supports: ClassVar[frozenset[ActionName]] = frozenset({"kill_process"})

    def find(self, names: set[str]) -> list[psutil.Process]:
        protected = protected_pids()
        found = []
        for pid in psutil.pids():
            if pid in protected:
                continue
            try:
                proc = psutil.Process(pid)
                if proc.name() in names and alive(proc):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        name = params.get("name")
        if name is not None and name not in self.names:
            raise ActionRefused(
                f"process name {name!r} is not in this target's allowlist: {self.names}"
            )
        wanted = {name} if name is not None else set(self.names)
        sig = signal.Signals[f"SIG{params.get('signal', 'TERM')}"]
        procs = await in_thread(lambda _: self.find(wanted))
        if not procs:
            return StepOutcome(
                True, f"no running process named {', '.join(sorted(wanted))}: nothing to signal"
            )
        named = {p.pid: describe(p) for p in procs}
        if dry_run:
            return StepOutcome(True, f"would send {sig.name} to:\n{listing(list(named.values()))}")
        denied = send(procs, sig)
        sent = [p for p in procs if p not in denied]
        lines = []
        if denied:
            refused = listing([named[p.pid] for p in denied])
            lines.append(f"not permitted to send {sig.name} to:\n{refused}")
        left = await wait_gone(sent, self.wait_seconds)
        if sent:
            lines.append(f"sent {sig.name} to:\n{listing([named[p.pid] for p in sent])}")
        if left:
            still = listing([named[p.pid] for p in left])
            lines.append(f"still running after {self.wait_seconds:g} s:\n{still}")
        elif sent:
            lines.append("all of them exited")
        return StepOutcome(not denied and not left, "\n".join(lines))
