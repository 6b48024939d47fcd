"""Planner model accuracy against the rule table, with and without exploring, and
planning latency.

``medbay bench planner [--sizes 50,100,200,500,1000] [--runs 5] [--test-incidents 2000]
[--latency-issues 2000] [--operator-first 0.2] [--explore-rate 0.05] [--skill 0.5]
[--flip 0.05] [--seed 7] [--corpus FILE]``

**Incident corpus.** Simulated issues on four kinds of host (``cache-*`` run
redis, ``app-*`` an API, ``db-*`` postgres, ``web-*`` nginx), drawn from these
scenarios. Each gives every plausible action a probability that it fixes the
issue; the known best action is the most likely one:

| scenario | weight | issue | best action | misleading because |
|---|---|---|---|---|
| memory_cache | 1.0 | memory_percent 86-99 on cache-* | clear_cache (0.90) | |
| memory_app | 1.0 | memory_percent 86-99 on app-* | restart_service (0.85) | rules: clear_cache |
| disk_logs | 0.8 | disk_percent{mount=/var/log} 90.5-99.5 | rotate_logs (0.90) | |
| disk_data | 0.8 | disk_percent{mount=/data} 90.5-99.5 | cleanup_disk (0.85) | rules: rotate_logs |
| service_down | 1.0 | service_up 0 for the host's service | restart_service (0.90) | |
| db_postgres | 0.7 | postgres latency 1-9 s on db-* | optimize_query (0.85) | |
| db_redis | 0.7 | redis latency 1-9 s on cache-* | clear_cache (0.80) | rules: optimize_query |
| cpu_leak | 0.8 | cpu_percent 80.5-95.5 on app-* | restart_service (0.85) | rules: scale_up |
| cpu_surge | 0.8 | cpu_percent 95.5-100 on app-* | scale_up (0.85) | critical, as leaks above 95 |
| network | 0.5 | net_errors{interface=eth0} 100-5000 | alert_human (0.70) | |
| anomaly | 0.4 | load1 anomaly (no threshold) | alert_human (0.70) | |
| other | 0.2 | a custom metric | alert_human (0.70) | |

Noise: hour and weekday are random (they carry no signal), values fall near
the thresholds (cpu_leak and cpu_surge meet at 95.5, just above the critical
threshold of 95, so severity alone misleads), and ``--flip`` (default 5 %) of
all outcomes are reported the wrong way round. The two kinds of memory issue,
disk issue and database latency differ only in host or resource, so the model
has to learn them from the per-target success rates; the CPU ones differ only
in value.

**Lab corpus** (``--corpus``, the ``outcomes.json`` of ``medbay lab --train``):
instead of the scenarios above, the issues the lab's planner planned, grouped by
what they were about (kind, host, resource), each group drawn as often as the lab
saw it; an action works as often as it did on that group in the lab (smoothed:
one success and one failure added), and only actions the lab tried there are
plausible; targets come from the lab's catalog, and the planner's config is the
default one. ``--flip`` and the operators apply as above.

**Targets.** The planner names only targets of a simulated executor catalog
(``CATALOG``): the host role's service (redis, api, postgres, nginx) for its
restarts, scaling, cache and queries, an ``api-cache``, ``logs`` and ``data``
directories covering the two mounts, a reboot target per role covering its
service, and ``oncall``. It permits every action a scenario finds plausible
where that action names the issue's own resource or the host's service, so the
model chooses among the same actions as before targets were checked, except
restarting a service for network errors on ``eth0`` (not the service: a
needless action the planner no longer takes).

**Learning loop.** Incidents arrive one by one. The real ``Planner`` plans
each (rule table until ``min_outcomes`` = 50, then the current model), except
that with probability ``--operator-first`` (default 0.2) an operator acts first
with a quick action of their own instead of the plan (the plan is remembered
with that one step). Steps run in order and stop at the first verified fix, as
in the executor; when every step of a plan failed, an operator tries another
plausible action (one with a target), and so on until one works. An operator
picks the best action with probability ``--skill`` (default 0.5, if not tried
yet on this incident), else a random plausible one. Each outcome goes through the real
``Learner`` (success rates, training rows) and the real ``train_and_validate``
runs every 50 outcomes, replacing the model only if it validates at least as
well. The loop runs ``--runs`` times (default 5) with different seeds: a loop's
early luck decides which actions get tried, so single runs vary.

Every loop runs twice from the same seed: with the planner's exploring off
(``explore_rate: 0``) and at ``--explore-rate`` (default: the planner's default,
``PlannerConfig().explore_rate``, 5 %: that share of model plans try the
second-best action first when that is safe; see ``medbay.planner.exploration``).
No breaker is open in the simulation.

**Accuracy.** For each size N the real model is trained on the loop's first N
outcomes (80 % fit, 20 % held out for its validation accuracy: whether it
predicts each held-out step's success right) and, with the success rates as
they stood after N outcomes, plans ``--test-incidents`` fresh incidents with
exploring off: top-1 accuracy is the share whose first step is the best action.
The rule table plans the same incidents as the baseline.

**Latency.** ``Planner.plan`` (targets, features, one batched prediction for all
candidate actions, the Plan) timed per issue with the first exploring loop's
largest model, over ``--latency-issues`` incidents. The forest runs on one
thread; its trees are evaluated directly (``ModelBundle.probabilities``), which
gives the same numbers as ``predict_proba`` about ten times faster.

Figures are printed and written to ``bench/results/planner-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
from pydantic import Field, TypeAdapter, ValidationError

from medbay.cli.lab.train import CORPUS_SCHEMA
from medbay.common.actions import ACTIONS
from medbay.common.events import (
    ActionName,
    ActionResult,
    IssueKind,
    IssueOpened,
    IssueUpdated,
    Plan,
    PlanStep,
    Severity,
    issue_fingerprint,
)
from medbay.common.records import TargetCatalog
from medbay.planner.config import PlannerConfig
from medbay.planner.learning import Learner, TrainingRow
from medbay.planner.model import ModelBundle, NotEnoughData, train_and_validate
from medbay.planner.planning import Planner
from medbay.planner.rates import SuccessRates

RESULTS = Path(__file__).resolve().parent / "results"
ISSUE: TypeAdapter[IssueOpened | IssueUpdated] = TypeAdapter(
    Annotated[IssueOpened | IssueUpdated, Field(discriminator="type")]
)
T0 = datetime(2026, 1, 5, tzinfo=UTC)

HOSTS = {
    "cache": [f"cache-{i}" for i in range(1, 4)],
    "app": [f"app-{i}" for i in range(1, 7)],
    "db": [f"db-{i}" for i in range(1, 3)],
    "web": [f"web-{i}" for i in range(1, 4)],
}
SERVICE_OF = {"cache": "redis", "app": "api", "db": "postgres", "web": "nginx"}

CONFIG = PlannerConfig.model_validate(
    {
        "host_targets": {
            "cache-*": {"clear_cache": "redis", "restart_service": "redis", "scale_up": "redis"},
            "app-*": {
                "clear_cache": "api-cache",
                "restart_service": "api",
                "scale_up": "api",
                "kill_process": "api",
            },
            "db-*": {"restart_service": "postgres", "scale_up": "postgres"},
            "web-*": {"restart_service": "nginx"},
        },
        "explore_rate": 0.0,
    }
)
CATALOG = TargetCatalog.model_validate(
    {
        "mode": "live",
        "written_at": T0,
        "targets": {
            "redis": {
                "kind": "command",
                "actions": ["clear_cache", "restart_service", "scale_up", "optimize_query"],
            },
            "api": {"kind": "command", "actions": ["restart_service", "scale_up", "kill_process"]},
            "api-cache": {"kind": "redis", "actions": ["clear_cache"]},
            "postgres": {
                "kind": "command",
                "actions": ["restart_service", "scale_up", "optimize_query"],
            },
            "nginx": {"kind": "systemd", "actions": ["restart_service"]},
            "logs": {
                "kind": "files",
                "actions": ["rotate_logs", "cleanup_disk"],
                "covers": ["/var/log"],
            },
            "data": {
                "kind": "files",
                "actions": ["rotate_logs", "cleanup_disk"],
                "covers": ["/data"],
            },
            **{
                f"{role}-hosts": {"kind": "command", "actions": ["reboot"], "covers": [service]}
                for role, service in SERVICE_OF.items()
            },
            "oncall": {"kind": "notifier", "actions": ["alert_human"]},
        },
    }
)
NO_BREAKERS: frozenset[str] = frozenset()


class Scenario(NamedTuple):
    name: str
    weight: float
    kind: IssueKind
    roles: tuple[str, ...]
    metric: str
    labels: dict[str, str] | None  # None: the host's service
    values: tuple[float, float]
    levels: tuple[float | None, float | None]  # warning, critical thresholds
    success: dict[ActionName, float]

    @property
    def best(self) -> ActionName:
        return max(self.success, key=self.success.__getitem__)


ANY = ("cache", "app", "db", "web")
SCENARIOS = (
    Scenario(
        "memory_cache", 1.0, "memory", ("cache",), "memory_percent", {}, (86, 99), (85, 95),
        {"clear_cache": 0.9, "restart_service": 0.5, "scale_up": 0.25, "alert_human": 0.1},
    ),
    Scenario(
        "memory_app", 1.0, "memory", ("app",), "memory_percent", {}, (86, 99), (85, 95),
        {"clear_cache": 0.15, "restart_service": 0.85, "scale_up": 0.4, "alert_human": 0.1},
    ),
    Scenario(
        "disk_logs", 0.8, "disk", ANY, "disk_percent", {"mount": "/var/log"}, (90.5, 99.5),
        (90, 95), {"rotate_logs": 0.9, "cleanup_disk": 0.55, "alert_human": 0.1},
    ),
    Scenario(
        "disk_data", 0.8, "disk", ANY, "disk_percent", {"mount": "/data"}, (90.5, 99.5),
        (90, 95), {"rotate_logs": 0.1, "cleanup_disk": 0.85, "alert_human": 0.1},
    ),
    Scenario(
        "service_down", 1.0, "service_down", ANY, "service_up", None, (0, 0), (None, 0.5),
        {"restart_service": 0.9, "reboot": 0.6, "alert_human": 0.1},
    ),
    Scenario(
        "db_postgres", 0.7, "db_latency", ("db",), "postgres_query_latency_ms",
        {"service": "postgres"}, (1000, 9000), (1000, 5000),
        {"optimize_query": 0.85, "restart_service": 0.4, "scale_up": 0.3, "alert_human": 0.1},
    ),
    Scenario(
        "db_redis", 0.7, "db_latency", ("cache",), "redis_ping_latency_ms",
        {"service": "redis"}, (1000, 9000), (1000, 5000),
        {"optimize_query": 0.05, "clear_cache": 0.8, "restart_service": 0.5, "alert_human": 0.1},
    ),
    Scenario(
        "cpu_leak", 0.8, "cpu", ("app",), "cpu_percent", {}, (80.5, 95.5), (80, 95),
        {"restart_service": 0.85, "scale_up": 0.35, "kill_process": 0.4, "alert_human": 0.1},
    ),
    Scenario(
        "cpu_surge", 0.8, "cpu", ("app",), "cpu_percent", {}, (95.5, 100), (80, 95),
        {"restart_service": 0.2, "scale_up": 0.85, "kill_process": 0.2, "alert_human": 0.1},
    ),
    Scenario(
        "network", 0.5, "network_errors", ANY, "net_errors", {"interface": "eth0"},
        (100, 5000), (100, 1000), {"alert_human": 0.7, "restart_service": 0.2},
    ),
    Scenario(
        "anomaly", 0.4, "anomaly", ANY, "load1", {}, (2, 40), (None, None),
        {"alert_human": 0.7, "restart_service": 0.3},
    ),
    Scenario(
        "other", 0.2, "other", ANY, "custom_metric", {}, (1, 100), (None, 50),
        {"alert_human": 0.7, "restart_service": 0.2},
    ),
)  # fmt: skip


class LabScenario(NamedTuple):
    """Issues the lab recorded on one resource (kind, host, resource), and how often
    each action tried on them worked there (smoothed: one success and one failure
    added), as a scenario of ``lab_world``. Only actions the lab tried are plausible."""

    name: str
    weight: float
    issues: tuple[IssueOpened | IssueUpdated, ...]
    success: dict[ActionName, float]

    @property
    def best(self) -> ActionName:
        return max(self.success, key=self.success.__getitem__)


class Incident(NamedTuple):
    scenario: Scenario | LabScenario
    issue: IssueOpened | IssueUpdated


class World(NamedTuple):
    """Where the learning loop runs: the incidents, the executor's catalog and the
    planner's config (``synthetic_world``, or ``lab_world`` from ``medbay lab --train``)."""

    name: str
    config: PlannerConfig
    catalog: TargetCatalog
    make_incident: Callable[[random.Random, int, str], Incident]

    def corpus(self, seed: int, count: int, tag: str) -> list[Incident]:
        rng = random.Random(seed)
        return [self.make_incident(rng, n, tag) for n in range(count)]


