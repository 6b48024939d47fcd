"""``python -m medbay.planner.main``: read the config, then run the service.

The service (and scikit-learn with it, seconds to import) loads only once the
config is known to be good, so a bad config is reported at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from medbay.planner.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="medbay run planner")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(p) if (p := os.environ.get("MEDBAY_PLANNER_CONFIG")) else None,
        help="planner config YAML (default: $MEDBAY_PLANNER_CONFIG, else built-in defaults)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"medbay planner: bad config: {exc}", file=sys.stderr)
        sys.exit(2)
    from medbay.planner.service import serve

    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
