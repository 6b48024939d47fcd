"""Statistical anomaly detectors.

A detector scores a *block* of series at once: each call to ``step`` brings one
new value for some rows of the block and returns each value's anomaly score in
[0, 1], computed from that series' history only (never from future values).
Working on blocks lets the service score a whole host scrape with a few numpy
operations; ``medbay detect`` runs the very same classes on a block of one series.

Add a detector by subclassing ``AnomalyDetector`` and registering it in
``DETECTORS``; the detector config chooses one per metric.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy.special import erf, ndtr

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

_SQRT2 = math.sqrt(2.0)


def two_sided_confidence(z: FloatArray) -> FloatArray:
    """P(|Z| < |z|) for a standard normal Z: 3 sigma gives 0.9973."""
    return np.asarray(erf(np.abs(z) / _SQRT2), dtype=np.float64)


def normal_tail(z: FloatArray) -> FloatArray:
    """P(Z > z) for a standard normal Z, with its relative precision kept far into the
    tail (where ``1 - erf`` rounds to 0 and would lose the ranking)."""
    return np.asarray(ndtr(-z), dtype=np.float64)


class AnomalyDetector(ABC):
    """Scores a growable block of series, one sample per series per step."""

    name: ClassVar[str]
    threshold: ClassVar[float]
    """Scores at or above this count as anomalous."""

    def __init__(self) -> None:
        self.size = 0

    @abstractmethod
    def add_series(self, count: int) -> None:
        """Append ``count`` new, empty series to the block."""

    @abstractmethod
    def reset(self, rows: IntArray) -> None:
        """Make ``rows`` empty again, as ``add_series`` makes them (their series left)."""

    @abstractmethod
    def step(self, rows: IntArray, values: FloatArray) -> FloatArray:
        """Score ``values[i]`` for series ``rows[i]`` and then learn it. Rows are unique."""

    @abstractmethod
    def get_state(self) -> dict[str, FloatArray]:
        """Arrays that fully describe the learned state (for snapshots).

        Every array has one entry per series on its first axis, so the state of
        some series can be cut out and put back (per-host snapshots rely on it).
        """

    @abstractmethod
    def set_state(self, state: dict[str, FloatArray]) -> None: ...


class Sigma3Detector(AnomalyDetector):
    """The 3-sigma rule over a rolling window of the last ``window`` samples.

    A value's score is P(|Z| < |z|) where z is its distance from the window's
    mean in standard deviations; z = 3 gives 0.9973, the threshold. Series with
    fewer than ``min_samples`` values score 0.

    Window sums are kept incrementally (O(1) per sample) on values shifted by each
    series' first value, to avoid cancellation, and recomputed exactly every
    time a series' ring wraps around, so rounding cannot accumulate.
    """

    name = "sigma3"
    threshold = 0.9973

    def __init__(self, window: int = 100, min_samples: int = 30) -> None:
        super().__init__()
        self.window = window
        self.min_samples = min_samples
        self.ring: FloatArray = np.zeros((0, window))
        self.count: FloatArray = np.zeros(0)
        self.pos: IntArray = np.zeros(0, dtype=np.intp)
        self.origin: FloatArray = np.zeros(0)
        self.total: FloatArray = np.zeros(0)
        self.total_sq: FloatArray = np.zeros(0)

    def add_series(self, count: int) -> None:
        self.ring = np.vstack([self.ring, np.zeros((count, self.window))])
        self.count = np.concatenate([self.count, np.zeros(count)])
        self.pos = np.concatenate([self.pos, np.zeros(count, dtype=np.intp)])
        self.origin = np.concatenate([self.origin, np.zeros(count)])
        self.total = np.concatenate([self.total, np.zeros(count)])
        self.total_sq = np.concatenate([self.total_sq, np.zeros(count)])
        self.size += count

    def reset(self, rows: IntArray) -> None:
        for column in (self.ring, self.count, self.pos, self.origin, self.total, self.total_sq):
            column[rows] = 0

    def step(self, rows: IntArray, values: FloatArray) -> FloatArray:
        n = self.count[rows]
        origin = np.where(n == 0, values, self.origin[rows])
        self.origin[rows] = origin
        shifted = values - origin
        safe_n = np.maximum(n, 1.0)
        total, total_sq = self.total[rows], self.total_sq[rows]
        mean = total / safe_n
        std = np.sqrt(np.maximum(total_sq / safe_n - mean * mean, 0.0))
        deviation = np.abs(shifted - mean)
        flat = std <= 1e-12 * np.maximum(1.0, np.abs(origin))
        with np.errstate(divide="ignore", invalid="ignore"):
            # A flat series that suddenly moves is as anomalous as it gets.
            z = np.where(flat, np.where(deviation > 1e-9, 99.0, 0.0), deviation / std)
        scores = np.where(n >= self.min_samples, two_sided_confidence(z), 0.0)

        pos = self.pos[rows]
        old = self.ring[rows, pos]
        self.ring[rows, pos] = shifted
        self.total[rows] = total + shifted - old
        self.total_sq[rows] = total_sq + shifted * shifted - old * old
        pos = (pos + 1) % self.window
        self.pos[rows] = pos
        self.count[rows] = np.minimum(n + 1, self.window)
        wrapped = rows[pos == 0]
        if len(wrapped):
            self._resum(wrapped)
        return scores

    def _resum(self, rows: IntArray) -> None:
        history = self.ring[rows]
        self.total[rows] = history.sum(axis=1)
        self.total_sq[rows] = (history * history).sum(axis=1)

    def get_state(self) -> dict[str, FloatArray]:
        return {
            "ring": self.ring,
            "count": self.count,
            "pos": self.pos.astype(np.float64),
            "origin": self.origin,
        }

    def set_state(self, state: dict[str, FloatArray]) -> None:
        self.ring = np.array(state["ring"], dtype=np.float64).reshape(-1, self.window)
        self.count = np.array(state["count"], dtype=np.float64)
        self.pos = np.array(state["pos"], dtype=np.intp)
        self.origin = np.array(state["origin"], dtype=np.float64)
        self.size = len(self.count)
        self.total = np.zeros(self.size)
        self.total_sq = np.zeros(self.size)
        self._resum(np.arange(self.size, dtype=np.intp))


class LikelihoodDetector(AnomalyDetector):
    """Novel values plus Numenta's "anomaly likelihood" over jump surprise.

    Two signals, after NAB's HTM detector, which scores the reverse of sigma3's
    weaknesses: it stays quiet on noisy series and catches regime changes.

    * Raw surprise: the jump ``|x - previous|`` in units of four typical jumps
      (an EWMA of past jumps), capped at 1. The likelihood step then asks how
      unusual the mean raw surprise of the last ``recent`` samples is against the
      long-run distribution of that mean (EWMA mean and variance, floored as in
      Numenta's code so quiet series need a real change). The score is the
      tail probability on a log scale: ``log(tail + 1e-10) / log(1e-10)``, so
      0.5 means p = 1e-5 (Numenta's "red" level) and ranking survives to 1e-10.
    * Novel range: a value more than 5 % of the seen range beyond the running
      min/max scores 1, as in NAB's HTM detector ("spatial anomaly").

    Series score 0 from the likelihood until ``learn`` samples have been seen.
    """

    name = "likelihood"
    threshold = 0.5

    # Columns of ``stats``: sample count, running min/max, previous value,
    # typical jump, long-run mean/variance of the recent surprise, ring position.
    _N, _MIN, _MAX, _PREV, _JUMP, _MEAN, _VAR, _POS = range(8)
    _COLUMNS = 8
    _LOG_FLOOR = math.log(1e-10)

    def __init__(
        self,
        recent: int = 3,
        learn: int = 388,
        jump_alpha: float = 0.01,
        history_alpha: float = 0.0005,
        range_tolerance: float = 0.05,
    ) -> None:
        super().__init__()
        self.recent = recent
        self.learn = learn
        self.jump_alpha = jump_alpha
        self.history_alpha = history_alpha
        self.range_tolerance = range_tolerance
        self.stats: FloatArray = np.zeros((0, self._COLUMNS))
        self.raw: FloatArray = np.zeros((0, recent))

    def add_series(self, count: int) -> None:
        self.stats = np.vstack([self.stats, np.zeros((count, self._COLUMNS))])
        self.raw = np.vstack([self.raw, np.zeros((count, self.recent))])
        self.size += count

    def reset(self, rows: IntArray) -> None:
        self.stats[rows] = 0.0
        self.raw[rows] = 0.0

    def step(self, rows: IntArray, values: FloatArray) -> FloatArray:
        st = self.stats[rows]
        n = st[:, self._N]
        first = n == 0
        lo = np.where(first, values, st[:, self._MIN])
        hi = np.where(first, values, st[:, self._MAX])
        jump = np.abs(values - np.where(first, values, st[:, self._PREV]))
        typical = np.where(n <= 1, jump, st[:, self._JUMP])
        with np.errstate(divide="ignore", invalid="ignore"):
            surprise = np.where(typical > 0, np.minimum(jump / (4.0 * typical), 1.0), jump > 0)
        surprise = np.where(n < 2, 0.0, surprise)

        pos = st[:, self._POS].astype(np.intp)
        self.raw[rows, pos] = surprise
        average = self.raw[rows].sum(axis=1) / np.minimum(n + 1, self.recent)
        mean = np.maximum(st[:, self._MEAN], 0.03)
        std = np.sqrt(np.maximum(st[:, self._VAR], 0.0003))
        tail = normal_tail((average - mean) / std)
        scores = np.clip(np.log(tail + 1e-10) / self._LOG_FLOOR, 0.0, 1.0)
        scores = np.where(n < self.learn, 0.0, scores)
        margin = (hi - lo) * self.range_tolerance
        novel = (hi > lo) & ((values > hi + margin) | (values < lo - margin))
        scores = np.where(novel, 1.0, scores)

        rate = np.maximum(self.history_alpha, 1.0 / (n + 1))
        delta = average - st[:, self._MEAN]
        st[:, self._MEAN] += rate * delta
        st[:, self._VAR] = (1.0 - rate) * (st[:, self._VAR] + rate * delta * delta)
        st[:, self._JUMP] = typical + self.jump_alpha * (jump - typical)
        st[:, self._MIN] = np.minimum(lo, values)
        st[:, self._MAX] = np.maximum(hi, values)
        st[:, self._PREV] = values
        st[:, self._POS] = (pos + 1) % self.recent
        st[:, self._N] = n + 1
        self.stats[rows] = st
        return scores

    def get_state(self) -> dict[str, FloatArray]:
        return {"stats": self.stats, "raw": self.raw}

    def set_state(self, state: dict[str, FloatArray]) -> None:
        self.stats = np.array(state["stats"], dtype=np.float64).reshape(-1, self._COLUMNS)
        self.raw = np.array(state["raw"], dtype=np.float64).reshape(-1, self.recent)
        self.size = len(self.stats)


DETECTORS: dict[str, type[AnomalyDetector]] = {
    Sigma3Detector.name: Sigma3Detector,
    LikelihoodDetector.name: LikelihoodDetector,
}


def make_detector(name: str) -> AnomalyDetector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(
            f"unknown anomaly detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}"
        ) from None