def make_incident(rng: random.Random, n: int, tag: str) -> Incident:
    sc = rng.choices(SCENARIOS, weights=[s.weight for s in SCENARIOS])[0]
    role = rng.choice(sc.roles)
    host = rng.choice(HOSTS[role])
    labels = {"service": SERVICE_OF[role]} if sc.labels is None else dict(sc.labels)
    low, high = sc.values
    value = rng.uniform(low, high)
    if sc.kind == "db_latency":
        value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    warning, critical = sc.levels
    if sc.kind == "service_down" or (critical is not None and value >= critical):
        severity, threshold = Severity.CRITICAL, critical
    else:
        severity, threshold = Severity.WARNING, warning
    seen = T0 + timedelta(days=rng.randrange(7), hours=rng.randrange(24), minutes=n % 60)
    resource = labels.get("mount") or labels.get("service") or labels.get("interface")
    issue = IssueOpened(
        event_id=f"{tag}-{n}",
        fingerprint=issue_fingerprint(host, sc.kind, sc.metric, labels),
        host=host,
        kind=sc.kind,
        resource=resource or sc.metric,
        metric=sc.metric,
        labels=labels,
        value=value,
        threshold=threshold,
        severity=severity,
        detector="threshold" if sc.kind != "anomaly" else "likelihood",
        score=rng.uniform(0.9, 1.0) if sc.kind == "anomaly" else None,
        first_seen=seen,
        last_seen=seen,
        timestamp=seen,
    )
    return Incident(sc, issue)


