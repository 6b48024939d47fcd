"""``python -m medbay.detector.main``: METRICS in, ISSUES out.

Wiring only: the partitions this replica holds and their consumers (one per
partition, ``detector-<p>``, made as partitions are taken) are in ``service`` and
``ownership``, the logic in ``engine`` (what is wrong) and ``anomaly``, and
surviving restarts and takeovers in ``snapshots``.
"""

from __future__ import annotations

import asyncio
import sys

from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line
from medbay.common.streams import METRICS
from medbay.detector.config import DetectorConfig, load_config
from medbay.detector.partitions import replica_id
from medbay.detector.service import DetectorService


async def serve(config: DetectorConfig, replica: str) -> None:
    rt = ServiceRuntime("detector")
    detector = DetectorService(rt, config, replica)
    silence = [detector.silence_loop] if config.silence.enabled else []
    await rt.run(
        needs=[METRICS],
        on_start=detector.start,
        tasks=[detector.ownership_loop, detector.snapshot_loop, *silence],
        on_stop=detector.stop,
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("detector", argv, load_config, otherwise="built-in rules")
    try:
        replica = replica_id(config.partitions.replica_id)
    except ValueError as exc:
        print(f"medbay detector: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    asyncio.run(serve(config, replica))


if __name__ == "__main__":
    main()
