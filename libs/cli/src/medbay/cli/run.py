"""``medbay run SERVICE``: run one service in the foreground."""

from __future__ import annotations

import argparse

from medbay.cli.services import SERVICES, entry_point


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run one service in the foreground",
        description="Run one Medbay service. Options after the name go to the service "
        "(e.g. medbay run collector --config collector.yaml).",
    )
    p.add_argument("service", choices=sorted(SERVICES))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the service's own options")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entry_point(args.service)(args.args)
    return 0
