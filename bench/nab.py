"""Score anomaly detectors on the Numenta Anomaly Benchmark, and time them.

Each detector goes through the shared NAB scorer exactly as a user would run
it: the scorer calls ``medbay detect FILE --detector NAME`` once per data file
and re-runs a 60 % prefix of each file to prove the scores are causal. The raw
``step`` speed on a block of 200 series is measured in-process, because the
service calls ``step`` with a few hundred series at a time.

Run ``medbay bench nab [--detectors sigma3,likelihood] [--jobs 2]``;
``NAB_SCORER`` overrides the scorer's path. The table ends with the scores published
on NAB's 58 files for each profile (NAB's scoreboard): reference points, not the same
corpus, since a score is normalised over the files scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from medbay.detector.anomaly import DETECTORS, make_detector

SCORER = Path(
    os.environ.get("NAB_SCORER", Path(__file__).resolve().parents[2] / "shared/nab/nab_score.py")
)
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PUBLISHED = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.1, 63.1, 74.3),
    "CAD OSE": (69.9, 67.0, 73.2),
    "earthgecko Skyline": (58.2, 46.2, 63.9),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
}
"""Published NAB scores on all 58 files, per profile (``PROFILES``' order), from NAB's
scoreboard (the numenta/NAB repository's README; Numenta HTM as NuPIC 0.5.6, the
version of its paper, as the shared corpus's README quotes it)."""


def detect_command(detector: str) -> str:
    """The `medbay detect` command line for ``detector``, run from this venv."""
    python = shlex.quote(sys.executable)
    return f"{python} -m medbay.cli.detect detect --detector {shlex.quote(detector)}"


def score(detector: str, jobs: int, check_causal: bool = True) -> dict[str, Any]:
    """Run the NAB scorer on one detector; return its result summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(SCORER), "--detector", detect_command(detector)]
        cmd += ["--name", detector, "--jobs", str(jobs), "--json", str(out), "--quiet"]
        if check_causal:
            cmd.append("--check-causal")
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"NAB scorer failed for {detector}:\n{done.stderr[-2000:]}")
        result = json.loads(out.read_text())
    profiles = result["profiles"]
    return {
        "scores": {p: profiles[p]["score"] for p in PROFILES},
        "thresholds": {p: profiles[p]["threshold"] for p in PROFILES},
        "windows_detected": {p: profiles[p]["windows_detected"] for p in PROFILES},
        "false_positives": {p: profiles[p]["fp"] for p in PROFILES},
        "windows": result["n_windows"],
        "causal": not result["causality_violations"] if check_causal else None,
        "seconds": time.monotonic() - started,
    }


def step_speed(detector: str, series: int = 200, steps: int = 2000, seed: int = 0) -> float:
    """Samples per second that ``step`` scores on a block of ``series`` series."""
    model = make_detector(detector)
    model.add_series(series)
    rows = np.arange(series, dtype=np.intp)
    values = np.random.default_rng(seed).normal(50.0, 5.0, size=(steps, series))
    # a sample a minute from 2026-01-01, every series at once (as a host's scrape)
    times = 1_767_225_600.0 + 60.0 * np.arange(steps)
    at = np.empty(series)
    for t in range(min(steps, 500)):  # warm up past the learning periods
        at.fill(times[t])
        model.step(rows, values[t], at)
    started = time.perf_counter()
    for t in range(steps):
        at.fill(times[t])
        model.step(rows, values[t], at)
    return series * steps / (time.perf_counter() - started)


def state_bytes(detector: str, series: int = 100) -> float:
    """Bytes of learned state per series (what a snapshot stores for it)."""
    model = make_detector(detector)
    model.add_series(series)
    return sum(np.asarray(a).nbytes for a in model.get_state().values()) / series


def run(detectors: list[str], jobs: int) -> dict[str, dict[str, Any]]:
    """Score and time each detector, print a table, and return the figures."""
    results: dict[str, dict[str, Any]] = {}
    for name in detectors:
        results[name] = score(name, jobs)
        results[name]["samples_per_s"] = step_speed(name)
        results[name]["state_bytes_per_series"] = state_bytes(name)
    print(format_table(results))
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    header = f"{'detector':<20}" + "".join(f"{p:>20}" for p in PROFILES)
    header += f"{'causal':>8}{'step samples/s':>16}{'state/series':>14}"
    lines = [f"NAB scores ({SCORER.parent.name} corpus; 0 = never fires, 100 = perfect)", header]
    for name, r in sorted(results.items(), key=lambda item: -item[1]["scores"]["standard"]):
        cells = "".join(f"{r['scores'][p]:>20.2f}" for p in PROFILES)
        causal = {True: "ok", False: "FAIL", None: "-"}[r["causal"]]
        memory = f"{r['state_bytes_per_series'] / 1024:.1f} KB"
        lines.append(f"{name:<20}{cells}{causal:>8}{r['samples_per_s']:>16,.0f}{memory:>14}")
    lines.append("published, NAB's scoreboard, 58 files (reference: another corpus):")
    for name, published in PUBLISHED.items():
        lines.append(f"  {name:<18}" + "".join(f"{value:>20.1f}" for value in published))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``medbay bench nab``."""
    names = [d.strip() for d in args.detectors.split(",") if d.strip()] or sorted(DETECTORS)
    run(names, args.jobs)
    return 0
