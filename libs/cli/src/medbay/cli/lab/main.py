"""``medbay lab`` itself: options in, figures out (see ``medbay.cli.lab``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from medbay.cli.lab.faults import FAULTS, FAULTS_BY_KIND
from medbay.cli.lab.run import RunOptions, print_summary, run_lab, write_report
from medbay.cli.lab.sandbox import LabConfig, SandboxError


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
    options = RunOptions(
        seed=args.seed,
        rounds=0 if soak else args.rounds,
        faults=() if soak else tuple(FAULTS_BY_KIND[k] for k in chosen) or FAULTS,
        quiet_seconds=args.quiet if soak else args.quiet_period,
        lab=LabConfig(busy=True, interval_seconds=5.0) if soak else LabConfig(train=args.train),
        keep=args.keep,
        model_file=args.data_dir / "lab" / "model.zip" if args.train else None,
    )
    try:
        summary = asyncio.run(run_lab(options))
    except SandboxError as exc:
        raise SystemExit(f"medbay lab: {exc}") from None
    print_summary(summary)
    write_report(summary, args.data_dir / "lab" / "latest.json")
    if args.json:
        write_report(summary, args.json)
    totals = summary["totals"]
    clean = (
        totals["as_expected"] == totals["injected"]
        and totals["needless_actions"] == 0
        and totals["outside_policy"] == 0
        and totals["quiet_issues"] == 0
    )
    if not clean:
        print("medbay lab: not every fault ended as expected; see above", file=sys.stderr)
    return 0 if clean else 1
