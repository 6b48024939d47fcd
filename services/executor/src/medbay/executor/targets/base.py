"""What every target shares: the outcome of a step, refusals, parameter checks, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medbay.common.actions import ACTIONS
from medbay.common.events import ActionName
from medbay.common.redact import redact_argv

T = TypeVar("T")

OUTPUT_LIMIT = 4000
"""Characters of a command's output kept in a step's output (the end of it)."""

LIST_LIMIT = 20
"""Items (files, keys, queries, processes) named one by one in an output."""

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH of every command the executor runs, unless its target's ``env`` sets one."""

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
CommandEnv = Annotated[
    dict[EnvName, str],
    Field(
        description="Variables for the command, on top of PATH, LANG, LC_ALL and HOME "
        "(which it may override); nothing of the executor's own environment is passed on."
    ),
]


@dataclass(frozen=True)
class StepOutcome:
    ok: bool
    output: str
    """What was done (or, in dry-run, exactly what would be done), human-readable."""
    alert: str | None = None
    """A message for people that the executor still has to publish as an ``AlertRaised``
    (a notifier ``via: telegram``): targets know nothing of the bus. ``ok`` and
    ``output`` hold only once it is published."""


class ActionRefused(Exception):
    """The step is not allowed for this target or these params; the message says why."""


def _replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ActionRefused(f"replicas must be an integer from 1 to 1000, got {value!r}")
    return value


def _signal(value: Any) -> str:
    if value not in ("TERM", "KILL"):
        raise ActionRefused(f"signal must be 'TERM' or 'KILL', got {value!r}")
    return str(value)


def _text(name: str, limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise ActionRefused(
                f"{name} must be a non-empty string of at most {limit} characters, got {value!r}"
            )
        return value

    return check


PARAM_CHECKS: dict[str, Callable[[Any], Any]] = {
    "replicas": _replicas,
    "signal": _signal,
    "name": _text("name", 255),
    "message": _text("message", 10_000),
}
"""Every parameter a step may carry, with its check (which returns the value to use)."""

assert all(p in PARAM_CHECKS for spec in ACTIONS.values() for p in spec.params), (
    "every catalog parameter needs a check"
)


def allowed_params(action: ActionName) -> frozenset[str]:
    return frozenset(ACTIONS[action].params)


CoverName = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^\S(.*\S)?$")]
"""A name a target answers to in issues (an issue's resource): no space at either end."""


class Target(BaseModel):
    """A configured backend: validated strictly from the executor's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    covers: list[CoverName] = Field(
        default_factory=list,
        description="Other names this target answers to in issues (a service, process, "
        "cache, database, directory or mount an issue names), besides its own name.",
    )

    supports: ClassVar[frozenset[ActionName]]
    system_errors: ClassVar[tuple[type[Exception], ...]] = (OSError,)
    """What the backend raises when the system it acts on fails; reported as a failed step."""

    @field_validator("covers")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ValueError(f"listed more than once: {twice}")
        return value

    @property
    def actions(self) -> frozenset[ActionName]:
        """The actions this target can take as configured (before the allowlist)."""
        return self.supports

    def derived_covers(self) -> list[str]:
        """Names this target answers to that follow from its own settings beyond doubt
        (see ``catalog``); none unless a kind says otherwise."""
        return []

    def check(self, action: ActionName, params: Mapping[str, Any]) -> dict[str, Any]:
        """The checked params of a step; ActionRefused if this target cannot take the step."""
        if action not in ACTIONS:
            raise ActionRefused(f"unknown action {action!r}")
        if action not in self.supports:
            supported = ", ".join(sorted(self.supports))
            raise ActionRefused(f"a {self.kind} target cannot {action}; it supports: {supported}")
        allowed = allowed_params(action)
        unknown = sorted(set(params) - allowed)
        if unknown:
            takes = ", ".join(sorted(allowed)) if allowed else "no params"
            raise ActionRefused(f"{action} does not take {', '.join(unknown)} (it takes {takes})")
        return {name: PARAM_CHECKS[name](value) for name, value in params.items()}

    async def perform(
        self, action: ActionName, params: dict[str, Any], *, dry_run: bool
    ) -> StepOutcome:
        """Do the step (dry_run: inspect read-only and say exactly what would be done)."""
        checked = self.check(action, params)
        try:
            return await self.run(action, checked, dry_run)
        except self.system_errors as exc:
            what = "inspecting for" if dry_run else "running"
            return StepOutcome(False, f"failed {what} {action}: {type(exc).__name__}: {exc}")

    @abstractmethod
    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        """The step itself, with checked params; each kind implements it."""


async def in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run blocking ``work(stop)`` in a thread; cancelling sets ``stop`` so it ends early."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(work, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


def shown(argv: Sequence[str]) -> str:
    """An argv as a person would type it, with secrets in it hidden (see ``redact``)."""
    return " ".join(
        repr(a) if not a or any(c.isspace() for c in a) else a for a in redact_argv(argv)
    )


def safe_url(url: str) -> str:
    """A URL without credentials, path or query (webhook paths often hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "(url)"


def listing(items: Sequence[str], limit: int = LIST_LIMIT) -> str:
    """Items one per line, at most ``limit`` of them, then how many more."""
    lines = [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``3 keys``, ``1 key``."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def command_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a command the executor runs: a minimal one, plus ``env``.

    Nothing is inherited from the executor, whose environment holds its own
    credentials (NATS, tokens): the command gets PATH (``SAFE_PATH``), a UTF-8 C
    locale and the HOME of the user the executor runs as, then the target's ``env``.
    """
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = "/"
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home, **(env or {})}


def missing_program(
    argv: Sequence[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """Why ``argv[0]`` cannot be run with ``command_env(env)``, or None if it can."""
    program = argv[0]
    if os.sep in program:
        file = Path(program) if cwd is None else cwd / program
        return None if os.access(file, os.X_OK) else f"{program} is not an executable file"
    path = command_env(env)["PATH"]
    return None if shutil.which(program, path=path) else f"{program} is not found on PATH"


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str

    def describe(self, argv: Sequence[str]) -> str:
        status = "ok" if self.returncode == 0 else f"failed (exit status {self.returncode})"
        text = tail(self.output.strip())
        return f"ran {shown(argv)}: {status}" + (f"\n{text}" if text else "")


async def run_command(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run argv (no shell) with stdout and stderr captured, in ``command_env(env)``.

    The command runs in its own process group; if the caller cancels (the step
    timed out), the whole group is killed before the cancellation goes on.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=command_env(env),
        start_new_session=True,
    )
    try:
        out, _ = await proc.communicate(stdin)
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return CommandResult(proc.returncode, out.decode(errors="replace"))
