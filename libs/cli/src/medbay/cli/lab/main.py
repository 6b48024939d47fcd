"""``medbay lab`` itself: options in, figures out (see ``medbay.cli.lab``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from medbay.cli.lab.faults import FAULTS, FAULTS_BY_KIND
from medbay.cli.lab.run import RunOptions, git_commit, print_summary, run_lab, write_report
from medbay.cli.lab.sandbox import LabConfig, SandboxError
from medbay.cli.lab.train import print_training, run_training

T = TypeVar("T")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.rounds < 1:
        raise SystemExit("medbay lab: --rounds must be at least 1")
    chosen = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in FAULTS_BY_KIND]
    if unknown:
        raise SystemExit(
            f"medbay lab: unknown fault kind {', '.join(unknown)}; "
            f"known: {', '.join(FAULTS_BY_KIND)}"
        )
    soak = args.quiet is not None
    if soak and args.train:
        raise SystemExit("medbay lab: --train learns from faults; --quiet injects none")
    if args.train_rounds < 1:
        raise SystemExit("medbay lab: --train-rounds must be at least 1")
    git_commit()  # the commit that runs, before a long run
    lab_dir = args.data_dir / "lab"
    options = RunOptions(
        seed=args.seed,
        rounds=0 if soak else args.rounds,
        faults=() if soak else tuple(FAULTS_BY_KIND[k] for k in chosen) or FAULTS,
        quiet_seconds=args.quiet if soak else args.quiet_period,
        lab=LabConfig(busy=True, interval_seconds=5.0) if soak else LabConfig(),
        keep=args.keep,
        model_file=lab_dir / "model.zip" if args.train else None,
    )
    try:
        if args.train:
            corpus = lab_dir / "outcomes.json"
            run = run_training(options, args.train_rounds, corpus)
        else:
            run = run_lab(options)
        summary = asyncio.run(stopped_by_signals(run))
    except SandboxError as exc:
        raise SystemExit(f"medbay lab: {exc}") from None
    except asyncio.CancelledError:
        raise SystemExit("medbay lab: stopped; the sandbox was torn down") from None
    if args.train:
        print_training(summary)
    else:
        print_summary(summary)
    write_report(summary, lab_dir / "latest.json")
    if args.json:
        write_report(summary, args.json)
    if not clean(summary["totals"]):
        print("medbay lab: not every fault ended as expected; see above", file=sys.stderr)
        return 1
    baseline = summary.get("rule_table")
    if baseline is not None and not safe(baseline["totals"]):
        print("medbay lab: the rule table acted needlessly or outside policy", file=sys.stderr)
        return 1
    return 0


async def stopped_by_signals(run: Coroutine[Any, Any, T]) -> T:
    """``run``, cancelled by SIGTERM or SIGHUP as by Ctrl-C, so that the sandbox is
    torn down (its processes stopped, its files removed) however the lab is stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def clean(totals: dict[str, int]) -> bool:
    """Every fault as expected, nothing needless or outside policy, no false alarm.
    (With ``--train``: of the trained model's held-out run.)"""
    return totals["as_expected"] == totals["injected"] and safe(totals)


def safe(totals: dict[str, int]) -> bool:
    """Nothing needless or outside policy, no false alarm. (The rule table's held-out
    run of ``--train`` need only be safe: where it fails a fault the model may not,
    that is what the comparison shows.)"""
    return (
        totals["needless_actions"] == 0
        and totals["outside_policy"] == 0
        and totals["quiet_issues"] == 0
    )
