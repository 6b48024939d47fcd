"""Directory budgets: how many bytes each configured directory holds, against its budget.

A log flood or a directory filling up shows as ``directory_budget_percent``
going past 100 long before the filesystem is full, however large it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from medbay.collector.config import DirectoryBudget
from medbay.collector.samples import BYTES, PERCENT, sample
from medbay.common.events import MetricSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectorySize:
    bytes: int
    """The sum of the sizes of the regular files counted."""
    complete: bool
    """False when the walk stopped at ``max_entries``: ``bytes`` is then a lower bound."""


def directory_size(path: str, max_entries: int) -> DirectorySize:
    """The bytes of the regular files under ``path``, looking at ``max_entries`` entries at most.

    Symbolic links are not followed (a link counts as an entry, its target does
    not), so nothing outside ``path`` is counted and no loop is possible. A
    subdirectory that vanishes or cannot be read meanwhile is skipped; ``path``
    itself not being a readable directory raises ``OSError``.
    """
    total = 0
    entries = 0
    pending = [path]
    while pending:
        current = pending.pop()
        try:
            listing = os.scandir(current)
        except OSError:
            if current == path:
                raise
            continue
        with listing:
            for entry in listing:
                entries += 1
                if entries > max_entries:
                    return DirectorySize(total, complete=False)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:  # removed meanwhile
                    continue
    return DirectorySize(total, complete=True)


class DirectoryBudgets:
    """Reads ``directory_bytes`` and ``directory_budget_percent`` of each directory.

    Blocking (it walks the directories): run it in a thread. A directory that
    is missing or unreadable reports nothing, and one whose walk stopped at
    ``max_entries`` reports what it counted; each is logged once, until it
    changes.
    """

    def __init__(self, directories: Sequence[DirectoryBudget]) -> None:
        self.directories = list(directories)
        self._unreadable: set[str] = set()
        self._truncated: set[str] = set()

    def read(self) -> list[MetricSample]:
        samples: list[MetricSample] = []
        for directory in self.directories:
            size = self._size(directory)
            if size is not None:
                samples += [
                    sample("directory_bytes", size.bytes, BYTES, directory=directory.name),
                    sample(
                        "directory_budget_percent",
                        100.0 * size.bytes / directory.budget_bytes,
                        PERCENT,
                        directory=directory.name,
                    ),
                ]
        return samples

    def _size(self, directory: DirectoryBudget) -> DirectorySize | None:
        name = directory.name
        try:
            size = directory_size(str(directory.path), directory.max_entries)
        except OSError as exc:
            if name not in self._unreadable:
                self._unreadable.add(name)
                log.warning(
                    "directory %s: cannot read %s (%s); reporting nothing for it",
                    name,
                    directory.path,
                    exc.strerror or type(exc).__name__,
                )
            return None
        if name in self._unreadable:
            self._unreadable.discard(name)
            log.info("directory %s: %s is readable again", name, directory.path)
        if not size.complete and name not in self._truncated:
            self._truncated.add(name)
            log.warning(
                "directory %s: more than %d entries under %s; counting only the first %d, "
                "so its size is a lower bound",
                name,
                directory.max_entries,
                directory.path,
                directory.max_entries,
            )
        elif size.complete:
            self._truncated.discard(name)
        return size
