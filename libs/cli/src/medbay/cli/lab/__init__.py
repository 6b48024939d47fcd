"""``medbay lab``: break real things on purpose and measure how Medbay heals them.

It builds a sandbox on this machine (``sandbox``), runs the whole pipeline live
against it, injects the faults of ``faults`` one at a time in a seeded random
order with quiet periods between them, and prints what became of each
(``score``): auto-resolved and verified, escalated to a person, or left silent;
MTTR; needless actions; actions outside policy. ``--quiet DURATION`` runs no
fault at all: a soak, with the machine kept busy, that must raise nothing.
``--train`` trains a planner on the faults and compares it with the rule table
on held-out ones (``train``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

DEFAULT_QUIET_SECONDS = 60.0
DEFAULT_TRAIN_ROUNDS = 5


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m`` or ``1h`` as seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 1h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="inject real faults into a sandbox and measure how Medbay heals them",
        description="Build a sandbox on this machine (services, Redis, PostgreSQL, files; "
        "all on free ports in a temp directory), run Medbay live against it, inject "
        "faults one at a time in a random order, and print per fault kind: injected, "
        "detected, auto-resolved and verified, escalated to a person, MTTR, needless "
        "actions, actions outside policy. Nothing outside the sandbox is touched.",
    )
    p.add_argument("--seed", type=int, default=1, help="the random order and timing (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every fault (default 3)")
    p.add_argument(
        "--faults", default="", help="comma-separated fault kinds (default: all of them)"
    )
    p.add_argument(
        "--quiet-period",
        type=duration,
        default=DEFAULT_QUIET_SECONDS,
        metavar="DURATION",
        help=f"the quiet period before the faults (default {DEFAULT_QUIET_SECONDS:.0f}s)",
    )
    p.add_argument(
        "--quiet",
        type=duration,
        metavar="DURATION",
        help="no faults: a soak of DURATION (e.g. 30m) with the machine kept busy, "
        "counting issues, plans and actions (all must be zero)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="train a planner on the lab's faults (exploring), copy its model (labelled "
        "lab-trained) to DATA_DIR/lab/model.zip for a real planner to adopt and its "
        "outcomes to DATA_DIR/lab/outcomes.json, then run the held-out faults of --seed "
        "and --rounds with that model and again with the rule table, and compare them",
    )
    p.add_argument(
        "--train-rounds",
        type=int,
        default=DEFAULT_TRAIN_ROUNDS,
        metavar="N",
        help=f"with --train: rounds of every fault to learn from (default {DEFAULT_TRAIN_ROUNDS})",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".medbay"),
        help="the latest report goes to DATA_DIR/lab/latest.json (for the dashboard)",
    )
    p.add_argument("--keep", action="store_true", help="keep the sandbox's files and logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medbay.cli.lab.main import main

    return main(args)
