"""Anomaly detectors: what they flag, and the contracts the service relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medbay.detector.anomaly import (
    DETECTORS,
    AnomalyDetector,
    FloatArray,
    LikelihoodDetector,
    NoveltyDetector,
    Sigma3Detector,
    make_detector,
)
from medbay.detector.backtest import CsvInputError, score_csv

ALL = sorted(DETECTORS)


def run(detector: AnomalyDetector, data: FloatArray, times: FloatArray | None = None) -> FloatArray:
    """Feed a (series, time) matrix one time step at a time, each step at ``times[t]``
    (seconds since the epoch) if given; return the scores."""
    out = np.zeros_like(data)
    rows = np.arange(data.shape[0], dtype=np.intp)
    for t in range(data.shape[1]):
        at = None if times is None else np.full(len(rows), times[t])
        out[:, t] = detector.step(rows, data[:, t], at)
    return out


DAY = 86_400.0
QUARTER_HOURS: FloatArray = 1_767_225_600.0 + 900.0 * np.arange(1200, dtype=np.float64)
"""A sample every 15 minutes from 2026-01-01: 1,200 samples are 12.5 days, past the week
after which ``novelty`` judges a value by the time of day."""


def fresh(name: str, series: int) -> AnomalyDetector:
    detector = make_detector(name)
    detector.add_series(series)
    return detector


def noisy_series(series: int = 4, length: int = 1200, seed: int = 7) -> FloatArray:
    rng = np.random.default_rng(seed)
    level = rng.uniform(-1e3, 1e3, size=(series, 1))
    scale = rng.uniform(0.1, 50.0, size=(series, 1))
    return level + scale * rng.standard_normal((series, length))


def test_sigma3_flags_a_ten_sigma_spike_but_not_noise() -> None:
    data = noisy_series(series=1, length=600)
    scores = run(fresh("sigma3", 1), data)[0]
    assert np.mean(scores >= Sigma3Detector.threshold) < 0.01  # ~0.27% for Gaussian noise

    window = data[0, -100:]
    spike = window.mean() + 10 * window.std()
    detector = fresh("sigma3", 1)
    run(detector, data)
    row = np.zeros(1, dtype=np.intp)
    assert detector.step(row, np.array([spike]))[0] >= Sigma3Detector.threshold
    assert detector.step(row, np.array([window.mean()]))[0] < Sigma3Detector.threshold


def test_likelihood_is_quiet_on_noise_and_flags_a_level_shift() -> None:
    data = noisy_series(series=1, length=1500, seed=3)
    scores = run(fresh("likelihood", 1), data)[0]
    assert np.mean(scores >= LikelihoodDetector.threshold) < 0.01
    shifted = data.copy()
    shifted[0, 1000:] += 8 * data[0].std()
    scores = run(fresh("likelihood", 1), shifted)[0]
    assert scores[1000] >= LikelihoodDetector.threshold


def test_novelty_reports_a_new_level_once_and_says_why() -> None:
    data = noisy_series(series=1, length=1000, seed=5)
    shifted = data.copy()
    shifted[0, 800:] += 10 * data[0].std()
    detector = fresh("novelty", 1)
    scores = run(detector, shifted)[0]
    threshold = NoveltyDetector.threshold
    assert scores[800] >= threshold
    # the jump is reported, not every sample of the new level
    assert np.count_nonzero(scores[800:] >= threshold) < 20
    row = np.zeros(1, dtype=np.intp)
    again = fresh("novelty", 1)
    run(again, shifted[:, :800])
    assert again.step(row, shifted[:, 800])[0] >= threshold
    assert again.explain(0).startswith("value ")
    assert "above its highest in 800 samples" in again.explain(0)


def test_novelty_names_a_pattern_it_has_not_seen() -> None:
    t = np.arange(3000)
    wave = np.where((t // 24) % 2 == 0, 10.0, 0.0)[None, :]  # a square wave
    changed = wave.copy()
    changed[0, 2400:2520] = 5.0  # flat in the middle of its range: no value is new
    detector = fresh("novelty", 1)
    scores = run(detector, changed)[0]
    hits = np.flatnonzero(scores >= NoveltyDetector.threshold)
    assert hits.size and 2400 <= hits[0] < 2520
    assert np.count_nonzero(run(fresh("novelty", 1), wave)[0] >= NoveltyDetector.threshold) == 0


def test_novelty_state_is_at_most_16_kb_a_series() -> None:
    detector = fresh("novelty", 10)
    size = sum(np.asarray(a).nbytes for a in detector.get_state().values()) / 10
    assert size <= 16 * 1024


@pytest.mark.parametrize("name", ALL)
def test_scores_are_finite_and_in_unit_interval(name: str) -> None:
    t = np.arange(800.0)
    data = np.vstack(
        [
            noisy_series(series=1, length=800)[0],
            np.full(800, 5.0),  # flat
            np.where(t < 400, 0.0, 1e12),  # flat, then a huge step
            1e-300 * np.sin(t),  # tiny
            np.sin(t / 10) * 1e150,  # huge
            np.where(t % 50 == 0, 1.0, 0.0),  # sparse spikes
        ]
    )
    scores = run(fresh(name, data.shape[0]), data)
    assert np.all(np.isfinite(scores))
    assert scores.min() >= 0.0 and scores.max() <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_scores_are_causal_and_independent_per_series(name: str) -> None:
    data = noisy_series()
    full = run(fresh(name, 4), data)
    k = 700
    assert np.array_equal(run(fresh(name, 4), data[:, :k]), full[:, :k])
    # A series scores the same alone as inside a block.
    assert np.array_equal(run(fresh(name, 1), data[2:3]), full[2:3])


@pytest.mark.parametrize("name", ALL)
def test_partial_steps_touch_only_the_given_rows(name: str) -> None:
    data = noisy_series(series=3, length=600)
    detector = fresh(name, 3)
    scores = np.zeros_like(data)
    odd = np.array([1], dtype=np.intp)
    for t in range(data.shape[1]):
        rows = np.arange(3, dtype=np.intp) if t % 2 else np.array([0, 2], dtype=np.intp)
        scores[rows, t] = detector.step(rows, data[rows, t])
    alone = run(fresh(name, 1), data[1:2, 1::2])
    assert np.array_equal(scores[odd, 1::2], alone)


@pytest.mark.parametrize("name", ALL)
def test_state_round_trip_gives_identical_scores(name: str) -> None:
    data = noisy_series()
    original = fresh(name, 4)
    run(original, data[:, :500])
    state = {key: np.array(value, copy=True) for key, value in original.get_state().items()}
    for value in state.values():
        assert value.dtype.kind == "f" and len(value) == 4
    restored = make_detector(name)
    restored.set_state(state)
    assert restored.size == 4
    assert np.array_equal(run(restored, data[:, 500:]), run(original, data[:, 500:]))


@pytest.mark.parametrize("name", ALL)
def test_add_series_keeps_the_state_of_existing_rows(name: str) -> None:
    data = noisy_series(series=5)
    reference = run(fresh(name, 3), data[:3])
    grown = fresh(name, 3)
    head = run(grown, data[:3, :400])
    grown.add_series(2)
    assert grown.size == 5
    tail = run(grown, np.vstack([data[:3, 400:], data[3:, :-400]]))
    assert np.array_equal(np.hstack([head, tail[:3]]), reference)
    assert np.array_equal(tail[3:], run(fresh(name, 2), data[3:, :-400]))


def test_make_detector_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="sigma3"):
        make_detector("nope")


def minute(i: int) -> str:
    return f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00"


def csv_lines(values: list[str]) -> list[str]:
    return ["timestamp,value\n"] + [f"{minute(i)},{v}\n" for i, v in enumerate(values)]


def test_score_csv_streams_one_score_per_row() -> None:
    values = [str(v) for v in noisy_series(series=1, length=50)[0]]
    scored = list(score_csv(csv_lines(values), "likelihood"))
    assert [ts for ts, _ in scored] == [minute(i) for i in range(50)]
    assert all(0.0 <= score <= 1.0 for _, score in scored)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (csv_lines(["1", "2", "oops", "4"]), "line 4: value 'oops' is not a number"),
        (csv_lines(["1", "nan"]), "line 3: value 'nan' is not finite"),
        ([*csv_lines(["1"]), "2024-01-02,3,4\n"], "line 3: expected 2 fields"),
        (["time,val\n", "1,2\n"], "line 1: expected header 'timestamp,value'"),
        ([], "line 1: expected header 'timestamp,value', got empty input"),
    ],
)
def test_score_csv_rejects_bad_input_naming_the_line(lines: list[str], message: str) -> None:
    scored = score_csv(lines)
    with pytest.raises(CsvInputError, match=message):
        list(scored)


def detect(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medbay.cli.detect", "detect", str(path), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_detect_cli_prints_one_line_per_row(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    values = [str(v) for v in noisy_series(series=1, length=120)[0]]
    path.write_text("".join(csv_lines(values)))
    for detector in ALL:
        done = detect(path, "--detector", detector)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "timestamp,anomaly_score"
        assert len(lines) == 1 + len(values)
        stamp, score = lines[1].split(",")
        assert stamp == "2024-01-01 00:00:00" and 0.0 <= float(score) <= 1.0


def test_detect_cli_reports_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("".join(csv_lines(["1", "2", "x"])))
    done = detect(path)
    assert done.returncode == 2
    assert "line 4: value 'x' is not a number" in done.stderr
    missing = detect(tmp_path / "missing.csv")
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


@pytest.mark.parametrize("name", ALL)
def test_set_rows_puts_back_some_series_and_keeps_the_others(name: str) -> None:
    data = noisy_series(series=4)
    source = fresh(name, 4)
    run(source, data[:, :500])
    other = fresh(name, 4)
    run(other, data[::-1, :300])
    moved = np.array([2, 0], dtype=np.intp)
    cut = {key: np.array(value)[moved] for key, value in source.get_state().items()}
    other.set_rows(moved, cut)
    for key, value in other.get_state().items():
        assert np.array_equal(np.asarray(value)[moved], cut[key], equal_nan=True), key
    kept = np.array([1, 3], dtype=np.intp)
    alone = fresh(name, 4)
    run(alone, data[::-1, :300])
    after = run(other, data[:, 500:])
    assert np.array_equal(after[moved], run(source, data[:, 500:])[moved])
    assert np.array_equal(after[kept], run(alone, data[:, 500:])[kept])


def daily(days: int, seed: int = 3) -> tuple[FloatArray, FloatArray]:
    """A sample every 15 minutes: a busy day (80 from 09:00 to 18:00 UTC) and a quiet
    night (20), with a little noise; and the samples' times."""
    times: FloatArray = 1_767_225_600.0 + 900.0 * np.arange(days * 96, dtype=np.float64)
    hour = times % DAY / 3600
    rng = np.random.default_rng(seed)
    values = np.where((hour >= 9) & (hour < 18), 80.0, 20.0) + rng.normal(0, 1, len(times))
    return values, times


