"""Running the lab: build the sandbox, inject faults in a seeded random order, measure.

A run is a first quiet period (nothing injected: whatever Medbay raises then is
a false alarm), then ``rounds`` rounds of every selected fault, each round in its
own shuffled order, each fault after a short random quiet gap. An episode lasts
until its fault is settled as expected (fixed and verified, or a person told),
everything Medbay opened meanwhile has resolved and no plan is still running, or
until ``episode_timeout`` passes; then the lab repairs what is left and resets
any breaker the fault opened, so the next one starts from a healthy sandbox.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medbay.cli.lab.faults import Fault
from medbay.cli.lab.observe import Observer, Seen
from medbay.cli.lab.sandbox import LabConfig, Sandbox
from medbay.cli.lab.score import (
    Episode,
    EpisodeResult,
    Policy,
    QuietFigures,
    judge,
    report,
    table,
)
from medbay.common.events import ActionResult, BreakerReset, PlanFinished
from medbay.common.streams import AUDIT, subject_for

log = logging.getLogger("medbay.lab")
SCHEMA = "medbay.lab/1"


@dataclass(frozen=True)
class RunOptions:
    seed: int
    rounds: int
    faults: tuple[Fault, ...]
    quiet_seconds: float
    """The first quiet period."""
    gap_seconds: tuple[float, float] = (2.0, 6.0)
    """Each fault comes after a random quiet gap of this many seconds."""
    episode_timeout: float = 120.0
    settle_timeout: float = 60.0
    lab: LabConfig = field(default_factory=LabConfig)
    keep: bool = False
    model_file: Path | None = None
    """Where ``export_model`` copies the planner's model to (``--train``)."""


class Progress:
    """One line that says where the run is (redrawn on a terminal, printed otherwise)."""

    def __init__(self, total: int, phase: str = "") -> None:
        self.total = total
        self.phase = f"{phase}: " if phase else ""
        self.done = 0
        self.tty = sys.stderr.isatty()

    def show(self, text: str) -> None:
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (width - filled)
        line = f"{self.phase}[{bar}] {self.done}/{self.total} {text}"
        if self.tty:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def learned_rows(seen: list[Seen]) -> list[dict[str, Any]]:
    """The outcomes a planner learns from (``medbay.planner.learning``), one row each:
    the issue its plan was made for, the plan's model version, the step's action
    and target, and whether it worked; each step once, the steps of plans people
    asked for by hand left out."""
    from medbay.common.events import IssueOpened, IssueUpdated, Plan
    from medbay.planner.learning import MANUAL_VERSION, outcome_of

    issues = {
        s.event.event_id: s.event for s in seen if isinstance(s.event, IssueOpened | IssueUpdated)
    }
    plans = {s.event.plan_id: s.event for s in seen if isinstance(s.event, Plan)}
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for s in seen:
        result = s.event
        if not isinstance(result, ActionResult) or (result.plan_id, result.step_index) in rows:
            continue
        success = outcome_of(result)
        plan = plans.get(result.plan_id)
        if success is None or plan is None or plan.model_version == MANUAL_VERSION:
            continue
        issue = issues.get(plan.issue_event_id)
        rows[(result.plan_id, result.step_index)] = {
            "plan_id": plan.plan_id,
            "model_version": plan.model_version,
            "issue": None if issue is None else issue.model_dump(mode="json"),
            "action": result.action,
            "target": result.target,
            "success": success,
        }
    return list(rows.values())


def learned_outcomes(seen: list[Seen]) -> dict[str, int]:
    """How many of the outcomes a planner learns from were successes and failures."""
    rows = learned_rows(seen)
    successes = sum(row["success"] for row in rows)
    return {"success": successes, "failure": len(rows) - successes}


