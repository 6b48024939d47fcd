"""The lab's latest report for the Automation page: read from the file the
``lab_report`` option names, each time it is asked for; no file, an invalid one, or
no option at all are answered with what is the matter. And whether the planner's
current model learned in the lab."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import ObjectMeta

from medbay.gateway.lab_report import MAX_REPORT_BYTES, read_lab_report


def report(**changes: Any) -> dict[str, Any]:
    """A report as ``medbay lab`` writes it, with keys the gateway does not show."""
    fault = {
        "expected": "auto_resolved",
        "injected": 3,
        "detected": 3,
        "auto_resolved": 3,
        "escalated": 0,
        "silent": 0,
        "needless_actions": 0,
        "outside_policy": 0,
        "mttr_median_s": 9.1,
        "mttr_p90_s": 12.0,
        "examples": ["kept in the file, not shown"],
    }
    return {
        "schema": "medbay.lab/1",
        "started_at": "2026-11-29T10:00:00Z",
        "finished_at": "2026-11-29T10:40:00+00:00",
        "commit": "41d8f32",
        "seed": 7,
        "rounds": 3,
        "quiet_seconds": 120,
        "planner": "rules-v1",
        "lab_trained": False,
        "totals": {
            "injected": 6,
            "detected": 6,
            "auto_resolved": 3,
            "escalated": 3,
            "silent": 0,
            "needless_actions": 0,
            "outside_policy": 0,
            "mttr_median_s": 9.1,
            "mttr_p90_s": 12.0,
            "quiet_issues": 0,
            "quiet_plans": 0,
            "quiet_actions": 0,
        },
        "faults": {
            "service_killed": fault,
            "disk_filled": {
                **fault,
                "expected": "escalated",
                "auto_resolved": 0,
                "escalated": 3,
                "mttr_median_s": None,
                "mttr_p90_s": None,
            },
        },
        "host": "lab",
        **changes,
    }


def train_report() -> dict[str, Any]:
    """A report as ``medbay lab --train`` writes it: the trained model's run on held-out
    faults, with the model, its training run and the rule table's run beside it."""

    def figures(**changes: Any) -> dict[str, Any]:
        counts = {
            "injected": 4,
            "detected": 4,
            "auto_resolved": 4,
            "escalated": 0,
            "silent": 0,
            "as_expected": 4,
            "needless_actions": 0,
            "outside_policy": 0,
            "mttr_median_s": 2.0,
            "mttr_p90_s": 4.9,
            "steps": 4,
        }
        return {**counts, **changes}

    def totals(**changes: Any) -> dict[str, Any]:
        quiet = {"quiet_seconds": 35.4, "quiet_issues": 0, "quiet_plans": 0, "quiet_actions": 0}
        return figures(**{"fixable": 4, "fixable_auto_resolved": 4, **quiet, **changes})

    def run(planner: str, **totals_changes: Any) -> dict[str, Any]:
        fault = {"expected": "auto_resolved", **figures(injected=1, detected=1, as_expected=1)}
        episode = {"kind": "log_flood", "expected": "auto_resolved", "mttr_s": 1.3, "steps": 1}
        return {
            **report(seed=1, rounds=1, quiet_seconds=35.4, planner=planner, lab_trained=True),
            "totals": totals(**totals_changes),
            "faults": {"log_flood": {**fault, "steps": 1}, "disk_filling": {**fault, "steps": 2}},
            "episodes": [episode],
            "quiet": {"issues": [], "actions": []},
        }

    version = "rf-20261130T075010Z-20-1248f9"
    rules = run("rules-v1", auto_resolved=3, escalated=1, as_expected=3, steps=5)
    rules["totals"].update(fixable_auto_resolved=3, mttr_median_s=2.2, mttr_p90_s=3.6)
    return {
        **run(f"{version}, rules-v1"),
        "model": {
            "file": "/data/lab/model.zip",
            "version": version,
            "trained_on": "lab",
            "validation_accuracy": 0.6,
            "trained_outcomes": 20,
            "success": 20,
            "failure": 6,
            "corpus": {"file": "/data/lab/outcomes.json", "outcomes": 26},
        },
        "training": {
            "seed": 1001,
            "rounds": 5,
            "planner": f"{version}, rules-v1",
            "totals": totals(
                injected=20,
                detected=20,
                auto_resolved=18,
                escalated=2,
                as_expected=18,
                steps=24,
                fixable=20,
                fixable_auto_resolved=18,
            ),
        },
        "rule_table": rules,
    }


