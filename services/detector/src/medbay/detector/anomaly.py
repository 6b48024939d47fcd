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
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy.special import erf, ndtr

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]
StateArray = NDArray[np.floating[Any]]
"""A state array: float64, or float32 where that precision is enough."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)

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
    def step(
        self, rows: IntArray, values: FloatArray, times: FloatArray | None = None
    ) -> FloatArray:
        """Score ``values[i]`` for series ``rows[i]`` and then learn it. Rows are unique.
        ``times[i]`` is when the value was measured, in seconds since the epoch (UTC,
        finite), for detectors that judge a value by the time of day; without it they
        do not."""

    def explain(self, row: int) -> str:
        """What made series ``row``'s last score high, in words ("" if it cannot say)."""
        return ""

    @abstractmethod
    def get_state(self) -> dict[str, StateArray]:
        """Arrays that fully describe the learned state (for snapshots).

        Every array has one entry per series on its first axis, so the state of
        some series can be cut out and put back (per-host snapshots rely on it).
        """

    @abstractmethod
    def set_state(self, state: Mapping[str, StateArray]) -> None: ...

    def set_rows(self, rows: IntArray, state: Mapping[str, StateArray]) -> None:
        """Put back the state of ``rows`` (as cut from ``get_state``), the others kept."""
        full = {key: np.array(value, copy=True) for key, value in self.get_state().items()}
        for key, value in full.items():
            value[rows] = state[key]
        self.set_state(full)


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

    def step(
        self, rows: IntArray, values: FloatArray, times: FloatArray | None = None
    ) -> FloatArray:
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

    def get_state(self) -> dict[str, StateArray]:
        return {
            "ring": self.ring,
            "count": self.count,
            "pos": self.pos.astype(np.float64),
            "origin": self.origin,
        }

    def set_state(self, state: Mapping[str, StateArray]) -> None:
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

    def step(
        self, rows: IntArray, values: FloatArray, times: FloatArray | None = None
    ) -> FloatArray:
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

    def get_state(self) -> dict[str, StateArray]:
        return {"stats": self.stats, "raw": self.raw}

    def set_rows(self, rows: IntArray, state: Mapping[str, StateArray]) -> None:
        self.stats[rows] = state["stats"]
        self.raw[rows] = state["raw"]

    def set_state(self, state: Mapping[str, StateArray]) -> None:
        self.stats = np.array(state["stats"], dtype=np.float64).reshape(-1, self._COLUMNS)
        self.raw = np.array(state["raw"], dtype=np.float64).reshape(-1, self.recent)
        self.size = len(self.stats)


