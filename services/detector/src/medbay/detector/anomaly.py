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

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

_SQRT2 = math.sqrt(2.0)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def two_sided_confidence(z: FloatArray) -> FloatArray:
    """P(|Z| < |z|) for a standard normal Z: 3 sigma gives 0.9973."""
    return np.asarray(_erf(np.abs(z) / _SQRT2), dtype=np.float64)


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
    def step(self, rows: IntArray, values: FloatArray) -> FloatArray:
        """Score ``values[i]`` for series ``rows[i]`` and then learn it. Rows are unique."""

    @abstractmethod
    def get_state(self) -> dict[str, FloatArray]:
        """Arrays that fully describe the learned state (for snapshots)."""

    @abstractmethod
    def set_state(self, state: dict[str, FloatArray]) -> None: ...


class Sigma3Detector(AnomalyDetector):
    """The 3-sigma rule over a rolling window of the last ``window`` samples.

    A value's score is P(|Z| < |z|) where z is its distance from the window's
    mean in standard deviations; z = 3 gives 0.9973, the threshold. Series with
    fewer than ``min_samples`` values score 0.
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

    def add_series(self, count: int) -> None:
        self.ring = np.vstack([self.ring, np.zeros((count, self.window))])
        self.count = np.concatenate([self.count, np.zeros(count)])
        self.pos = np.concatenate([self.pos, np.zeros(count, dtype=np.intp)])
        self.size += count

    def step(self, rows: IntArray, values: FloatArray) -> FloatArray:
        history = self.ring[rows]
        n = self.count[rows]
        safe_n = np.maximum(n, 1.0)
        mean = history.sum(axis=1) / safe_n
        var = np.maximum((history * history).sum(axis=1) / safe_n - mean * mean, 0.0)
        std = np.sqrt(var)
        deviation = np.abs(values - mean)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), deviation / std, 0.0)
        # A flat series that suddenly moves is as anomalous as it gets.
        z = np.where((std <= 1e-12 * np.maximum(1.0, np.abs(mean))) & (deviation > 1e-9), 99.0, z)
        scores = np.where(n >= self.min_samples, two_sided_confidence(z), 0.0)
        pos = self.pos[rows]
        self.ring[rows, pos] = values
        self.pos[rows] = (pos + 1) % self.window
        self.count[rows] = np.minimum(n + 1, self.window)
        return scores

    def get_state(self) -> dict[str, FloatArray]:
        return {"ring": self.ring, "count": self.count, "pos": self.pos.astype(np.float64)}

    def set_state(self, state: dict[str, FloatArray]) -> None:
        self.ring = np.array(state["ring"], dtype=np.float64).reshape(-1, self.window)
        self.count = np.array(state["count"], dtype=np.float64)
        self.pos = np.array(state["pos"], dtype=np.intp)
        self.size = len(self.count)


DETECTORS: dict[str, type[AnomalyDetector]] = {
    Sigma3Detector.name: Sigma3Detector,
}


def make_detector(name: str) -> AnomalyDetector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(
            f"unknown anomaly detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}"
        ) from None
