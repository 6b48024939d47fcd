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


def share(text: str) -> float:
    """A share, 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not a share (0-1)")
    return value


def duration(text: str) -> float:
    """Seconds from '90', '90s', '15m' or '1h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90s, 15m, 1h)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return seconds


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
        "--schema-version",
        type=int,
        choices=(1, 2),
        default=2,
        help="MetricBatch version published: 2 (columns) or 1 (a list of samples)",
    )
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
    plan = kinds.add_parser(
        "planner",
        help="planner model accuracy vs the rule table, and planning latency",
        allow_abbrev=False,  # --explore (the old --operator-first) is not --explore-rate
    )
    plan.add_argument("--sizes", default="50,100,200,500,1000", help="outcome counts to train on")
    plan.add_argument("--test-incidents", type=int, default=2000, help="held-out incidents")
    plan.add_argument("--latency-issues", type=int, default=2000, help="issues timed")
    plan.add_argument(
        "--operator-first",
        type=share,
        default=0.2,
        metavar="SHARE",
        help="share of the simulated incidents that an operator handles first with an "
        "action of their own instead of the plan (default 0.2)",
    )
    plan.add_argument(
        "--explore-rate",
        type=float,
        default=None,
        metavar="RATE",
        help="the planner's explore_rate (share of model-made plans that try the "
        "second-best action first) in the exploring learning loop, compared with "
        "exploring off (0-0.2; default: the planner's default)",
    )
    plan.add_argument(
        "--corpus",
        type=Path,
        metavar="FILE",
        help="learn in the world of a lab corpus (the outcomes.json `medbay lab --train` "
        "writes: its issues, how often each action worked there, its targets) instead of "
        "the simulated one",
    )
    plan.add_argument(
        "--skill", type=share, default=0.5, help="share of operator tries that pick the best"
    )
    plan.add_argument("--flip", type=share, default=0.05, help="share of flipped outcomes")
    plan.add_argument("--runs", type=int, default=5, help="learning loops (seeds) to average")
    plan.add_argument("--seed", type=int, default=7)
    plan.set_defaults(func=lambda a: load("planner").main(a))
    gw = kinds.add_parser("gateway", help="gateway list latency, WebSocket fan-out and memory")
    gw.add_argument("--incidents", type=int, default=10_000, help="incidents in the history")
    gw.add_argument("--clients", type=int, default=200, help="WebSocket clients")
    gw.add_argument("--events", type=int, default=200, help="live events sent to the clients")
    gw.add_argument("--rate", type=float, default=20.0, help="live events per second")
    gw.add_argument("--requests", type=int, default=200, help="GET requests per endpoint")
    gw.set_defaults(func=lambda a: load("gateway").main(a))
    foot = kinds.add_parser(
        "footprint", help="detector memory per series, collector CPU at its interval"
    )
    foot.add_argument("--series", default="10000,100000", help="series counts to measure at")
    foot.add_argument("--collector-seconds", type=float, default=60.0)
    foot.set_defaults(func=lambda a: load("footprint").main(a))
    remedy = kinds.add_parser(
        "remediation", help="time from a threshold-crossing sample to the executor acting"
    )
    remedy.add_argument("--incidents", type=int, default=200, help="incidents to time")
    remedy.add_argument("--rate", type=float, default=5.0, help="incidents per second")
    remedy.set_defaults(func=lambda a: load("remediation").main(a))
    sec = kinds.add_parser(
        "security", help="attacks on a running `medbay up`: each must be refused"
    )
    sec.add_argument(
        "--data-dir", type=Path, default=Path(".medbay"), help="where its credentials are"
    )
    sec.add_argument("--nats-url", help="default: from <data-dir>/up.json")
    sec.add_argument("--gateway-url", help="default: from <data-dir>/up.json")
    sec.add_argument("--results-dir", type=Path, default=None, help=argparse.SUPPRESS)
    sec.set_defaults(func=lambda a: load("security").main(a))
    cli = kinds.add_parser(
        "cli", help="how fast `medbay --help` and sub-command --help answer, vs bare python"
    )
    cli.add_argument("--runs", type=int, default=11, help="runs per command (the median is shown)")
    cli.set_defaults(func=lambda a: load("cli").main(a))
    faults = kinds.add_parser(
        "faults",
        help="kill replicas and NATS nodes under load: events lost or done twice, recovery",
    )
    faults.add_argument("--hosts", type=int, default=None, help="simulated hosts (200; soak 1000)")
    faults.add_argument("--metrics", type=int, default=50, help="samples per host per interval")
    faults.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    faults.add_argument("--detectors", type=int, default=3, help="detector replicas")
    faults.add_argument("--warmup", type=float, default=30.0, help="seconds before the faults")
    faults.add_argument("--settle", type=float, default=30.0, help="seconds per fault's window")
    faults.add_argument("--probe-seconds", type=float, default=2.0, help="one outage every N s")
    faults.add_argument(
        "--faults",
        type=lambda text: [f.strip() for f in text.split(",") if f.strip()],
        default=None,
        help="which faults, comma-separated (default all): detector, planner, approver, "
        "executor, nats-follower, metrics-leader, metrics-leader-sigterm, cluster-restart",
    )
    faults.add_argument("--json", type=Path, help="also write the figures to this file")
    faults.add_argument(
        "--soak", type=duration, default=None, help="instead: run the load this long (e.g. 1h)"
    )
    faults.add_argument(
        "--scaling",
        action="store_true",
        help="instead: detector samples per CPU-second, 1 replica vs --detectors",
    )
    faults.add_argument(
        "--rounds", type=int, default=3, help="--scaling: pairs of runs (the median ratio counts)"
    )
    faults.set_defaults(func=lambda a: load("faults").main(a))
    spans = kinds.add_parser(
        "traces", help="spans/s the collector's OTLP receiver takes on one core, and its memory"
    )
    spans.add_argument("--seconds", type=float, default=10.0, help="driven seconds per format")
    spans.add_argument("--spans-per-request", type=int, default=512, help="spans per body")
    spans.add_argument("--connections", type=int, default=4, help="keep-alive connections")
    spans.add_argument(
        "--operations", type=int, default=10_000, help="distinct operations for the memory figures"
    )
    spans.add_argument(
        "--spans-per-operation", type=int, default=5, help="server spans per distinct operation"
    )
    spans.add_argument(
        "--detect-interval",
        type=float,
        default=1.0,
        help="collector interval (s) when timing first erroring span -> IssueOpened",
    )
    spans.add_argument("--bursts", type=int, default=20, help="error bursts to time")
    spans.set_defaults(func=lambda a: load("traces").main(a))