class NoveltyDetector(AnomalyDetector):
    """Records: a sample that takes the series, or what its recent samples show, beyond
    anything seen before.

    Every sample updates seven signals of its series, and each signal keeps the range
    it has shown so far:

    * ``value``: the sample itself;
    * ``mean 12``, ``mean 48``, ``mean 192``: the mean of the last 12, 48 and 192
      samples (a shift too small for one sample to show, but held);
    * ``spread 24``: the standard deviation of the last 24 samples (noise growing);
    * ``trend 96``: the mean of the last 96 samples minus the mean of the 96 before
      (a climb or fall steeper than ever);
    * ``shape``: how far the shape of the last 32 samples (8 points, each the most
      extreme of 4 samples, on 50 levels of the series' range) is from the nearest of
      up to 64 shapes the series has shown (a pattern not seen before).

    A signal that goes beyond its range by ``e`` times the range's width scores
    ``1 - exp(-e / tau)``: the further beyond, the higher, and a signal only ever
    breaks its records more rarely as its history grows, so a series that is merely
    noisy falls quiet.

    Given the samples' times, an eighth signal judges the value by the time of day: the
    day is cut in 8 slots of 3 hours (UTC), each with the range of the values seen in
    it, and once a series has 7 days of history a value beyond its slot's range (at
    least a fifth of the value's whole range wide) scores half as much as a value
    beyond its whole range would: what is normal at noon can be unusual at 3 a.m. (a
    daily peak that does not come, a night that stays busy). Half, because a slot
    has seen an eighth of the samples and its records break more often.

    The score is the highest of the signals. A held shift keeps scoring while the
    means catch up with it (up to 192 samples); a lone spike scores for one sample.
    Series score 0 for their first ``learn`` samples. The signal behind the last score
    is kept for ``explain``.
    """

    name = "novelty"
    threshold = 0.11
    """Beyond the range by about a ninth of tau (NAB's corpus picks 0.109 for it)."""

    SIGNALS = ("value", "mean 12", "mean 48", "mean 192", "spread 24", "trend 96", "shape")
    _MEANS = (12, 48, 192)
    _RING = 192
    # tau of each signal, and the sample from which it keeps records
    _TAU = (0.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    _START = (0, 86, 122, 266, 98, 267, 300)
    _TWO_SIDED = (True, True, True, True, False, True, False)
    # the narrowest range a signal is judged against, times ``floor``: a mean of L
    # samples of noise spans about 1/sqrt(L) of what the samples span, so a signal whose
    # own range is still short (it has just started) breaks no records on noise alone
    _FLOOR = (0.0, 12**-0.5, 48**-0.5, 192**-0.5, 0.1, 48**-0.5, 0.05)
    _IN_VALUE_UNITS = (True, True, True, True, True, True, False)
    # shape memory
    _DOWN = 4  # samples a point
    _WIDTH = 8  # points a shape
    _LEVELS = 50
    _CHOMP = 0.075  # a point this close to the median level is the median
    _SPIKE = 0.1  # a point is its group's extreme only when that is 10 % off its mean
    _SHAPES = 64
    _NEW_SHAPE = 0.05  # a shape this far from all known ones is learnt as a new one
    _SHAPE_WEIGHT = 20  # a known shape moves by at least 1/20 towards what matches it
    _MEAN_OF_SHAPE = np.full(2 * _WIDTH, 1 / (2 * _WIDTH), dtype=np.float32)
    # time of day
    _DAY = 86_400.0
    _SLOTS = 8
    _SLOT_AFTER = 7 * _DAY  # judged once a series has this much history
    _SLOT_FLOOR = 0.2  # the narrowest slot range, in widths of the value range
    _SLOT_WEIGHT = 0.5
    _SLOT_TAU = 1.0

    # Columns of ``stats``.
    _N, _ORIGIN, _S12, _S24, _Q24, _S48, _S96, _S192 = range(8)
    _HI, _LO, _CNT = 8, 15, 22  # 7 signals each
    _DSN, _DSSUM, _DSMIN, _DSMAX, _DSMA, _DSI, _NSHAPE = range(29, 36)
    _WHY, _WHY_X, _WHY_HI, _WHY_LO = range(36, 40)
    """``_WHY``: the signal behind the last score (an index of ``SIGNALS``; the time of day
    is ``len(SIGNALS)`` plus its slot), -1 for none."""
    _COLUMNS = 40
    _SUMS = ((_S12, 12), (_S24, 24), (_S48, 48), (_S96, 96), (_S192, 192))
    """Each window sum's column and length."""
    _SUM_COLUMNS = np.array([column for column, _ in _SUMS])
    _SUM_LENGTHS = np.array([length for _, length in _SUMS])
    _AT_24 = [column for column, _ in _SUMS].index(_S24)
    _TAU_OF = np.array(_TAU)
    _START_OF = np.array(_START)
    _TWO_SIDED_OF = np.array(_TWO_SIDED)
    _FLOOR_OF = np.array(_FLOOR)
    _IN_VALUE_UNITS_OF = np.array(_IN_VALUE_UNITS)

    def __init__(self, learn: int = 150, floor: float = 0.5) -> None:
        super().__init__()
        self.learn = learn
        self.floor = floor
        d = 2 * self._WIDTH
        # 32 bits for the samples of the window sums (each is rounded to 32 bits before it
        # is summed, so what leaves a sum is what entered it), shapes, counts and levels
        self.stats: FloatArray = np.zeros((0, self._COLUMNS))
        self.ring: NDArray[np.float32] = np.zeros((0, self._RING), dtype=np.float32)
        self.levels: NDArray[np.float32] = np.zeros((0, self._LEVELS + 1), dtype=np.float32)
        self.points: NDArray[np.float32] = np.zeros((0, self._WIDTH), dtype=np.float32)
        self.shapes: NDArray[np.float32] = np.zeros((0, self._SHAPES * d), dtype=np.float32)
        self.shape_used: NDArray[np.float32] = np.zeros((0, self._SHAPES), dtype=np.float32)
        self.shape_count: NDArray[np.float32] = np.zeros((0, self._SHAPES), dtype=np.float32)
        # each slot's highest value, then each slot's lowest (NaN: none seen yet)
        self.slots: NDArray[np.float32] = np.zeros((0, 2 * self._SLOTS), dtype=np.float32)
        self.first_time: FloatArray = np.zeros((0, 1))  # 0: no time seen yet

    def _arrays(self) -> dict[str, StateArray]:
        return {
            "stats": self.stats,
            "ring": self.ring,
            "levels": self.levels,
            "points": self.points,
            "shapes": self.shapes,
            "shape_used": self.shape_used,
            "shape_count": self.shape_count,
            "slots": self.slots,
            "first_time": self.first_time,
        }

    def add_series(self, count: int) -> None:
        """Room for ``count`` more series. The arrays grow to twice their rows when
        full, not by ``count`` each time: a host at a time, that would copy the whole
        state once per host. Rows not used yet take no memory (zeroed pages are only
        mapped once written)."""
        size, needed = self.size, self.size + count
        for key, array in self._arrays().items():
            if needed > len(array):
                bigger = np.zeros((max(needed, 2 * len(array)), array.shape[1]), array.dtype)
                bigger[:size] = array[:size]
                setattr(self, key, bigger)
        self.size = needed
        self.reset(np.arange(size, needed, dtype=np.intp))

    def reset(self, rows: IntArray) -> None:
        for array in self._arrays().values():
            array[rows] = 0.0
        self.stats[rows, self._WHY] = -1
        self.slots[rows] = np.nan

    def get_state(self) -> dict[str, StateArray]:
        return {key: array[: self.size] for key, array in self._arrays().items()}

    _SINCE_TIME_OF_DAY = {"slots": np.nan, "first_time": 0.0}
    """What a state saved before the time of day was judged lacks, and what its series
    start from instead (they learn the time of day afresh)."""

    def set_rows(self, rows: IntArray, state: Mapping[str, StateArray]) -> None:
        for key, array in self._arrays().items():
            array[rows] = state[key] if key in state else self._SINCE_TIME_OF_DAY[key]

    def set_state(self, state: Mapping[str, StateArray]) -> None:
        size = len(state["stats"])
        for key, array in self._arrays().items():
            if key in state:
                restored = np.array(state[key], dtype=array.dtype).reshape(-1, array.shape[1])
            else:
                restored = np.full(
                    (size, array.shape[1]), self._SINCE_TIME_OF_DAY[key], array.dtype
                )
            setattr(self, key, restored)
        self.size = len(self.stats)

    def step(
        self, rows: IntArray, values: FloatArray, times: FloatArray | None = None
    ) -> FloatArray:
        # one errstate for the whole step: entering one costs as much as a small array op
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._step(rows, values, times)

    def _step(self, rows: IntArray, values: FloatArray, times: FloatArray | None) -> FloatArray:
        st = self.stats[rows]
        n = st[:, self._N]
        first = n == 0
        signals = len(self.SIGNALS)
        signal = np.full((len(rows), signals), np.nan)
        before = st[:, self._HI : self._LO + signals].copy()  # ranges until now

        # value: its range, this sample included, is what the shape's levels are on
        signal[:, 0] = values
        st[:, self._HI] = np.where(first, values, np.maximum(st[:, self._HI], values))
        st[:, self._LO] = np.where(first, values, np.minimum(st[:, self._LO], values))

        # window sums, on values shifted by each series' first value
        origin = np.where(first, values, st[:, self._ORIGIN])
        st[:, self._ORIGIN] = origin
        # (clipped to what 32 bits hold: a sample 1e38 off the first is told by its value)
        shifted = np.clip(values - origin, -_FLOAT32_MAX, _FLOAT32_MAX)
        shifted = shifted.astype(np.float32).astype(np.float64)
        ring = self.ring
        pos = (n % self._RING).astype(np.intp)
        lengths = self._SUM_LENGTHS
        # the samples leaving each window, all windows in one gather
        leaving = ring[rows[:, None], (pos[:, None] - lengths) % self._RING].astype(np.float64)
        leaving[n[:, None] < lengths] = 0.0
        st[:, self._SUM_COLUMNS] += shifted[:, None] - leaving
        left24 = leaving[:, self._AT_24]
        st[:, self._Q24] += shifted * shifted - left24 * left24
        ring[rows, pos] = shifted
        count = n + 1
        wrapped = pos == self._RING - 1
        if wrapped.any():  # exact sums once a ring round, so rounding cannot accumulate
            full = ring[rows[wrapped]].astype(np.float64)
            sums = full[:, ::-1].cumsum(axis=1)
            st[np.ix_(wrapped, self._SUM_COLUMNS)] = sums[:, lengths - 1]
            tail = full[:, -24:]
            st[wrapped, self._Q24] = (tail * tail).sum(axis=1)
        for k, (column, length) in enumerate(
            zip((self._S12, self._S48, self._S192), self._MEANS, strict=True)
        ):
            signal[:, 1 + k] = np.where(count >= length, st[:, column] / length + origin, np.nan)
        s24 = st[:, self._S24]
        variance = np.maximum(st[:, self._Q24] - s24 * s24 / 24, 0.0) / 23
        signal[:, 4] = np.where(count >= 24, np.sqrt(variance), np.nan)
        s96, s192 = st[:, self._S96], st[:, self._S192]
        signal[:, 5] = np.where(count >= 192, (2 * s96 - s192) / 96, np.nan)
        signal[:, 6] = self._shape_distance(rows, st, values, n)

        grades = self._records(st, signal, before, n)
        index = np.arange(len(rows))
        why = np.argmax(grades, axis=1)
        best = grades[index, why]
        x, hi, lo = signal[index, why], before[index, why], before[index, signals + why]
        if times is not None:
            value_width = st[:, self._HI] - st[:, self._LO]
            found = self._time_of_day(rows, values, times, value_width)
            if found is not None and (by_hour := found[0] > best).any():
                hour, slot, slot_hi, slot_lo = found
                best = np.where(by_hour, hour, best)
                why = np.where(by_hour, signals + slot, why)
                x = np.where(by_hour, values, x)
                hi = np.where(by_hour, slot_hi, hi)
                lo = np.where(by_hour, slot_lo, lo)

        scores = np.where(n < self.learn, 0.0, best)
        shown = scores > 0
        st[:, self._WHY] = np.where(shown, why, -1)
        st[:, self._WHY_X] = np.where(shown, x, 0.0)
        st[:, self._WHY_HI] = np.where(shown, hi, 0.0)
        st[:, self._WHY_LO] = np.where(shown, lo, 0.0)
        st[:, self._N] = count
        self.stats[rows] = st
        return scores

    def explain(self, row: int) -> str:
        st = self.stats[row]
        why = int(st[self._WHY])
        if why < 0:
            return ""
        x, hi, lo = st[self._WHY_X], st[self._WHY_HI], st[self._WHY_LO]
        seen = int(st[self._N]) - 1  # the samples before this one
        if why >= len(self.SIGNALS):
            hours = 24 // self._SLOTS
            start = (why - len(self.SIGNALS)) * hours
            when = f"between {start:02d}:00 and {start + hours:02d}:00 UTC"
            days = f"{seen:,} samples, {self._SLOT_AFTER / self._DAY:g}+ days"
            if x > hi:
                return f"value {_g(x)}, above its highest {when} in {days} ({_g(hi)})"
            return f"value {_g(x)}, below its lowest {when} in {days} ({_g(lo)})"
        if why == 6:
            return (
                f"a pattern not seen before: the last 32 samples are {_g(x)} from the "
                f"nearest of the shapes seen in {seen:,} samples (at most {_g(hi)} until now)"
            )
        what = {
            0: "value",
            1: "mean of the last 12 samples",
            2: "mean of the last 48 samples",
            3: "mean of the last 192 samples",
            4: "spread (standard deviation) of the last 24 samples",
            5: "change in the mean over the last 96 samples",
        }[why]
        if x > hi:
            return f"{what} {_g(x)}, above its highest in {seen:,} samples ({_g(hi)})"
        return f"{what} {_g(x)}, below its lowest in {seen:,} samples ({_g(lo)})"

    def _time_of_day(
        self, rows: IntArray, values: FloatArray, times: FloatArray, value_width: FloatArray
    ) -> tuple[FloatArray, IntArray, FloatArray, FloatArray] | None:
        """Widen each value's slot range by it; None while no series has ``_SLOT_AFTER``
        of history, else the grades of the values against their slots' ranges until
        now (0 within, or for a slot not seen yet), the slots, and those ranges."""
        first = self.first_time[rows, 0]
        first = np.where(first == 0, times, first)
        self.first_time[rows, 0] = first
        slot = (times % self._DAY // (self._DAY / self._SLOTS)).astype(np.intp)
        lows = slot + self._SLOTS
        hi = self.slots[rows, slot].astype(np.float64)
        lo = self.slots[rows, lows].astype(np.float64)
        learnt = np.clip(values, -_FLOAT32_MAX, _FLOAT32_MAX)
        self.slots[rows, slot] = np.fmax(hi, learnt)
        self.slots[rows, lows] = np.fmin(lo, learnt)
        judged = times - first >= self._SLOT_AFTER
        if not judged.any():
            return None
        # a slot not seen yet has a NaN range: its width is the floor, its excess NaN
        width = np.fmax(hi - lo, self._SLOT_FLOOR * value_width)
        beyond = np.fmax(values - hi, lo - values) / width
        ok = judged & (beyond > 0) & (width > 0)
        grades = np.where(
            ok, self._SLOT_WEIGHT * -np.expm1(-np.where(ok, beyond, 0.0) / self._SLOT_TAU), 0.0
        )
        return grades, slot, hi, lo

    def _records(
        self, st: FloatArray, signal: FloatArray, before: FloatArray, n: FloatArray
    ) -> FloatArray:
        """Grade every signal against its range until now (0 within), then widen the
        ranges (the value's is widened already)."""
        last = len(self.SIGNALS)
        hi, lo = before[:, :last], before[:, last:]
        count = st[:, self._CNT : self._CNT + last]
        active = ~np.isnan(signal) & (n[:, None] >= self._START_OF)
        seen = count > 0
        # the narrowest range each is judged against, in widths of the value range with
        # this sample (the shape's distance is in those units already)
        scale = self.floor * self._FLOOR_OF
        value_width = st[:, self._HI] - st[:, self._LO]
        floor = np.where(self._IN_VALUE_UNITS_OF, scale * value_width[:, None], scale)
        width = np.maximum(hi - lo, floor)
        beyond = (signal - hi) / width
        beyond = np.where(self._TWO_SIDED_OF, np.maximum(beyond, (lo - signal) / width), beyond)
        ok = active & seen & (width > 0) & (beyond > 0)
        grades = np.where(ok, -np.expm1(-np.where(ok, beyond, 0.0) / self._TAU_OF), 0.0)
        k = slice(1, last)
        x, active_k, seen_k = signal[:, k], active[:, k], seen[:, k]
        st[:, self._HI + 1 : self._HI + last] = np.where(
            active_k, np.where(seen_k, np.fmax(hi[:, k], x), x), hi[:, k]
        )
        st[:, self._LO + 1 : self._LO + last] = np.where(
            active_k, np.where(seen_k, np.fmin(lo[:, k], x), x), lo[:, k]
        )
        st[:, self._CNT : self._CNT + last] = count + active
        return grades

    def _shape_distance(
        self, rows: IntArray, st: FloatArray, values: FloatArray, n: FloatArray
    ) -> FloatArray:
        """Collect each series' points; where a shape is complete, its distance from the
        nearest known shape (NaN elsewhere), and learn it."""
        out = np.full(len(rows), np.nan)
        started = st[:, self._DSN] > 0
        st[:, self._DSN] += 1
        st[:, self._DSSUM] += values
        st[:, self._DSMIN] = np.where(started, np.minimum(st[:, self._DSMIN], values), values)
        st[:, self._DSMAX] = np.where(started, np.maximum(st[:, self._DSMAX], values), values)
        done = np.flatnonzero(st[:, self._DSN] >= self._DOWN)
        if not len(done):
            return out
        d = st[done]
        mean = d[:, self._DSSUM] / self._DOWN
        top, bottom = d[:, self._DSMAX], d[:, self._DSMIN]
        average = np.where(d[:, self._DSI] == 0, mean, (d[:, self._DSMA] + mean) / 2)
        point = np.where(np.abs(top - average) >= np.abs(bottom - average), top, bottom)
        point = np.where(np.abs(point - mean) < self._SPIKE * np.abs(mean), mean, point)
        hi, lo = d[:, self._HI], d[:, self._LO]  # the value range, this sample included
        width = hi - lo
        z = np.where(width > 0, (point - lo) / width, 0.5)
        level = np.clip(np.rint(z * self._LEVELS), 0, self._LEVELS).astype(np.intp)
        z = level / self._LEVELS
        drows = rows[done]
        self.levels[drows, level] += 1  # rows are unique: one count each
        cum = self.levels[drows].cumsum(axis=1)
        median = np.argmax(cum >= cum[:, -1:] / 2, axis=1) / self._LEVELS
        z = np.where(np.abs(z - median) < self._CHOMP, median, z)
        dsi = d[:, self._DSI]
        self.points[drows, (dsi % self._WIDTH).astype(np.intp)] = z
        points = self.points[drows]
        dsi = dsi + 1
        d[:, self._DSI] = dsi
        d[:, self._DSMA] = average
        d[:, self._DSN] = 0
        d[:, self._DSSUM] = 0
        full = np.flatnonzero(dsi >= self._WIDTH)
        if len(full):
            order = (dsi[full, None] + np.arange(self._WIDTH)) % self._WIDTH
            window = np.take_along_axis(points[full], order.astype(np.intp), axis=1)
            shape = window - window.min(axis=1, keepdims=True)
            peak = shape.max(axis=1, keepdims=True)
            shape = np.where(peak > 0, shape / peak, shape)
            feature = np.hstack([shape, window]).astype(np.float32)
            out[done[full]] = self._learn_shape(rows[done[full]], d, full, feature, dsi[full])
        st[done] = d
        return out

    def _learn_shape(
        self,
        srows: IntArray,
        d: FloatArray,
        full: IntArray,
        feature: NDArray[np.float32],
        t: FloatArray,
    ) -> FloatArray:
        dims = 2 * self._WIDTH
        stored = self.shapes.reshape(-1, self._SHAPES, dims)  # a view: writes land in place
        gaps = stored[srows]  # a copy, made the distances in place
        np.subtract(gaps, feature[:, None, :], out=gaps)
        np.abs(gaps, out=gaps)
        distance = gaps @ self._MEAN_OF_SHAPE  # the mean gap (a product is the fastest)
        used = self.shape_used[srows]
        known = d[full, self._NSHAPE].astype(np.intp)
        distance[np.arange(self._SHAPES)[None, :] >= known[:, None]] = np.inf
        nearest = np.argmin(distance, axis=1)
        index = np.arange(len(srows))
        gap = np.where(known > 0, distance[index, nearest], 0.0)
        new = (known == 0) | (gap > self._NEW_SHAPE)
        # a new shape takes the next free place, or the one matched least recently
        place = np.where(known < self._SHAPES, known, np.argmin(used, axis=1))
        slot = np.where(new, place, nearest)
        count = self.shape_count[srows, slot]
        weight = np.where(new, 1.0, 1.0 / np.minimum(count + 1, self._SHAPE_WEIGHT))
        old = stored[srows, slot]
        stored[srows, slot] = np.where(
            new[:, None], feature, old + (feature - old) * weight[:, None]
        )
        self.shape_count[srows, slot] = np.where(new, 1.0, count + 1)
        self.shape_used[srows, slot] = t
        d[full, self._NSHAPE] = np.minimum(known + new, self._SHAPES)
        return gap


def _g(x: float) -> str:
    return f"{x:.4g}"


DETECTORS: dict[str, type[AnomalyDetector]] = {
    Sigma3Detector.name: Sigma3Detector,
    LikelihoodDetector.name: LikelihoodDetector,
    NoveltyDetector.name: NoveltyDetector,
}


DEFAULT_DETECTOR = NoveltyDetector.name
"""The detector of an anomaly rule that names none, and of ``medbay detect``: the best
of these on the Numenta Anomaly Benchmark (``medbay bench nab``)."""


def make_detector(name: str) -> AnomalyDetector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(
            f"unknown anomaly detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}"
        ) from None