def test_novelty_flags_a_value_unusual_for_its_time_of_day_and_says_when() -> None:
    values, times = daily(14)
    night = np.flatnonzero(times % DAY / 3600 == 3)[-1]  # 03:00 on the last day
    busy = values.copy()
    busy[night : night + 4] = 80.0  # a day's level at night: in range for the series
    detector = fresh("novelty", 1)
    scores = run(detector, busy[None, : night + 1], times[: night + 1])[0]
    assert scores[night] >= NoveltyDetector.threshold
    usual = run(fresh("novelty", 1), values[None, : night + 1], times[: night + 1])[0]
    assert usual[night] < NoveltyDetector.threshold
    said = detector.explain(0)
    assert "above its highest between 03:00 and 06:00 UTC" in said, said
    # without the times, or before a week of history, the same value is not unusual
    assert run(fresh("novelty", 1), busy[None, : night + 1])[0][night] < NoveltyDetector.threshold
    early = np.flatnonzero(times % DAY / 3600 == 3)[5]  # 03:00 on the sixth day
    busy[early] = 80.0
    week = run(fresh("novelty", 1), busy[None, : early + 1], times)[0]
    assert week[early] < NoveltyDetector.threshold


@pytest.mark.parametrize("name", ALL)
def test_with_times_scores_are_causal_and_a_series_scores_the_same_alone(name: str) -> None:
    data = noisy_series()
    full = run(fresh(name, 4), data, QUARTER_HOURS)
    k = 1000
    assert np.array_equal(run(fresh(name, 4), data[:, :k], QUARTER_HOURS), full[:, :k])
    assert np.array_equal(run(fresh(name, 1), data[2:3], QUARTER_HOURS), full[2:3])


