"""The files target on real files in temp dirs: log rotation and disk cleanup."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest

from medbay.executor.targets import FilesTarget

DAY = 86_400


def age(path: Path, days: float) -> None:
    """Set the file's times (not its target's, for a symlink) ``days`` in the past."""
    then = time.time() - days * DAY
    os.utime(path, (then, then), follow_symlinks=False)


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: file contents, or where a symlink points."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


def files(tmp_path: Path, **fields: object) -> FilesTarget:
    return FilesTarget.model_validate({"kind": "files", "directories": [tmp_path], **fields})


async def test_rotate_compresses_and_truncates(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    content = b"".join(b"line %d\n" % i for i in range(5000))
    (logs / "app.log").write_bytes(content)
    (logs / "empty.log").touch()
    (logs / "notes.txt").write_text("not a log")
    target = files(logs, globs=["*.log"])

    outcome = await target.perform("rotate_logs", {}, dry_run=False)

    assert outcome.ok, outcome.output
    [rotation] = logs.glob("app.log.*.gz")
    assert gzip.decompress(rotation.read_bytes()) == content
    assert (logs / "app.log").stat().st_size == 0
    assert f"rotated {logs / 'app.log'} (" in outcome.output
    assert rotation.name in outcome.output
    assert "left 1 empty log alone" in outcome.output
    assert (logs / "notes.txt").read_text() == "not a log"
    assert not list(logs.glob("empty.log.*"))


async def test_rotate_keeps_at_most_keep_rotations(tmp_path: Path) -> None:
    for stamp in ("20240101T000000Z", "20240102T000000Z", "20240102T000000Z-1"):
        (tmp_path / f"app.log.{stamp}.gz").write_bytes(gzip.compress(stamp.encode()))
    (tmp_path / "app.log").write_text("new\n")
    target = files(tmp_path, globs=["app.log*"], keep=2, compress=False)

    outcome = await target.perform("rotate_logs", {}, dry_run=False)

    assert outcome.ok, outcome.output
    left = sorted(p.name for p in tmp_path.glob("app.log.*"))
    assert "app.log.20240102T000000Z-1.gz" in left  # the newest old one stays
    assert len(left) == 2
    [new] = [name for name in left if not name.endswith(".gz")]
    assert (tmp_path / new).read_text() == "new\n"  # compress: false keeps a plain copy
    assert "removed old rotations (keeping 2): app.log.20240101T000000Z.gz, " in outcome.output
    assert "app.log.20240102T000000Z.gz" in outcome.output


async def test_dry_run_rotate_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("hello\n" * 100)
    for n in range(3):
        (tmp_path / f"app.log.2024010{n + 1}T000000Z.gz").write_bytes(b"old")
    before = tree(tmp_path)
    target = files(tmp_path, globs=["*.log"], keep=2)

    outcome = await target.perform("rotate_logs", {}, dry_run=True)

    assert outcome.ok
    assert tree(tmp_path) == before
    assert f"would copy {tmp_path / 'app.log'} (600 bytes) to app.log." in outcome.output
    assert ".gz and truncate it" in outcome.output
    assert (
        "would remove old rotations (keeping 2): "
        "app.log.20240101T000000Z.gz, app.log.20240102T000000Z.gz"
    ) in outcome.output


@pytest.fixture
def cluttered(tmp_path: Path) -> tuple[Path, Path]:
    """A directory to clean and, beside it, one that must never be touched."""
    root = tmp_path / "tmp"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "old1.tmp").write_bytes(b"x" * 1000)
    (root / "old2.tmp").write_bytes(b"y" * 500)
    (root / "recent.tmp").write_bytes(b"z")
    (root / "old.keep").write_bytes(b"not matching")
    (root / "sub").mkdir()
    (root / "sub" / "deep.tmp").write_bytes(b"deep")
    (outside / "secret.tmp").write_bytes(b"outside")
    (root / "link.tmp").symlink_to(outside / "secret.tmp")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    os.link(outside / "secret.tmp", root / "hard.tmp")
    for path in [*root.rglob("*"), *outside.rglob("*")]:
        if path.name != "recent.tmp":
            age(path, 30)
    return root, outside


async def test_cleanup_deletes_only_old_matching_files_inside(
    cluttered: tuple[Path, Path],
) -> None:
    root, outside = cluttered
    outside_before = tree(outside)
    target = files(root, globs=["*.tmp"], older_than_days=7)

    outcome = await target.perform("cleanup_disk", {}, dry_run=False)

    assert outcome.ok, outcome.output
    assert sorted(tree(root)) == [
        "hard.tmp",
        "link.tmp",
        "linked-dir",
        "old.keep",
        "recent.tmp",
        "sub/deep.tmp",  # not recursive
    ]
    assert tree(outside) == outside_before
    assert outcome.output.startswith(
        "deleted 2 files older than 7 days matching *.tmp, freed 1.5 KiB:"
    )
    assert "left 1 matching symlink alone (never followed)" in outcome.output
    assert "left 1 matching file with other hard links alone" in outcome.output


async def test_recursive_cleanup_does_not_follow_symlinked_dirs(
    cluttered: tuple[Path, Path],
) -> None:
    root, outside = cluttered
    outside_before = tree(outside)
    target = files(root, globs=["*.tmp"], recursive=True)

    outcome = await target.perform("cleanup_disk", {}, dry_run=False)

    assert outcome.ok, outcome.output
    assert not (root / "sub" / "deep.tmp").exists()
    assert tree(outside) == outside_before
    assert "freed 1.5 KiB" in outcome.output  # 1000 + 500 + 4 bytes
    assert "deleted 3 files" in outcome.output


async def test_dry_run_cleanup_lists_and_touches_nothing(cluttered: tuple[Path, Path]) -> None:
    root, _ = cluttered
    before = tree(root)
    target = files(root, globs=["*.tmp"])

    outcome = await target.perform("cleanup_disk", {}, dry_run=True)

    assert outcome.ok
    assert tree(root) == before
    assert outcome.output.startswith("would delete 2 files older than 7 days matching *.tmp")
    assert f"{root / 'old1.tmp'} (1000 bytes)" in outcome.output
    assert f"{root / 'old2.tmp'} (500 bytes)" in outcome.output
    assert "recent" not in outcome.output


async def test_a_symlinked_configured_directory_is_resolved_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "old.tmp").write_text("x")
    age(real / "old.tmp", 10)
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)

    outcome = await files(tmp_path / "alias", globs=["*.tmp"]).perform(
        "cleanup_disk", {}, dry_run=False
    )

    assert outcome.ok, outcome.output
    assert not (real / "old.tmp").exists()
    assert str(real / "old.tmp") in outcome.output


async def test_a_missing_directory_is_a_failure(tmp_path: Path) -> None:
    target = files(tmp_path / "nope", globs=["*.tmp"])
    outcome = await target.perform("cleanup_disk", {}, dry_run=False)
    assert not outcome.ok
    assert f"{tmp_path / 'nope'} is not a directory" in outcome.output
