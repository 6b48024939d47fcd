"""Local processes: a supervised command to restart, and allowlisted names to kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import psutil
from pydantic import BeforeValidator, Field, model_validator

from medbay.common.events import ActionName
from medbay.executor.targets.base import (
    ActionRefused,
    CommandEnv,
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


def _uid(value: Any) -> Any:
    """A user name (or a uid in digits) as its uid; anything else goes on to the int check."""
    if not isinstance(value, str):
        return value
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"no user named {value!r} on this host") from None


Uid = Annotated[int, BeforeValidator(_uid), Field(strict=True, ge=0)]
USER = "Only processes whose real and effective uid are this user's (a name or a uid)."

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
    """``PID 123 (argv)``, secrets in the argv hidden."""
    try:
        argv = proc.cmdline()
        text = shown(argv) if argv else proc.name()
    except psutil.Error:
        text = "?"
    return f"PID {proc.pid} ({text})"


def owned_by(proc: psutil.Process, uid: int | None) -> bool:
    """Whether the process runs as ``uid`` (real and effective); any process if uid is None."""
    if uid is None:
        return True
    uids = proc.uids()
    return uids.real == uid and uids.effective == uid


def argv_matches(cmdline: Sequence[str], argv: Sequence[str], prefix: bool) -> bool:
    """Element by element: the whole command line, or (``prefix``) its first len(argv)."""
    return list(cmdline[: len(argv)] if prefix else cmdline) == list(argv)


def live_processes(keep: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """The live processes, bar protected ones, for which ``keep(proc)`` is true, by PID."""
    protected = protected_pids()
    found = []
    for pid in psutil.pids():
        if pid in protected:
            continue
        try:
            proc = psutil.Process(pid)
            if keep(proc) and alive(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


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

    The running instance is identified exactly, never by a part of its command line:

    - with ``pidfile``: the process whose PID is in it (the executor writes it
      when it starts the command), trusted only if that process is older than the
      file, so a reused PID is never signalled; if ``argv`` is set, its command
      line must match that too (without, a command that execs another program or
      retitles itself is still found);
    - without: every process whose command line is ``argv`` (default: ``command``),
      compared element by element; with ``match_argv_prefix`` only its first
      ``len(argv)`` elements are (the rest may be anything). A script started
      through its ``#!`` line runs as ``interpreter script ...``: set ``argv`` to
      what ``/proc/PID/cmdline`` (``ps -o args``) shows.

    ``user`` narrows both to processes running as that user. The command starts
    detached, in its own session, in a minimal environment (see ``command_env``)
    plus ``env``.

    It answers in issues only to its own name and its configured ``covers``: the
    name a process goes by (``comm``) cannot be told from ``command`` beyond doubt
    (``python`` runs as ``python3.11``, a script started by its ``#!`` line or a
    wrapper that execs goes by another name, a process may rename itself).
    """

    kind: Literal["process"]
    command: list[NonEmpty] = Field(min_length=1, description="argv to start (no shell).")
    cwd: Path | None = None
    env: CommandEnv = Field(default_factory=dict)
    pidfile: Path | None = Field(default=None, description="Where the started PID is written.")
    argv: list[NonEmpty] | None = Field(
        default=None, min_length=1, description="The running process's argv, if not command."
    )
    match_argv_prefix: bool = Field(
        default=False, description="Compare only the first len(argv) elements of command lines."
    )
    user: Uid | None = Field(default=None, description=USER)
    log_file: Path | None = Field(default=None, description="stdout and stderr, appended.")
    stop_timeout: float = Field(default=10.0, gt=0, le=600, description="SIGKILL after this.")
    start_check_seconds: float = Field(
        default=1.0, ge=0, le=60, description="The new process must be alive after this long."
    )

    supports: ClassVar[frozenset[ActionName]] = frozenset({"restart_service"})

    @property
    def compared_argv(self) -> list[str] | None:
        """What a running process's command line is compared with; None: not compared."""
        if self.argv is not None or self.pidfile is not None:
            return self.argv
        return self.command

    @model_validator(mode="before")
    @classmethod
    def _no_substring(cls, data: Any) -> Any:
        if isinstance(data, dict) and "match" in data:
            raise ValueError(
                "match (a part of the command line) could match unrelated processes and is "
                "not supported: identify the process by pidfile, or by argv (default: command)"
            )
        return data

    @model_validator(mode="after")
    def _exact(self) -> ProcessTarget:
        argv = self.compared_argv
        if self.match_argv_prefix and argv is None:
            raise ValueError("match_argv_prefix needs argv when pidfile is set")
        if self.match_argv_prefix and argv is not None and len(argv) < 2:
            raise ValueError(
                "match_argv_prefix needs an argv of at least 2 elements: "
                f"{argv} would match every process running {argv[0]}"
            )
        return self

    def _is_ours(self, proc: psutil.Process) -> bool:
        argv = self.compared_argv
        if argv is not None and not argv_matches(proc.cmdline(), argv, self.match_argv_prefix):
            return False
        return owned_by(proc, self.user)

    def _from_pidfile(self, pidfile: Path) -> list[psutil.Process]:
        try:
            written = pidfile.stat().st_mtime
            proc = psutil.Process(int(pidfile.read_text().strip()))
            fresh = proc.create_time() <= written + 1.0
            ours = fresh and proc.pid not in protected_pids() and self._is_ours(proc)
        except (OSError, ValueError, psutil.Error):
            return []
        return [proc] if ours and alive(proc) else []

    def running(self) -> list[psutil.Process]:
        """The live processes of this target."""
        if self.pidfile is not None:
            return self._from_pidfile(self.pidfile)
        return live_processes(self._is_ours)

    def _start_plan(self) -> str:
        where = f" in {self.cwd}" if self.cwd else ""
        out = f", output to {self.log_file}" if self.log_file else ""
        pid = f", PID to {self.pidfile}" if self.pidfile else ""
        return f"start {shown(self.command)}{where}{out}{pid}"

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        if self.cwd is not None and not self.cwd.is_dir():
            problem: str | None = f"cwd {self.cwd} is not a directory"
        else:
            problem = missing_program(self.command, self.cwd, self.env)
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
    """Processes killable by name: only names in ``names``; never PID 1 or the executor.

    A name is compared whole with the process's name (``ps -o comm``, or its
    argv[0]'s file name when that is longer); ``user`` narrows it to processes
    running as that user.
    """

    kind: Literal["process_name"]
    names: list[ProcessName] = Field(min_length=1, description="The allowlist of process names.")
    user: Uid | None = Field(default=None, description=USER)
    wait_seconds: float = Field(
        default=5.0, gt=0, le=120, description="How long signalled processes may take to exit."
    )

    supports: ClassVar[frozenset[ActionName]] = frozenset({"kill_process"})

    def derived_covers(self) -> list[str]:
        """The names it may kill: a runaway process goes by one of them."""
        return list(self.names)

    def find(self, names: set[str]) -> list[psutil.Process]:
        return live_processes(lambda proc: proc.name() in names and owned_by(proc, self.user))

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
