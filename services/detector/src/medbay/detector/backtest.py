"""Replay a recorded ``timestamp,value`` series through a detector.

Backtests must see exactly what the service would: the same detector class, fed
one value at a time, so each score depends only on the rows before it. Hence
this streams the csv rather than loading it, and shares ``make_detector`` with
the service.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator

import numpy as np

from medbay.detector.anomaly import make_detector

HEADER = ("timestamp", "value")


class CsvInputError(ValueError):
    """A malformed input line; the message starts with ``line N:``."""


def score_csv(lines: Iterable[str], detector: str = "sigma3") -> Iterator[tuple[str, float]]:
    """Yield ``(timestamp, anomaly_score)`` for each data row of a ``timestamp,value`` csv.

    Raises ``CsvInputError`` naming the line on a bad header or row (after the
    rows before it have been yielded); raises ``ValueError`` for an unknown
    detector name before reading anything.
    """
    model = make_detector(detector)
    model.add_series(1)
    row = np.zeros(1, dtype=np.intp)
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(field.strip() for field in header) != HEADER:
        got = "empty input" if header is None else repr(",".join(header))
        raise CsvInputError(f"line 1: expected header 'timestamp,value', got {got}")
    for record in reader:
        if not record:  # blank line
            continue
        if len(record) != 2:
            raise CsvInputError(
                f"line {reader.line_num}: expected 2 fields 'timestamp,value', got {len(record)}"
            )
        timestamp, text = record
        try:
            value = float(text)
        except ValueError:
            raise CsvInputError(f"line {reader.line_num}: value {text!r} is not a number") from None
        if not math.isfinite(value):
            raise CsvInputError(f"line {reader.line_num}: value {text!r} is not finite")
        score = model.step(row, np.array([value]))
        yield timestamp, float(score[0])