def synthetic_world() -> World:
    return World("synthetic", CONFIG, CATALOG, make_incident)


LabOutcome = tuple[IssueOpened | IssueUpdated, ActionName, bool]


def read_lab_corpus(path: Path) -> tuple[TargetCatalog, list[LabOutcome]]:
    """The catalog and the outcomes (issue, action, whether it worked) of a lab corpus;
    SystemExit saying what is wrong with a file that is not one."""

    def refuse(problem: str) -> SystemExit:
        return SystemExit(f"medbay bench planner: --corpus {path}: {problem}")

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise refuse(str(exc)) from None
    if not isinstance(data, dict) or data.get("schema") != CORPUS_SCHEMA:
        written = "`medbay lab --train` writes one to DATA_DIR/lab/outcomes.json"
        raise refuse(f"not a lab corpus ({CORPUS_SCHEMA}; {written})")
    if data.get("catalog") is None:
        raise refuse("it holds no target catalog")
    try:
        catalog = TargetCatalog.model_validate(data["catalog"])
    except ValidationError as exc:
        raise refuse(f"catalog: {exc}") from None
    outcomes: list[LabOutcome] = []
    for number, row in enumerate(data.get("outcomes", []), 1):
        try:
            if row["issue"] is None:  # its issue was not seen: nothing to plan it from
                continue
            action, success = row["action"], row["success"]
            if action not in ACTIONS or not isinstance(success, bool):
                raise ValueError(f"action {action!r}, success {success!r}")
            outcomes.append((ISSUE.validate_python(row["issue"]), action, success))
        except (KeyError, TypeError, ValueError) as exc:  # ValidationError is a ValueError
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise refuse(f"outcome {number}: {problem}") from None
    if not outcomes:
        raise refuse("it holds no outcomes")
    return catalog, outcomes