@functools.cache
def git_commit() -> str:
    """The commit this lab runs, ``-dirty`` if the checkout has changes (read once: at
    the start, before anyone commits during a long run)."""
    repo = Path(__file__).resolve().parents[5]
    done = subprocess.run(
        ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=7"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


class Lab:
    def __init__(self, sandbox: Sandbox, observer: Observer, options: RunOptions) -> None:
        self.sandbox = sandbox
        self.observer = observer
        self.options = options
        self.results: list[EpisodeResult] = []
        self.quiet = QuietFigures()
        self.started = time.monotonic()
        allow = sandbox.executor_config()["safety"]["allow"]
        self.policy = Policy(allow=allow)

    async def quiet_period(self, seconds: float, progress: Progress, label: str) -> None:
        progress.show(f"{label}: {seconds:.0f} s with no fault")
        start = time.monotonic()
        await asyncio.sleep(seconds)
        window = [s for s in self.observer.seen if s.at >= start]
        before = len(self.quiet.issues)
        self.quiet.add(time.monotonic() - start, window)
        for issue in self.quiet.issues[before:]:
            log.warning("raised with no fault: %s", issue)

    async def episode(self, fault: Fault, progress: Progress) -> EpisodeResult:
        progress.show(f"{fault.kind}: {fault.description}")
        injected_at = await self.inject(fault)
        episode = Episode(fault, injected_at)

        def settled() -> bool:
            seen = [s for s in self.observer.seen if s.at >= injected_at]
            finished = [s.event for s in seen if isinstance(s.event, PlanFinished)]
            if fault.expected == "auto_resolved":
                done = any(f.outcome == "verified" for f in finished)
            else:
                done = any(f.escalated or f.outcome == "alerted" for f in finished)
            return done

        await self.observer.wait_for(settled, self.options.episode_timeout)
        await fault.repair(self.sandbox)
        await self.reset_breakers()
        await self.observer.wait_for(self.calm, self.options.settle_timeout)
        episode.ended_at = time.monotonic()
        episode.seen = [s for s in self.observer.seen if injected_at <= s.at <= episode.ended_at]
        result = judge(episode, self.observer.seen, self.policy)
        self.results.append(result)
        progress.done += 1
        verdict = "as expected" if result.as_expected else "NOT as expected"
        mttr = f", fixed in {result.mttr_s:.1f} s" if result.mttr_s is not None else ""
        progress.show(f"{fault.kind}: {verdict}{mttr}")
        return result

    async def inject(self, fault: Fault) -> float:
        """Inject ``fault``; if the sandbox was not ready for it (what it breaks is not
        running), repair and try once more. Returns the moment of injection."""
        try:
            injected_at = time.monotonic()
            await fault.inject(self.sandbox)
            return injected_at
        except Exception as exc:
            log.warning("could not inject %s (%s); repairing and trying again", fault.kind, exc)
        await fault.repair(self.sandbox)
        await self.observer.wait_for(self.calm, self.options.settle_timeout)
        injected_at = time.monotonic()
        await fault.inject(self.sandbox)
        return injected_at

    def calm(self) -> bool:
        """Nothing open, nothing running."""
        return not self.observer.open_issues() and not self.observer.plans_running()

    async def reset_breakers(self) -> None:
        """Close every open breaker, as the person told of it would once the cause is gone."""
        from medbay.common.access import EXECUTOR_RAILS
        from medbay.common.bus import event_headers
        from medbay.common.records import open_breakers

        js = self.observer.nc.jetstream()
        kv = await js.key_value(EXECUTOR_RAILS.name)
        for target in await open_breakers(kv):
            event = BreakerReset(target=target, reset_by="medbay lab", channel="cli")
            await js.publish(
                subject_for(event),
                event.model_dump_json().encode(),
                headers=event_headers(event),
                stream=AUDIT.name,
                timeout=5,
            )

    async def run(self) -> dict[str, Any]:
        """The first quiet period and the rounds of ``options``, then the report."""
        started_at = datetime.now(UTC)
        await self.run_rounds(self.options.seed, self.options.rounds, self.options.quiet_seconds)
        return self.summary(started_at)

    async def run_rounds(
        self, seed: int, rounds: int, quiet_seconds: float, phase: str = ""
    ) -> None:
        """A quiet period, then ``rounds`` rounds of every fault in the order and with
        the gaps of ``seed`` (the same seed gives the same faults at the same times)."""
        options = self.options
        rng = random.Random(seed)
        progress = Progress(rounds * len(options.faults), phase)
        if not await self.observer.wait_for(self.calm, 120):
            log.warning("the sandbox did not start calm: %s", list(self.observer.open_issues()))
        await self.quiet_period(quiet_seconds, progress, "quiet")
        for number in range(1, rounds + 1):
            order = list(options.faults)
            rng.shuffle(order)
            for fault in order:
                gap = rng.uniform(*options.gap_seconds)
                await self.quiet_period(gap, progress, f"round {number}")
                await self.episode(fault, progress)
        progress.finish()

    def summary(self, started_at: datetime) -> dict[str, Any]:
        """The report of what this lab ran so far (``--json``)."""
        options = self.options
        summary = report(self.results, self.quiet, options.faults)
        return {
            "schema": SCHEMA,
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "commit": git_commit(),
            "seed": options.seed,
            "rounds": options.rounds,
            "quiet_seconds": summary["totals"]["quiet_seconds"],
            "planner": self.planner_versions(),
            "lab_trained": options.lab.train,
            **summary,
            "episodes": [
                {
                    "kind": r.kind,
                    "expected": r.expected,
                    "as_expected": r.as_expected,
                    "auto_resolved": r.auto_resolved,
                    "escalated": r.escalated,
                    "mttr_s": r.mttr_s,
                    "steps": r.steps,
                    "issues": r.issues,
                    "needless_actions": r.needless_actions,
                    "outside_policy": r.outside_policy,
                }
                for r in self.results
            ],
            "quiet": {"issues": self.quiet.issues, "actions": self.quiet.actions},
        }

    async def export_model(self) -> dict[str, Any]:
        """Copy the planner's current model out of the sandbox (``--train``), or say why
        there is none."""
        from medbay.planner.modelfile import write_file
        from medbay.planner.store import read_current_model

        assert self.options.model_file is not None
        outcomes = learned_outcomes(self.observer.seen)
        bundle = await read_current_model(self.observer.nc.jetstream())
        if bundle is None:
            return {
                "file": None,
                "why_none": "the planner trains once it has "
                f"{self.options.lab.min_outcomes} outcomes with successes and failures "
                f"both; this run gave {outcomes['success']} successes and "
                f"{outcomes['failure']} failures",
                **outcomes,
            }
        self.options.model_file.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_file, bundle, self.options.model_file)
        return {
            "file": str(self.options.model_file),
            "version": bundle.version,
            "trained_on": bundle.trained_on,
            "validation_accuracy": bundle.validation_accuracy,
            "trained_outcomes": bundle.outcomes,
            **outcomes,
        }

    def planner_versions(self) -> str:
        """The model versions of the plans made for this lab's episodes."""
        from medbay.common.events import Plan

        since = self.started
        versions = sorted(
            {
                s.event.model_version
                for s in self.observer.seen
                if isinstance(s.event, Plan) and s.at >= since
            }
        )
        return ", ".join(versions)


