"""The Medbay services this command knows how to run."""

from __future__ import annotations

import importlib
from collections.abc import Callable

SERVICES: dict[str, str] = {
    "collector": "medbay.collector.main",
    "detector": "medbay.detector.main",
    "planner": "medbay.planner.main",
    "executor": "medbay.executor.main",
    "approver": "medbay.approver.main",
    "gateway": "medbay.gateway.main",
}


def entry_point(name: str) -> Callable[[list[str] | None], None]:
    module = importlib.import_module(SERVICES[name])
    main: Callable[[list[str] | None], None] = module.main
    return main