def lab_world(path: Path) -> World:
    """The world of a lab corpus (``medbay lab --train`` writes it): its issues,
    drawn as often as the lab saw each resource's, at a random hour and weekday;
    each action works as often as it did in the lab; the lab's target catalog."""
    catalog, outcomes = read_lab_corpus(path)
    tries: dict[tuple[IssueKind, str, str], Counter[tuple[ActionName, bool]]] = {}
    issues: dict[tuple[IssueKind, str, str], dict[str, IssueOpened | IssueUpdated]] = {}
    for issue, action, success in outcomes:
        key = (issue.kind, issue.host, issue.resource)
        tries.setdefault(key, Counter())[(action, success)] += 1
        issues.setdefault(key, {})[issue.event_id] = issue
    scenarios = []
    for key, counted in sorted(tries.items()):
        worked = {
            a: (counted[(a, True)] + 1) / (counted[(a, True)] + counted[(a, False)] + 2)
            for a in sorted({action for action, _ in counted})
        }
        seen = tuple(issues[key].values())
        scenarios.append(LabScenario(" ".join(key), len(seen), seen, worked))

    def make_lab_incident(rng: random.Random, n: int, tag: str) -> Incident:
        sc = rng.choices(scenarios, weights=[s.weight for s in scenarios])[0]
        seen = T0 + timedelta(days=rng.randrange(7), hours=rng.randrange(24), minutes=n % 60)
        issue = rng.choice(sc.issues).model_copy(
            update={"event_id": f"{tag}-{n}", "first_seen": seen, "last_seen": seen}
        )
        return Incident(sc, issue.model_copy(update={"timestamp": seen}))

    config = PlannerConfig(explore_rate=0.0)
    return World(f"lab corpus {path.name}", config, catalog, make_lab_incident)


