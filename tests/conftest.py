"""The lab test runs beside the rest of the suite (see tests/lab_run.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.lab_run import LAB_RUN, LabRun, lab_root, start_lab

LAB_TEST = "tests/test_lab.py::test_every_fault_is_healed_or_escalated_and_the_quiet_raises_nothing"
LAB_ROOT = "medbay_lab_root"
"""The key of the lab's directory in what the session's process tells each xdist worker."""


class LabForWorkers:
    """In the process that runs the session with xdist workers: one lab for them all,
    started once the workers have collected the lab test."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.root: Path | None = None

    def pytest_configure_node(self, node: Any) -> None:
        if self.root is None:
            self.root = lab_root()
        node.workerinput[LAB_ROOT] = str(self.root)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        if LAB_TEST not in ids or LAB_RUN in self.config.stash or self.root is None:
            return
        run = start_lab(self.root)
        run.record_returncode()
        self.config.stash[LAB_RUN] = run

    def pytest_unconfigure(self) -> None:
        if self.root is not None and LAB_RUN not in self.config.stash:
            LabRun(self.root, proc=None).root.rmdir()


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the lab is the session process's
        if LAB_ROOT in workerinput:
            config.stash[LAB_RUN] = LabRun(Path(workerinput[LAB_ROOT]))
    elif config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(LabForWorkers(config), "medbay-lab-for-workers")


@pytest.hookimpl(trylast=True)  # after -k, -m and --deselect have chosen the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """When the lab test is to run, it goes last and its lab starts now (without
    workers; with them, the session's process starts it)."""
    lab = [item for item in items if item.nodeid == LAB_TEST]
    if not lab or config.option.collectonly or config.option.setuponly:
        return
    items[:] = [item for item in items if item not in lab] + lab
    if LAB_RUN not in config.stash:
        config.stash[LAB_RUN] = start_lab()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop a lab still running (the run stopped early: -x, Ctrl-C) and remove its files."""
    run = config.stash.get(LAB_RUN, None)
    if run is not None:
        run.stop()
