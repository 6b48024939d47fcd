"""``python -m medbay.planner.main``: read the config, then run the service.

The service (and scikit-learn with it, seconds to import) loads only once the
config is known to be good, so a bad config is reported at once.
"""

from __future__ import annotations

import asyncio

from medbay.common.settings import config_from_command_line
from medbay.planner.config import load_config


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("planner", argv, load_config, otherwise="defaults")
    from medbay.planner.service import serve

    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