# --- the learning loop ---------------------------------------------------------


class Snapshot(NamedTuple):
    rows: list[TrainingRow]
    rates: SuccessRates


def simulate(
    world: World, sizes: list[int], seed: int, config: PlannerConfig, args: argparse.Namespace
) -> tuple[dict[int, Snapshot], dict[str, Any]]:
    """Run the loop until the largest size; the learner's state at each size."""
    rng = random.Random(seed + 1)
    learner = Learner(config)
    planner = Planner(config, learner.rates)
    snapshots: dict[int, Snapshot] = {}
    stats: dict[str, Any] = {
        "incidents": 0,
        "operator_first": 0,
        "planner_explored": 0,
        "operator": 0,
        "trainings": 0,
        "accepted": 0,
    }
    pending = sorted(sizes)
    n = 0
    while pending:
        incident = world.make_incident(rng, n, "loop")
        n += 1
        sc = incident.scenario
        choices = planner.targets(incident.issue, world.catalog).items()
        targets = {a: c.target for a, c in choices if c.target is not None}
        made = planner.plan(incident.issue, world.catalog, NO_BREAKERS)
        if not isinstance(made, Plan):
            raise RuntimeError(f"{sc.name} not planned: {made.why}")
        plan = made
        stats["planner_explored"] += "exploring" in plan.reason
        if rng.random() < args.operator_first:
            plan = operator_first(rng, plan, sc, targets, args.skill)
            stats["operator_first"] += 1
        learner.remember(plan)
        tried: list[tuple[ActionName, str]] = [(s.action, s.target) for s in plan.steps]
        index = 0
        while index < len(tried):
            action, target = tried[index]
            worked = rng.random() < sc.success.get(action, 0.02)
            if rng.random() < args.flip:
                worked = not worked
            learner.record(result(plan.plan_id, incident, index, action, target, worked))
            while pending and len(learner.rows) >= pending[0]:
                snap = Snapshot(list(learner.rows), copy.deepcopy(learner.rates))
                snapshots[pending.pop(0)] = snap
            if worked:
                break
            index += 1
            if index == len(tried):
                # the plan failed: an operator tries another plausible action
                pick = operator_pick(rng, sc, targets, {t[0] for t in tried}, args.skill)
                if pick is not None:
                    tried.append((pick, targets[pick]))
                    stats["operator"] += 1
        if learner.training_due():
            retrain(learner, planner, stats)
    stats["incidents"] = n
    return snapshots, stats


