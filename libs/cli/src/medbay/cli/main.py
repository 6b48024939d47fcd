"""The ``medbay`` command. Each sub-command lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``.

Those modules import only the standard library at the top: what a command needs
(nats, numpy, faststream, ...) is imported when it runs, so ``medbay --help``
and every ``medbay COMMAND --help`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medbay.cli import output

COMMAND_MODULES = (
    "up",
    "auth",
    "run",
    "status",
    "events",
    "plans",
    "breaker",
    "replay",
    "schema",
    "detect",
    "rules",
    "bench",
    "lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medbay",
        description="Medbay: self-healing operations on NATS JetStream. Commands that talk "
        "to NATS use MEDBAY_NATS_URL, else the server of the `medbay up` running in this "
        "directory (.medbay/up.json), and say which on stderr.",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="don't say which NATS server is used"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"medbay.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    output.QUIET = args.quiet
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except (BrokenPipeError, output.OutputClosed):  # e.g. `medbay events tail | head`
        output.silence_stdout()
        code = 0
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