@pytest.mark.parametrize("name", ALL)
def test_with_times_state_round_trip_gives_identical_scores(name: str) -> None:
    data = noisy_series()
    original = fresh(name, 4)
    run(original, data[:, :900], QUARTER_HOURS)
    state = {key: np.array(value, copy=True) for key, value in original.get_state().items()}
    restored = make_detector(name)
    restored.set_state(state)
    later = QUARTER_HOURS[900:]
    assert np.array_equal(run(restored, data[:, 900:], later), run(original, data[:, 900:], later))


def test_novelty_restores_a_state_saved_before_it_judged_the_time_of_day() -> None:
    data = noisy_series()
    original = fresh("novelty", 4)
    run(original, data[:, :900], QUARTER_HOURS)
    older = {
        key: np.array(value, copy=True)
        for key, value in original.get_state().items()
        if key not in ("slots", "first_time")
    }
    restored = make_detector("novelty")
    restored.set_state(older)
    moved = np.array([1, 3], dtype=np.intp)
    other = fresh("novelty", 4)
    other.set_rows(moved, {key: value[moved] for key, value in older.items()})
    for detector in (restored, other):
        assert np.all(np.isnan(detector.get_state()["slots"][moved]))  # nothing seen
    # the records it had are kept: it scores as the original did without the times
    assert np.array_equal(run(restored, data[:, 900:]), run(original, data[:, 900:]))