def retrain(learner: Learner, planner: Planner, stats: dict[str, int]) -> None:
    """What the planner does in the background once enough outcomes came in."""
    stats["trainings"] += 1
    try:
        training = train_and_validate(learner.take_training_set(), planner.config, planner.model)
    except NotEnoughData:
        return
    if training.accepted:
        stats["accepted"] += 1
        planner.model = training.bundle


def operator_first(
    rng: random.Random,
    plan: Plan,
    sc: Scenario | LabScenario,
    targets: dict[ActionName, str],
    skill: float,
) -> Plan:
    """``plan`` replaced by the quick action of an operator who acts first."""
    action = operator_pick(rng, sc, targets, set(), skill) or sc.best
    step = PlanStep(
        action=action,
        target=targets[action],
        risk=ACTIONS[action].risk,
        estimated_seconds=ACTIONS[action].typical_seconds,
    )
    return plan.model_copy(update={"steps": [step]})


def operator_pick(
    rng: random.Random,
    sc: Scenario | LabScenario,
    targets: dict[ActionName, str],
    tried: set[str],
    skill: float,
) -> ActionName | None:
    """What an operator tries next: the best action with probability ``skill`` (if not
    tried yet), else a random plausible action with a target (in ``targets``), not
    tried yet; None when all were."""
    left = [a for a in sc.success if a not in tried and a in targets]
    if not left:
        return None
    if sc.best in left and rng.random() < skill:
        return sc.best
    return rng.choice(left)


def result(
    plan_id: str, incident: Incident, index: int, action: ActionName, target: str, worked: bool
) -> ActionResult:
    at = incident.issue.last_seen
    return ActionResult(
        plan_id=plan_id,
        issue_fingerprint=incident.issue.fingerprint,
        issue_kind=incident.issue.kind,
        step_index=index,
        action=action,
        target=target,
        host=incident.issue.host,
        status="finished",
        outcome="success" if worked else "failure",
        verified=worked,
        dry_run=False,
        started_at=at,
        finished_at=at,
    )


def first_action(planner: Planner, catalog: TargetCatalog, incident: Incident) -> ActionName | None:
    made = planner.plan(incident.issue, catalog, NO_BREAKERS)
    return made.steps[0].action if isinstance(made, Plan) else None


def top1(planner: Planner, catalog: TargetCatalog, incidents: list[Incident]) -> float:
    hits = sum(first_action(planner, catalog, i) == i.scenario.best for i in incidents)
    return hits / len(incidents)


def latency(
    planner: Planner, catalog: TargetCatalog, incidents: list[Incident]
) -> dict[str, float]:
    times = []
    for incident in incidents:
        started = time.perf_counter()
        planner.plan(incident.issue, catalog, NO_BREAKERS)
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "issues": len(ms),
    }


