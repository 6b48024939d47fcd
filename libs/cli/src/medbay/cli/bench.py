"""``medbay bench ...``: the benchmarks in the repository's ``bench/`` folder.

They print their figures; performance is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[5]  # libs/cli/src/medbay/cli/bench.py


def load(name: str) -> ModuleType:
    path = REPO / "bench" / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"medbay bench: {path} not found (benchmarks need a source checkout)")
    spec = importlib.util.spec_from_file_location(f"medbay_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    return module


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    kinds = p.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    pipe = kinds.add_parser(
        "pipeline", help="detector throughput and publish-to-issue latency vs raw nats-py"
    )
    pipe.add_argument("--hosts", type=int, default=50, help="simulated hosts")
    pipe.add_argument("--metrics", type=int, default=50, help="samples per host scrape")
    pipe.add_argument("--messages", type=int, default=20_000, help="batches for throughput")
    pipe.add_argument(
        "--latency-rate", type=float, default=20_000, help="samples/s for the latency run"
    )
    pipe.add_argument("--latency-seconds", type=float, default=10.0)
    pipe.add_argument("--detector-command", default=None, help=argparse.SUPPRESS)
    pipe.set_defaults(func=lambda a: load("pipeline").main(a))
    nab = kinds.add_parser("nab", help="score anomaly detectors on the NAB data")
    nab.add_argument(
        "--detectors", default="", help="comma-separated detector names (default: all)"
    )
    nab.add_argument("--jobs", type=int, default=2)
    nab.set_defaults(func=lambda a: load("nab").main(a))
    remedy = kinds.add_parser(
        "remediation", help="time from a threshold-crossing sample to the executor acting"
    )
    remedy.add_argument("--incidents", type=int, default=200, help="incidents to time")
    remedy.add_argument("--rate", type=float, default=5.0, help="incidents per second")
    remedy.set_defaults(func=lambda a: load("remediation").main(a))
