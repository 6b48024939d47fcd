"""``medbay detect FILE.csv``: score a recorded series with a service detector.

Prints ``timestamp,anomaly_score`` per input row as it goes, which is the
format NAB's scorer (and any spreadsheet) reads, so a detector can be
backtested on recorded data without running the platform. The scores are events
(a score where it rises above each of the 50 before, 0 elsewhere) unless
``--raw`` asks for every sample's score, which is what the service debounces. Each timestamp must
be an ISO 8601 time (``2014-04-01 00:00:00``, UTC when it names no zone;
``2026-01-31T12:00:00Z``) or Unix seconds: the default detector judges a value by
the time of day too. The first line that has none is reported with its number.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from medbay.cli.names import DEFAULT_DETECTOR, DETECTOR_NAMES


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
        default=DEFAULT_DETECTOR,
        choices=DETECTOR_NAMES,
        help=f"anomaly detector (default: {DEFAULT_DETECTOR}, the service's default)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="print every sample's score, as the service sees it (default: events, a score "
        "only where it is higher than each of the 50 before, as NAB's scorer expects)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medbay.detector.backtest import CsvInputError, score_csv

    try:
        source = open(args.file, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"medbay detect: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        with source:
            out.write("timestamp,anomaly_score\n")
            for timestamp, score in score_csv(source, args.detector, events=not args.raw):
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