def exploring_config(base: PlannerConfig, rate: float | None) -> PlannerConfig:
    """``base`` exploring at ``rate`` (``--explore-rate``; None: the planner's default)."""
    if rate is None:
        rate = PlannerConfig().explore_rate
    try:
        return PlannerConfig.model_validate(base.model_dump() | {"explore_rate": rate})
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise SystemExit(f"medbay bench planner: --explore-rate {rate:g}: {problem}") from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    world = lab_world(args.corpus) if args.corpus is not None else synthetic_world()
    base = world.config
    exploring = exploring_config(base, args.explore_rate)
    # the learning loop's planner config; test incidents are always planned with exploring off
    variants = {"without exploring": base, "exploring": exploring}
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    test = world.corpus(args.seed, args.test_incidents, "test")
    per_size: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {n: [] for n in sizes} for name in variants
    }
    loops: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    largest: tuple[ModelBundle, SuccessRates] | None = None
    for run_index in range(args.runs):
        seed = args.seed + 1000 * (run_index + 1)
        for name, config in variants.items():
            started = time.monotonic()
            snapshots, stats = simulate(world, sizes, seed, config, args)
            stats["seconds"] = time.monotonic() - started
            loops[name].append(stats)
            print(
                f"learning loop {run_index + 1}/{args.runs} {name}: {stats['incidents']} "
                f"incidents, {stats['planner_explored']} plans exploring, "
                f"{stats['operator_first']} handled by operators first, {stats['operator']} "
                f"operator tries after failed plans, {stats['trainings']} trainings "
                f"({stats['accepted']} accepted), "
                f"{stats['seconds']:.1f} s"
            )
            for size in sizes:
                snap = snapshots[size]
                t = time.monotonic()
                bundle = train_and_validate(snap.rows, base, None).bundle
                fit_seconds = time.monotonic() - t
                learnt, rules = Planner(base, snap.rates, bundle), Planner(base, snap.rates, None)
                per_size[name][size].append(
                    {
                        "model_top1": top1(learnt, world.catalog, test),
                        "rules_top1": top1(rules, world.catalog, test),
                        "validation_accuracy": bundle.validation_accuracy,
                        "fit_seconds": fit_seconds,
                    }
                )
                if run_index == 0 and config is exploring:
                    largest = bundle, snap.rates
    assert largest is not None
    accuracy: dict[str, list[dict[str, Any]]] = {}
    for name, sized in per_size.items():
        accuracy[name] = []
        for size, runs in sized.items():
            model = [r["model_top1"] for r in runs]
            accuracy[name].append(
                {
                    "outcomes": size,
                    "model_top1_mean": float(np.mean(model)),
                    "model_top1_min": min(model),
                    "model_top1_max": max(model),
                    "rules_top1": float(np.mean([r["rules_top1"] for r in runs])),
                    "validation_accuracy": float(
                        np.mean([r["validation_accuracy"] or 0.0 for r in runs])
                    ),
                    "fit_seconds": float(np.mean([r["fit_seconds"] for r in runs])),
                    "runs": runs,
                }
            )
    lat_set = world.corpus(args.seed + 1, args.latency_issues, "lat")
    planner = Planner(base, largest[1], largest[0])
    latency(planner, world.catalog, lat_set[:100])  # warm-up
    best = {i.scenario.name: i.scenario.best for i in test}
    return {
        "world": world.name,
        "best_actions": dict(sorted(best.items())),
        "explore_rate": exploring.explore_rate,
        "loops": loops,
        "accuracy": accuracy,
        "latency": latency(planner, world.catalog, lat_set),
    }


def table(report: dict[str, Any]) -> str:
    runs = len(next(iter(report["loops"].values())))
    lines = [
        f"world: {report['world']}",
        f"top-1 accuracy on held-out incidents (mean, min-max over {runs} learning loops)",
    ]
    for name, rows in report["accuracy"].items():
        lines += [
            f"learning {name}"
            + (f" ({report['explore_rate']:.0%})" if name == "exploring" else ""),
            f"{'outcomes':>9}{'model':>9}{'min-max':>15}{'rules':>9}{'validation':>12}{'fit s':>8}",
        ]
        for r in rows:
            spread = f"{r['model_top1_min']:.1%}-{r['model_top1_max']:.1%}"
            lines.append(
                f"{r['outcomes']:>9}{r['model_top1_mean']:>9.1%}{spread:>15}"
                f"{r['rules_top1']:>9.1%}{r['validation_accuracy']:>12.1%}{r['fit_seconds']:>8.2f}"
            )
    lat = report["latency"]
    lines.append(
        f"planning latency over {lat['issues']} issues (largest model): "
        f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``medbay bench planner``."""
    started = time.monotonic()
    report = run(args)
    print(table(report))
    report |= {
        "args": {k: v for k, v in vars(args).items() if not callable(v)},
        "seconds": time.monotonic() - started,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"planner-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written to {out}")
    return 0