@asynccontextmanager
async def sandbox_session(
    config: LabConfig, keep: bool, root: Path | None = None
) -> AsyncIterator[tuple[Sandbox, Observer]]:
    """A started sandbox and an observer of its bus; all torn down after (the
    sandbox's files stay with ``keep``)."""
    made = root is None
    base = Path(tempfile.mkdtemp(prefix="medbay-lab-")) if root is None else root
    sandbox = Sandbox(base, config)
    observer: Observer | None = None
    try:
        await asyncio.to_thread(sandbox.start)
        observer = await Observer.connect(sandbox.nats_url, sandbox.cli_password())
        await observer.start()
        yield sandbox, observer
    finally:
        if observer is not None:
            await observer.close()
        await asyncio.to_thread(sandbox.stop)
        if made and not keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"sandbox kept in {base}", file=sys.stderr)


async def run_lab(options: RunOptions, root: Path | None = None) -> dict[str, Any]:
    """Build the sandbox, run, and tear it all down."""
    async with sandbox_session(options.lab, options.keep, root) as (sandbox, observer):
        return await Lab(sandbox, observer, options).run()


def write_report(summary: dict[str, Any], path: Path) -> None:
    write_atomically(json.dumps(summary, indent=2) + "\n", path)


def write_atomically(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def print_summary(summary: dict[str, Any]) -> None:
    totals = summary["totals"]
    if totals["injected"]:
        print(table(summary))
        fixable = totals["fixable"]
        share = 100.0 * totals["fixable_auto_resolved"] / fixable if fixable else 0.0
        print(
            f"\nfixable faults auto-resolved and verified: {totals['fixable_auto_resolved']}/"
            f"{fixable} ({share:.1f} %); as expected in all: {totals['as_expected']}/"
            f"{totals['injected']}; silent: {totals['silent']}"
        )
    print(
        f"quiet: {totals['quiet_seconds']:.0f} s with no fault: {totals['quiet_issues']} issues, "
        f"{totals['quiet_plans']} plans, {totals['quiet_actions']} actions"
    )
    print(f"planner: {summary['planner'] or '(no plans)'}; commit {summary['commit'] or '?'}")
