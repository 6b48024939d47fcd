"""Directory budgets on real files: what is counted, the entry limit, a missing directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medbay.collector.config import CollectorConfig, DirectoryBudget
from medbay.collector.directories import DirectoryBudgets, DirectorySize, directory_size

Dicts = Callable[..., list[dict[str, Any]]]
LOGGER = "medbay.collector.directories"


def budgets(*directories: dict[str, Any]) -> list[DirectoryBudget]:
    return CollectorConfig.model_validate({"directories": list(directories)}).directories


def series(samples: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, str]]:
    return {(s["name"], s["labels"]["directory"]): (s["value"], s["unit"]) for s in samples}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return found


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


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_an_unreadable_subdirectory_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "ok").write_bytes(b"x" * 7)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "secret").write_bytes(b"x" * 100)
    locked.chmod(0)
    try:
        assert directory_size(str(tmp_path), max_entries=100) == DirectorySize(7, complete=True)
    finally:
        locked.chmod(0o700)
