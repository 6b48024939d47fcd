"""Replay a recorded ``timestamp,value`` series through a detector.

Backtests must see exactly what the service would: the same detector class, fed
one value at a time, so each score depends only on the rows before it. What is
reported of the scores differs: the service opens an issue after ``for_samples``
anomalous samples in a row, a backtest reports events (``EventFilter``). Hence
this streams the csv rather than loading it, and shares ``make_detector`` with
the service.
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import numpy as np

from medbay.detector.anomaly import DEFAULT_DETECTOR, make_detector

HEADER = ("timestamp", "value")


class CsvInputError(ValueError):
    """A malformed input line; the message starts with ``line N:``."""


EVENT_SAMPLES = 50
"""A score is reported as a new event when it is higher than each of this many before."""


class EventFilter:
    """Scores as events: a score is kept where it is higher than every score of the
    previous ``EVENT_SAMPLES`` samples and is 0 elsewhere, so an anomaly is reported
    when it starts or grows, not again for each sample it lasts. A benchmark that counts
    each flagged sample outside an incident as a false alarm (NAB) scores events; the
    service instead waits for ``for_samples`` anomalous samples in a row."""

    def __init__(self, samples: int = EVENT_SAMPLES) -> None:
        self.recent: deque[float] = deque(maxlen=samples)

    def __call__(self, score: float) -> float:
        event = score if score > max(self.recent, default=0.0) else 0.0
        self.recent.append(score)
        return event


def epoch_seconds(text: str) -> float:
    """An ISO 8601 time (UTC when it names no zone) or Unix seconds, in seconds since the
    epoch; ``ValueError`` for anything else."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        seconds = float(text)  # ValueError when not a number either
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r} is not finite") from None
        return seconds
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def score_csv(
    lines: Iterable[str], detector: str = DEFAULT_DETECTOR, events: bool = True
) -> Iterator[tuple[str, float]]:
    """Yield ``(timestamp, anomaly_score)`` for each data row of a ``timestamp,value`` csv,
    as events (``EventFilter``) unless ``events`` is false.

    Raises ``CsvInputError`` naming the line on a bad header or row (after the
    rows before it have been yielded); raises ``ValueError`` for an unknown
    detector name before reading anything.
    """
    model = make_detector(detector)
    model.add_series(1)
    report = EventFilter() if events else float
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
            at = epoch_seconds(timestamp)
        except ValueError:
            raise CsvInputError(
                f"line {reader.line_num}: timestamp {timestamp!r} is not a time "
                "(use ISO 8601, e.g. 2014-04-01 00:00:00, or Unix seconds)"
            ) from None
        try:
            value = float(text)
        except ValueError:
            raise CsvInputError(f"line {reader.line_num}: value {text!r} is not a number") from None
        if not math.isfinite(value):
            raise CsvInputError(f"line {reader.line_num}: value {text!r} is not finite")
        score = model.step(row, np.array([value]), np.array([at]))
        yield timestamp, report(float(score[0]))
