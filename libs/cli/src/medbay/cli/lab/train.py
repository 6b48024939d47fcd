"""``medbay lab --train``: train a planner on real faults, then put it against the
rule table on faults it never saw.

One run, three parts, all on real parts:

1. **Training.** A sandbox set up for training (``LabConfig.train``: each files
   target may take both rotate_logs and cleanup_disk, so a disk fault has a fix
   and a non-fix to try) runs ``train_rounds`` rounds of the faults in the order
   of seed ``seed + TRAIN_SEED_OFFSET``. Its planner learns from every verified
   outcome and explores: half of its rule-made plans first try another safe fix
   (``rule_explore_rate``), and model plans the most the service allows. Without
   that, a planner whose rule table is always right never sees a failure, and no
   model can tell a fix from a non-fix.
2. **Held out, trained model.** In the same sandbox (the model knows its
   targets' history, as it would where it was trained), the planner restarts
   with exploring off and its model frozen, and ``rounds`` rounds of the faults
   run in the order of ``seed``.
3. **Held out, rule table.** A new sandbox set up the same way, whose planner
   has no model and does not explore, runs the same rounds in the same order.

Both held-out parts are judged alike (``score``). The trained model is copied to
``model_file`` (a real planner adopts it with ``initial_model``), and the
training outcomes, with the issue each was planned for and the sandbox's
target catalog, to ``corpus_file`` (``CORPUS_SCHEMA``; what ``medbay bench
planner --corpus`` learns from).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medbay.cli.lab.observe import Observer
from medbay.cli.lab.run import Lab, RunOptions, learned_rows, sandbox_session, write_atomically
from medbay.cli.lab.sandbox import LabConfig
from medbay.common.access import EXECUTOR_RAILS
from medbay.common.records import read_target_catalog

TRAIN_SEED_OFFSET = 1000
"""Training runs the faults in the order of ``seed + TRAIN_SEED_OFFSET``, so the
held-out rounds (in the order of ``seed``) are not the ones it learnt from."""
RULE_EXPLORE_RATE = 0.5
HELD_OUT_QUIET_SECONDS = 20.0
"""The quiet period before each held-out part (the planner restarts before the
first)."""


async def run_training(options: RunOptions, train_rounds: int, corpus_file: Path) -> dict[str, Any]:
    """The three parts; the report is the trained model's held-out run, with the
    training, the rule table's held-out run and the model beside it."""
    assert options.model_file is not None
    training = LabConfig(train=True, learn=True, rule_explore_rate=RULE_EXPLORE_RATE)
    frozen = dataclasses.replace(training, learn=False, rule_explore_rate=0.0)
    with_model: dict[str, Any] | None = None
    async with sandbox_session(training, options.keep) as (sandbox, observer):
        started = datetime.now(UTC)
        trainer = Lab(sandbox, observer, dataclasses.replace(options, lab=training))
        await trainer.run_rounds(
            options.seed + TRAIN_SEED_OFFSET, train_rounds, options.quiet_seconds, "training"
        )
        trained = trainer.summary(started)
        rows = learned_rows(observer.seen)
        catalog = await read_catalog(observer)
        write_corpus(rows, catalog, corpus_file)
        model = await trainer.export_model()
        if model["file"] is not None:
            await asyncio.to_thread(sandbox.restart_planner, frozen)
            started = datetime.now(UTC)
            held_out = dataclasses.replace(options, lab=frozen)
            evaluator = Lab(sandbox, observer, held_out)
            await evaluator.run_rounds(
                options.seed, options.rounds, HELD_OUT_QUIET_SECONDS, "held out, trained model"
            )
            with_model = evaluator.summary(started)
    model["corpus"] = {"file": str(corpus_file), "outcomes": len(rows)}
    training_part = {
        "seed": options.seed + TRAIN_SEED_OFFSET,
        "rounds": train_rounds,
        "planner": trained["planner"],
        "totals": trained["totals"],
    }
    if with_model is None:
        return {**trained, "model": model, "training": training_part, "rule_table": None}
    async with sandbox_session(frozen, options.keep) as (sandbox, observer):
        started = datetime.now(UTC)
        baseline = Lab(sandbox, observer, dataclasses.replace(options, lab=frozen))
        await baseline.run_rounds(
            options.seed, options.rounds, HELD_OUT_QUIET_SECONDS, "held out, rule table"
        )
        rules = baseline.summary(started)
    return {**with_model, "model": model, "training": training_part, "rule_table": rules}


CORPUS_SCHEMA = "medbay.lab.outcomes/1"


async def read_catalog(observer: Observer) -> dict[str, Any] | None:
    """The sandbox executor's target catalog, as JSON (None if it wrote none)."""
    js = observer.nc.jetstream()
    catalog = await read_target_catalog(await js.key_value(EXECUTOR_RAILS.name))
    return None if catalog is None else catalog.model_dump(mode="json")


def write_corpus(rows: list[dict[str, Any]], catalog: dict[str, Any] | None, path: Path) -> None:
    """The outcomes and the catalog their targets came from, as one JSON document."""
    corpus = {"schema": CORPUS_SCHEMA, "catalog": catalog, "outcomes": rows}
    write_atomically(json.dumps(corpus, indent=1) + "\n", path)


def comparison(summary: dict[str, Any]) -> str:
    """The rule table and the trained model on the held-out faults, side by side."""
    rules, model = summary["rule_table"], summary
    head = ("held-out faults", "rule table", f"trained model {summary['model']['version']}")
    rows = [head]

    def both(name: str, shown: Any) -> None:
        rows.append((name, shown(rules), shown(model)))

    def count(key: str) -> Any:
        return lambda s: str(s["totals"][key])

    def seconds(s: dict[str, Any]) -> str:
        t = s["totals"]
        if t["mttr_median_s"] is None:
            return "-"
        return f"{t['mttr_median_s']:.1f} s / {t['mttr_p90_s']:.1f} s"

    both("as expected", lambda s: f"{s['totals']['as_expected']}/{s['totals']['injected']}")
    both(
        "fixable auto-resolved",
        lambda s: f"{s['totals']['fixable_auto_resolved']}/{s['totals']['fixable']}",
    )
    both("escalated", count("escalated"))
    both("silent", count("silent"))
    both("fixes tried (steps)", count("steps"))
    both("needless actions", count("needless_actions"))
    both("outside policy", count("outside_policy"))
    both("MTTR p50 / p90", seconds)
    both("plans made by", lambda s: s["planner"] or "-")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_training(summary: dict[str, Any]) -> None:
    training, model = summary["training"], summary["model"]
    totals = training["totals"]
    print(
        f"training: {totals['injected']} faults in {training['rounds']} rounds (seed "
        f"{training['seed']}), {totals['as_expected']} as expected; planner: "
        f"{training['planner'] or '(no plans)'}"
    )
    corpus = model["corpus"]
    print(
        f"outcomes learnt from: {model['success']} successes, {model['failure']} failures, "
        f"written to {corpus['file']}"
    )
    if model["file"] is None:
        print(f"no model was trained: {model['why_none']}; nothing to compare")
        return
    accuracy = model["validation_accuracy"]
    shown = "-" if accuracy is None else f"{100 * accuracy:.1f} %"
    print(
        f"lab-trained model {model['version']} ({model['trained_outcomes']} outcomes, "
        f"validation accuracy {shown}) written to {model['file']}; a planner adopts it "
        f"with `initial_model: {model['file']}` in its config\n"
    )
    print(f"held out: seed {summary['seed']}, {summary['rounds']} rounds of every fault")
    print(comparison(summary))
