"""Files in configured directories: rotate logs, delete old files.

Each configured directory is resolved once (it may be a symlink the operator
chose); inside it nothing is followed. The walk works on directory file
descriptors opened without following symlinks, and every open, stat and unlink
is relative to them, so a symlink swapped in meanwhile cannot lead out of the
directory. Symlinks and files with other hard links are left alone.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from medbay.common.events import ActionName
from medbay.executor.targets.base import StepOutcome, Target, in_thread, listing, plural

FileGlob = Annotated[str, Field(min_length=1, pattern=r"^[^/\x00]+$")]

ROTATION = re.compile(r"\.(\d{8}T\d{6}Z)(?:-(\d+))?(?:\.gz)?$")
"""The suffix of a rotation: ``.<UTC time>[-<n>][.gz]``, e.g. ``app.log.20250101T120000Z.gz``."""

DAY = 86_400.0


@dataclass
class Walk:
    """What a walk over the directories met besides the files it yields."""

    problems: list[str] = field(default_factory=list)
    symlinks: int = 0
    hard_linked: int = 0

    def notes(self) -> list[str]:
        notes = list(self.problems)
        if self.symlinks:
            notes.append(f"left {plural(self.symlinks, 'matching symlink')} alone (never followed)")
        if self.hard_linked:
            notes.append(
                f"left {plural(self.hard_linked, 'matching file')} with other hard links alone"
            )
        return notes


@dataclass(frozen=True)
class Found:
    directory: str
    name: str
    dir_fd: int
    """Valid only until the walk moves on."""
    stat: os.stat_result

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.name)


def rotations(dir_fd: int, name: str) -> list[str]:
    """The rotations of log ``name`` in the directory, oldest first."""
    found = []
    prefix = name + "."
    for entry in os.scandir(dir_fd):
        if entry.name.startswith(prefix):
            match = ROTATION.fullmatch(entry.name, len(name))
            if match and entry.is_file(follow_symlinks=False):
                found.append((match[1], int(match[2] or 0), entry.name))
    return [rotation for *_, rotation in sorted(found)]


def mount_point(directory: Path) -> str | None:
    """The mount point the directory is on; None if it is not a directory."""
    path = Path(os.path.realpath(directory))
    if not path.is_dir():
        return None
    while not os.path.ismount(path):
        path = path.parent
    return str(path)


def size(n: float) -> str:
    units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    while n >= 1024 and unit < len(units) - 1:
        n /= 1024
        unit += 1
    return f"{n:.0f} bytes" if unit == 0 else f"{n:.1f} {units[unit]}"


class FilesTarget(Target):
    """cleanup_disk deletes old matching files; rotate_logs copies, truncates and gzips logs.

    ``globs`` match file names (e.g. ``*.log``); ``recursive`` also walks
    subdirectories. cleanup_disk deletes only regular files last modified more
    than ``older_than_days`` ago; rotate_logs keeps at most ``keep`` rotations per log.
    """

    kind: Literal["files"]
    directories: list[Path] = Field(min_length=1, description="Absolute paths.")
    globs: list[FileGlob] = Field(min_length=1, description="File-name patterns, e.g. *.log.")
    recursive: bool = False
    older_than_days: float = Field(default=7.0, gt=0, le=36_500)
    keep: int = Field(default=5, ge=1, le=1000, description="Rotations kept per log.")
    compress: bool = True

    supports: ClassVar[frozenset[ActionName]] = frozenset({"cleanup_disk", "rotate_logs"})

    @field_validator("directories")
    @classmethod
    def _absolute(cls, value: list[Path]) -> list[Path]:
        for directory in value:
            if not directory.is_absolute():
                raise ValueError(f"{directory} is not an absolute path")
            if directory == Path(directory.anchor):
                raise ValueError("the root directory is not allowed")
        return value

    def derived_covers(self) -> list[str]:
        """Its directories, and the mounts they are on: a disk issue names one or the other.
        A directory missing now gives no mount."""
        names = [str(directory) for directory in self.directories]
        for directory in self.directories:
            mount = mount_point(directory)
            if mount is not None and mount not in names:
                names.append(mount)
        return names

    def walk(self, stop: threading.Event, walk: Walk) -> Iterator[Found]:  # noqa: C901 - each file kind is a safety case
        """Regular files matching the globs, each once; stops early when ``stop`` is set."""
        seen: set[tuple[int, int]] = set()

        def failed(exc: OSError) -> None:
            walk.problems.append(f"cannot read {exc.filename}: {exc.strerror}")

        for directory in self.directories:
            real = os.path.realpath(directory)
            if not os.path.isdir(real):
                walk.problems.append(f"{directory} is not a directory")
                continue
            for dirpath, dirnames, filenames, dir_fd in os.fwalk(
                real, onerror=failed, follow_symlinks=False
            ):
                if not self.recursive:
                    dirnames.clear()
                for name in sorted(filenames):
                    if stop.is_set():
                        return
                    if not any(fnmatchcase(name, glob) for glob in self.globs):
                        continue
                    try:
                        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISLNK(st.st_mode):
                        walk.symlinks += 1
                    elif not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                        continue
                    elif st.st_nlink > 1:
                        walk.hard_linked += 1
                    else:
                        seen.add((st.st_dev, st.st_ino))
                        yield Found(dirpath, name, dir_fd, st)

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        if action == "cleanup_disk":
            return await in_thread(lambda stop: self._cleanup(stop, dry_run))
        return await in_thread(lambda stop: self._rotate(stop, dry_run))

    def _cleanup(self, stop: threading.Event, dry_run: bool) -> StepOutcome:
        walk = Walk()
        cutoff = time.time() - self.older_than_days * DAY
        done: list[str] = []
        freed = 0
        for found in self.walk(stop, walk):
            if found.stat.st_mtime >= cutoff:
                continue
            if not dry_run:
                try:
                    os.unlink(found.name, dir_fd=found.dir_fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    walk.problems.append(f"cannot delete {found.path}: {exc.strerror}")
                    continue
            done.append(f"{found.path} ({size(found.stat.st_size)})")
            freed += found.stat.st_size
        what = (
            f"{plural(len(done), 'file')} older than {self.older_than_days:g} days matching "
            f"{', '.join(self.globs)}"
        )
        head = (
            f"would delete {what}, {size(freed)}"
            if dry_run
            else f"deleted {what}, freed {size(freed)}"
        )
        lines = [head + (":" if done else ""), listing(done), *walk.notes()]
        return StepOutcome(not walk.problems, "\n".join(line for line in lines if line))

    def _rotate(self, stop: threading.Event, dry_run: bool) -> StepOutcome:
        walk = Walk()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        lines: list[str] = []
        empty = 0
        for found in self.walk(stop, walk):
            if ROTATION.search(found.name):
                continue
            if found.stat.st_size == 0:
                empty += 1
                continue
            old = rotations(found.dir_fd, found.name)
            drop = old[: max(0, len(old) + 1 - self.keep)]
            if dry_run:
                target = f"{found.name}.{stamp}{'.gz' if self.compress else ''}"
                lines.append(
                    f"would copy {found.path} ({size(found.stat.st_size)}) to {target}"
                    " and truncate it"
                )
            else:
                try:
                    rotated, copied = self._rotate_one(found, stamp)
                    lines.append(f"rotated {found.path} ({size(copied)}) to {rotated}")
                    for name in drop:
                        os.unlink(name, dir_fd=found.dir_fd)
                except OSError as exc:
                    walk.problems.append(f"cannot rotate {found.path}: {exc.strerror or exc}")
                    continue
            if drop:
                verb = "would remove" if dry_run else "removed"
                lines.append(f"  {verb} old rotations (keeping {self.keep}): {', '.join(drop)}")
        if not lines:
            lines.append(f"no non-empty logs matching {', '.join(self.globs)}")
        if empty:
            lines.append(f"left {plural(empty, 'empty log')} alone")
        lines += walk.notes()
        return StepOutcome(not walk.problems, "\n".join(lines))

    def _rotate_one(self, found: Found, stamp: str) -> tuple[str, int]:
        """Copy the log to a new rotation (gzipped if so configured), then truncate it."""
        suffix = ".gz" if self.compress else ""
        source = os.open(found.name, os.O_RDWR | os.O_NOFOLLOW, dir_fd=found.dir_fd)
        try:
            for n in range(1000):
                rotated = f"{found.name}.{stamp}{f'-{n}' if n else ''}{suffix}"
                try:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    target = os.open(
                        rotated, flags, found.stat.st_mode & 0o666, dir_fd=found.dir_fd
                    )
                    break
                except FileExistsError:
                    continue
            else:
                raise FileExistsError(f"no free rotation name for {found.path}")
            with os.fdopen(source, "rb", closefd=False) as src, os.fdopen(target, "wb") as dst:
                if self.compress:
                    with gzip.GzipFile(found.name, "wb", fileobj=dst) as packed:
                        shutil.copyfileobj(src, packed)
                else:
                    shutil.copyfileobj(src, dst)
                copied = src.tell()
            os.ftruncate(source, 0)
        finally:
            os.close(source)
        return rotated, copied