def test_a_valid_report_is_read_with_its_faults_and_totals(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(report()))
    found = read_lab_report(path)
    assert found.state == "ok" and found.problem is None and found.report is not None
    assert found.report.commit == "41d8f32" and found.report.finished_at.hour == 10
    assert found.report.totals.auto_resolved == 3 and found.report.quiet_seconds == 120.0
    assert found.report.faults["disk_filled"].expected == "escalated"
    assert found.report.faults["disk_filled"].mttr_median_s is None
    served = found.model_dump(mode="json", by_alias=True)["report"]
    assert served["schema"] == "medbay.lab/1" and "host" not in served
    assert "examples" not in served["faults"]["service_killed"]
    # a plain run's report, from before fixes tried were counted: none of --train's parts
    assert found.report.totals.steps is None and found.report.faults["disk_filled"].steps is None
    assert found.report.totals.as_expected is None and found.report.totals.fixable is None
    assert (served["model"], served["training"], served["rule_table"]) == (None, None, None)


def test_a_train_report_is_read_with_the_model_its_training_and_the_rule_table(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(train_report()))
    found = read_lab_report(path)
    assert found.state == "ok" and found.report is not None, found.problem
    lab = found.report
    assert lab.totals.steps == 4 and lab.faults["disk_filling"].steps == 2
    totals = lab.totals
    assert (totals.as_expected, totals.fixable, totals.fixable_auto_resolved) == (4, 4, 4)
    assert lab.model is not None and lab.model.version == "rf-20261130T075010Z-20-1248f9"
    assert lab.model.file == "/data/lab/model.zip" and lab.model.why_none is None
    assert (lab.model.success, lab.model.failure, lab.model.corpus.outcomes) == (20, 6, 26)
    assert lab.training is not None and (lab.training.rounds, lab.training.seed) == (5, 1001)
    assert lab.training.totals.steps == 24
    assert lab.rule_table is not None and lab.rule_table.planner == "rules-v1"
    assert (lab.rule_table.totals.as_expected, lab.rule_table.totals.steps) == (3, 5)
    served = found.model_dump(mode="json", by_alias=True)["report"]
    assert served["rule_table"]["schema"] == "medbay.lab/1"
    assert "model" not in served["rule_table"]  # a run, not a report of its own
    assert "episodes" not in served and "quiet_seconds" not in served["totals"]


def test_a_train_report_without_a_model_says_why(tmp_path):
    why = "the planner trains once it has 20 outcomes with successes and failures both"
    corpus = {"file": "/data/lab/outcomes.json", "outcomes": 3}
    model = {"file": None, "why_none": why, "success": 3, "failure": 0, "corpus": corpus}
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({**train_report(), "model": model, "rule_table": None}))
    found = read_lab_report(path)
    assert found.state == "ok" and found.report is not None, found.problem
    assert found.report.model is not None and found.report.rule_table is None
    assert (found.report.model.file, found.report.model.version) == (None, None)
    assert found.report.model.why_none == why


def test_no_option_and_no_file_are_not_errors(tmp_path):
    assert read_lab_report(None).state == "unconfigured"
    missing = read_lab_report(tmp_path / "lab" / "latest.json")
    assert missing.state == "missing" and missing.problem is None and missing.report is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not a lab report: Invalid JSON"),
        ("[]", "is not a lab report: Input should be an object"),
        (json.dumps(report(schema="medbay.lab/2")), "schema: Input should be 'medbay.lab/1'"),
        (json.dumps(report(totals={"injected": 1})), "totals.detected: Field required"),
        (json.dumps(report(seed="7")), "seed: Input should be a valid integer"),
        (
            json.dumps(
                report(faults={"x": {**report()["faults"]["service_killed"], "silent": -1}})
            ),
            "faults.x.silent: Input should be greater than or equal to 0",
        ),
        (
            json.dumps(report()).replace('"mttr_p90_s": 12.0', '"mttr_p90_s": NaN', 1),
            "Input should be a finite number",
        ),
        (
            json.dumps(report(totals={**report()["totals"], "steps": -1})),
            "totals.steps: Input should be greater than or equal to 0",
        ),
        (
            json.dumps({**train_report(), "model": {**train_report()["model"], "success": "20"}}),
            "model.success: Input should be a valid integer",
        ),
        (
            json.dumps({**train_report(), "rule_table": report(faults=[])}),
            "rule_table.faults: Input should be an object",
        ),
        (" " * (MAX_REPORT_BYTES + 1), "is over 1024 KiB: not a lab report"),
    ],
)
def test_an_invalid_file_is_answered_with_what_is_wrong(tmp_path, content, problem):
    path = tmp_path / "latest.json"
    path.write_text(content)
    found = read_lab_report(path)
    assert found.state == "invalid" and found.report is None
    assert found.problem is not None and problem in found.problem, found.problem
    assert str(path) in found.problem


