"""The lab test runs beside the rest of the suite (see tests/lab_run.py)."""

from __future__ import annotations

import pytest

from tests.lab_run import LAB_RUN, start_lab

LAB_TEST = "tests/test_lab.py::test_every_fault_is_healed_or_escalated_and_the_quiet_raises_nothing"


@pytest.hookimpl(trylast=True)  # after -k, -m and --deselect have chosen the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """When the lab test is to run, it goes last and its lab starts now."""
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
