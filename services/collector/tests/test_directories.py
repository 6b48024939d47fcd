"""Directory budgets on real files: what is counted, the entry limit, a missing directory."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from medbay.collector.config import CollectorConfig, DirectoryBudget
from medbay.collector.directories import DirectoryBudgets, DirectorySize, directory_size

Dicts = Callable[..., list[dict[str, Any]]]
LOGGER = "medbay.collector.directories"
NOBODY = 65534
T = TypeVar("T")


def budgets(*directories: dict[str, Any]) -> list[DirectoryBudget]:
    return CollectorConfig.model_validate({"directories": list(directories)}).directories


def series(samples: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, str]]:
    return {(s["name"], s["labels"]["directory"]): (s["value"], s["unit"]) for s in samples}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return found


def unprivileged(work: Callable[[], T]) -> T:
    """``work()`` run in a forked child that file modes do apply to.

    Root reads every directory whatever its mode, so as root the child first
    becomes nobody (no exec: the interpreter is already loaded in the fork). Not
    as root it keeps its user. What ``work`` returns or raises comes back pickled.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, whatever happens
        status = 1
        try:
            os.close(read_end)
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                outcome: tuple[bool, object] = (True, work())
            except BaseException as exc:
                outcome = (False, exc)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        sent = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    returned, value = pickle.loads(sent)
    if not returned:
        raise value
    return cast(T, value)


class Recorder(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def logged(work: Callable[[], T]) -> Callable[[], tuple[T, list[str]]]:
    """``work`` that also returns what it logged (caplog does not see a child's records)."""

    def run() -> tuple[T, list[str]]:
        handler = Recorder(logging.INFO)
        logger = logging.getLogger(LOGGER)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            result = work()
        finally:
            logger.removeHandler(handler)
        return result, [r.getMessage() for r in handler.records]

    return run


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory that nobody can reach (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="medbay-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for directory, subdirectories, _ in os.walk(path):
        for name in subdirectories:
            os.chmod(os.path.join(directory, name), 0o755, follow_symlinks=False)
    shutil.rmtree(path)


def test_regular_files_are_summed_links_not_followed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "app" / "old").mkdir(parents=True)
    (logs / "app.log").write_bytes(b"x" * 1000)
    (logs / "app" / "worker.log").write_bytes(b"x" * 300)
    (logs / "app" / "old" / "worker.log.1").write_bytes(b"x" * 20)
    (logs / "empty").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * 50_000)
    (logs / "big-link").symlink_to(outside / "big")
    (logs / "dir-link").symlink_to(outside)
    (logs / "loop").symlink_to(logs)
    (logs / "dangling").symlink_to(tmp_path / "nothing")

    assert directory_size(str(logs), max_entries=100) == DirectorySize(1320, complete=True)


def test_samples_against_the_budget(tmp_path: Path, as_dicts: Dicts) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1500)
    reader = DirectoryBudgets(
        budgets({"name": "logs", "path": str(tmp_path), "budget_bytes": 1000})
    )
    assert series(as_dicts(reader.read())) == {
        ("directory_bytes", "logs"): (1500, "bytes"),
        ("directory_budget_percent", "logs"): (150, "%"),
    }
    (tmp_path / "a").unlink()
    assert series(as_dicts(reader.read()))[("directory_budget_percent", "logs")] == (0, "%")


def test_the_walk_stops_at_max_entries(
    tmp_path: Path, as_dicts: Dicts, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(10):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10)
    assert directory_size(str(tmp_path), max_entries=10) == DirectorySize(100, complete=True)
    assert directory_size(str(tmp_path), max_entries=4) == DirectorySize(40, complete=False)

    caplog.set_level(logging.INFO, logger=LOGGER)
    reader = DirectoryBudgets(
        budgets({"name": "spool", "path": str(tmp_path), "budget_bytes": 100, "max_entries": 4})
    )
    for _ in range(3):
        assert series(as_dicts(reader.read()))[("directory_bytes", "spool")] == (40, "bytes")
    assert warnings(caplog) == [
        f"directory spool: more than 4 entries under {tmp_path}; counting only the first 4, "
        "so its size is a lower bound"
    ]


def test_a_missing_directory_reports_nothing_and_is_logged_once(
    tmp_path: Path, as_dicts: Dicts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    missing = tmp_path / "later"
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    reader = DirectoryBudgets(
        budgets(
            {"name": "later", "path": str(missing), "budget_bytes": 10},
            {"name": "file", "path": str(a_file), "budget_bytes": 10},
        )
    )
    assert reader.read() == []
    assert reader.read() == []
    assert warnings(caplog) == [
        f"directory later: cannot read {missing} (No such file or directory); "
        "reporting nothing for it",
        f"directory file: cannot read {a_file} (Not a directory); reporting nothing for it",
    ]

    missing.mkdir()
    (missing / "x").write_bytes(b"x" * 5)
    assert series(as_dicts(reader.read())) == {
        ("directory_bytes", "later"): (5, "bytes"),
        ("directory_budget_percent", "later"): (50, "%"),
    }
    assert warnings(caplog) == [f"directory later: {missing} is readable again"]


def test_an_unreadable_subdirectory_is_skipped(shared_tmp: Path, as_dicts: Dicts) -> None:
    top = shared_tmp
    (top / "ok").write_bytes(b"x" * 7)
    (top / "open").mkdir()
    (top / "open" / "log").write_bytes(b"x" * 30)
    locked = top / "locked"
    (locked / "deeper").mkdir(parents=True)
    (locked / "secret").write_bytes(b"x" * 100)
    (locked / "deeper" / "more").write_bytes(b"x" * 2000)
    for directory in (top / "open", locked, locked / "deeper"):
        directory.chmod(0o755)  # whatever the umask

    def size(path: Path) -> DirectorySize:
        return directory_size(str(path), max_entries=100)

    reader = DirectoryBudgets(
        budgets(
            {"name": "top", "path": str(top), "budget_bytes": 100},
            {"name": "locked", "path": str(locked), "budget_bytes": 100},
        )
    )

    def read() -> list[dict[str, Any]]:
        return as_dicts(reader.read())

    # Before the lock, the child sees everything: what follows is the lock's doing.
    assert unprivileged(lambda: size(top)) == DirectorySize(2137, complete=True)

    locked.chmod(0)
    with pytest.raises(PermissionError):
        unprivileged(lambda: os.listdir(locked))
    # The locked subtree is left out, silently: the rest is counted in full.
    assert unprivileged(lambda: size(top)) == DirectorySize(37, complete=True)
    # The directory itself being unreadable is another matter.
    with pytest.raises(PermissionError):
        unprivileged(lambda: size(locked))

    samples, messages = unprivileged(logged(read))
    assert series(samples) == {
        ("directory_bytes", "top"): (37, "bytes"),
        ("directory_budget_percent", "top"): (37, "%"),
    }
    assert messages == [
        f"directory locked: cannot read {locked} (Permission denied); reporting nothing for it"
    ]
