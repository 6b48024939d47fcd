"""How long the ``medbay`` command takes to answer ``--help``.

``medbay bench cli [--runs 11]`` starts, for each case, a fresh interpreter
``--runs`` times and prints the median wall time, next to ``python -c pass``
(the interpreter's own start-up) measured in the same run, and what each case
adds on top of it. Every sub-command's parser is built from modules that import
nothing heavy, so ``--help`` costs little more than the interpreter itself.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("up", "--help"),
    ("status", "--help"),
    ("events", "tail", "--help"),
    ("approve", "--help"),
    ("replay", "--help"),
    ("detect", "--help"),
    ("bench", "--help"),
)


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    runs = max(1, args.runs)
    python = [sys.executable]
    baseline = median_seconds([*python, "-c", "pass"], runs)
    print(f"median of {runs} runs each; python {sys.version.split()[0]}")
    print(f"{'command':<36} {'median':>9} {'over baseline':>14}")
    print(f"{'python -c pass (baseline)':<36} {baseline * 1000:>7.0f} ms {'':>14}")
    for case in CASES:
        took = median_seconds([*python, "-m", "medbay.cli.main", *case], runs)
        name = "medbay " + " ".join(case)
        print(f"{name:<36} {took * 1000:>7.0f} ms {(took - baseline) * 1000:>+11.0f} ms")
    return 0
