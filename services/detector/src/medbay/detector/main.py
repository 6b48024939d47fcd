"""``python -m medbay.detector.main``: METRICS in, ISSUES out.

Wiring only: the bus handlers and the silence clock are in ``service``, the logic
in ``engine`` (what is wrong) and ``anomaly``, and surviving restarts in ``snapshots``.
"""

from __future__ import annotations

import asyncio

from medbay.common.access import DETECTOR_METRICS
from medbay.common.bus import consumer
from medbay.common.events import MetricBatch
from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line
from medbay.common.streams import METRICS
from medbay.detector.config import DetectorConfig, load_config
from medbay.detector.service import DetectorService


async def serve(config: DetectorConfig) -> None:
    rt = ServiceRuntime("detector")
    detector = DetectorService(rt, config)
    metrics = consumer(
        rt,
        DETECTOR_METRICS,
        detector.handle,
        MetricBatch,
        batch_size=config.batch_size,
        deliver_new=True,
    )

    async def start() -> None:
        await detector.start()
        await metrics.open()  # before ready: nothing published from then on is missed

    silence = [detector.silence_loop] if config.silence.enabled else []
    await rt.run(
        needs=[METRICS],
        on_start=start,
        tasks=[metrics.run, detector.snapshot_loop, *silence],
        on_stop=detector.flush,
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("detector", argv, load_config, otherwise="built-in rules")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
