"""``medbay detect FILE.csv``: score a recorded series with a service detector.

Prints ``timestamp,anomaly_score`` per input row as it goes, which is the
format NAB's scorer (and any spreadsheet) reads, so a detector can be
backtested on recorded data without running the platform.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from medbay.detector.anomaly import DETECTORS
from medbay.detector.backtest import CsvInputError, score_csv


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="score a timestamp,value csv with an anomaly detector",
        description="Stream a 'timestamp,value' csv through an anomaly detector and "
        "print 'timestamp,anomaly_score' per row (each score uses only earlier rows).",
    )
    parser.add_argument("file", metavar="FILE.csv", help="csv with header 'timestamp,value'")
    parser.add_argument(
        "--detector",
        default="sigma3",
        choices=sorted(DETECTORS),
        help="anomaly detector (default: sigma3)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        source = open(args.file, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"medbay detect: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        with source:
            out.write("timestamp,anomaly_score\n")
            for timestamp, score in score_csv(source, args.detector):
                out.write(f"{timestamp},{score!r}\n")
            out.flush()
    except CsvInputError as exc:
        print(f"medbay detect: {args.file}: {exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"medbay detect: {args.file}: not a UTF-8 text file", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Piped into e.g. `head`: the reader has what it wants. Point stdout at
        # /dev/null so the interpreter's final flush doesn't raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="medbay")
    register(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args()
    sys.exit(_args.func(_args))