def test_a_file_that_cannot_be_read_is_answered_too(tmp_path):
    found = read_lab_report(tmp_path)  # a directory
    assert found.state == "invalid" and found.problem is not None
    assert found.problem.startswith(f"cannot read {tmp_path}: ")


async def test_the_api_reads_the_file_when_asked(start_gateway, tmp_path: Path):
    path = tmp_path / "lab" / "latest.json"
    gateway = start_gateway(f"lab_report: {path}\n")

    assert (await gateway.get("/api/lab")).json() == {
        "state": "missing",
        "problem": None,
        "report": None,
    }
    path.parent.mkdir()
    path.write_text(json.dumps(report()))  # a lab run ends: shown without a restart
    body = (await gateway.get("/api/lab")).json()  # as a viewer
    assert body["state"] == "ok" and body["report"]["totals"]["injected"] == 6
    assert set(body["report"]["faults"]) == {"service_killed", "disk_filled"}
    path.write_text("{}")
    invalid = await gateway.get("/api/lab")
    assert invalid.status_code == 200 and invalid.json()["state"] == "invalid"
    assert "started_at: Field required" in invalid.json()["problem"]
    assert (await gateway.get("/api/lab", headers={})).status_code == 401


async def test_the_api_serves_a_train_report(start_gateway, tmp_path: Path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(train_report()))
    gateway = start_gateway(f"lab_report: {path}\n")
    body = (await gateway.get("/api/lab")).json()
    assert body["state"] == "ok", body["problem"]
    served = body["report"]
    assert served["totals"]["steps"] == 4 and served["faults"]["disk_filling"]["steps"] == 2
    assert served["model"] == {
        "file": "/data/lab/model.zip",
        "version": "rf-20261130T075010Z-20-1248f9",
        "trained_on": "lab",
        "validation_accuracy": 0.6,
        "trained_outcomes": 20,
        "success": 20,
        "failure": 6,
        "why_none": None,
        "corpus": {"file": "/data/lab/outcomes.json", "outcomes": 26},
    }
    assert served["training"]["totals"]["fixable"] == 20 and served["training"]["seed"] == 1001
    rules = served["rule_table"]
    assert set(rules) == set(served) - {"model", "training", "rule_table"}
    assert rules["totals"]["fixable_auto_resolved"] == 3 and rules["totals"]["steps"] == 5


async def test_without_the_option_the_api_says_so(gateway):
    assert (await gateway.get("/api/lab")).json()["state"] == "unconfigured"


async def test_the_model_says_whether_it_learned_in_the_lab(gateway, bus):
    assert (await gateway.get("/api/model")).json()["trained_on"] is None  # no model
    kv = await bus.js.create_key_value(bucket="medbay_planner")
    objects = await bus.js.create_object_store("medbay_models")
    descriptions: list[tuple[str, dict[str, Any], str]] = [
        ("model-lab", {"trained_on": "lab", "validation_accuracy": 0.9}, "lab"),
        ("model-old", {"validation_accuracy": 0.8}, "live"),  # from before lab training
    ]
    for version, description, trained_on in descriptions:
        meta = ObjectMeta(name=version, description=json.dumps(description))
        await objects.put(version, b"not a real model", meta=meta)
        await kv.put("current_model", version.encode())
        model = (await gateway.get("/api/model")).json()
        assert (model["version"], model["trained_on"]) == (version, trained_on)
