"""The catalog of the executor's targets, for the planner: what each may do and the
names it answers to in issues, so that a plan names a real target or none.

A target answers to its own name, to the names its ``covers`` lists, and to names
that follow from its own settings beyond doubt (``Target.derived_covers``): a
``process_name`` target's names, a ``systemd`` unit (with and without
``.service``), a ``docker`` container, a ``kubernetes`` deployment (also as
``namespace/deployment``), a ``files`` target's directories and the mounts they
are on. A derived name that another target also answers to (by its name, its
``covers`` or its own derivation) is left out for both: an ambiguous name picks
no target. Configured ``covers`` are checked when the config is loaded
(``config``): two targets may not cover one name.

Its actions are those the target supports as configured and the allowlist
permits; a target with none is listed all the same, with an empty list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from medbay.common.actions import ACTIONS
from medbay.common.events import ActionName
from medbay.common.records import CatalogTarget, TargetCatalog
from medbay.executor.safety_config import SafetyConfig
from medbay.executor.targets import Target


def permitted_actions(name: str, target: Target, safety: SafetyConfig) -> list[ActionName]:
    """The actions ``target`` can take and the allowlist permits, in catalog order."""
    return [a for a in ACTIONS if a in target.actions and safety.allows(a, name)]


def build_catalog(
    targets: Mapping[str, Target],
    safety: SafetyConfig,
    mode: Literal["dry-run", "live"],
    now: datetime,
) -> tuple[TargetCatalog, list[str]]:
    """The catalog, and a note for each derived name left out as ambiguous."""
    derived = {name: target.derived_covers() for name, target in targets.items()}
    claims: Counter[str] = Counter(list(targets))
    for name, target in targets.items():
        claims.update(set(target.covers) | set(derived[name]))
    notes: list[str] = []
    entries: dict[str, CatalogTarget] = {}
    for name, target in sorted(targets.items()):
        covers = list(target.covers)
        for cover in derived[name]:
            if cover == name or cover in covers:
                continue
            if claims[cover] > 1:
                notes.append(f"{name} does not cover {cover!r}: another target answers to it")
                continue
            covers.append(cover)
        entries[name] = CatalogTarget(
            kind=target.kind,
            actions=permitted_actions(name, target, safety),
            covers=covers,
        )
    return TargetCatalog(mode=mode, targets=entries, written_at=now), notes
