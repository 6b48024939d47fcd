"""Features, the rule table, targets, approval and which issue events get a plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medbay.common.events import ActionRequested, IssueResolved
from medbay.planner.config import ConfigError, PlannerConfig, load_config
from medbay.planner.features import ACTION_NAMES, ISSUE_FEATURES, KINDS, issue_features
from medbay.planner.planning import Planner, approval_reasons, plan_id_for, wants_plan
from medbay.planner.rates import SuccessRates
from medbay.planner.rules import RULES, RULES_VERSION


def rules_planner(**config: object) -> Planner:
    return Planner(PlannerConfig.model_validate(config), SuccessRates())


# --- features ----------------------------------------------------------------------


def test_issue_features(issue):
    f = issue_features(issue("memory", value=93.5, severity="critical"))
    assert f["value"] == 93.5 and f["threshold"] == 85.0 and f["has_threshold"] == 1.0
    assert f["severity_ratio"] == pytest.approx(93.5 / 85.0)
    assert f["critical"] == 1.0
    assert (f["hour"], f["weekday"]) == (13.0, 2.0)  # last_seen: Wednesday 13:30 UTC
    assert [k for k in KINDS if f[f"kind:{k}"] == 1.0] == ["memory"]
    assert set(f) == set(ISSUE_FEATURES)


def test_features_without_a_usable_threshold(issue):
    anomaly = issue_features(issue("anomaly", value=7.0))
    assert anomaly["threshold"] == 0.0 and anomaly["has_threshold"] == 0.0
    assert anomaly["severity_ratio"] == 1.0
    zero = issue_features(issue("memory", value=3.0, threshold=0.0))
    assert zero["has_threshold"] == 1.0 and zero["severity_ratio"] == 1.0


def test_plan_features_hold_rate_and_tries_of_every_action(issue):
    planner = rules_planner()
    planner.rates.record("memory", "clear_cache", "memory_percent", True, "warning")
    features = planner.plan(issue("memory")).features
    assert all(f"rate:{a}" in features and f"tries:{a}" in features for a in ACTION_NAMES)
    assert features["tries:clear_cache"] == 1.0 and features["tries:reboot"] == 0.0
    assert features["rate:clear_cache"] > features["rate:reboot"] == 0.5


# --- the rule table ------------------------------------------------------------------

EXPECTED_RULES = {
    "memory": ["clear_cache", "restart_service"],
    "disk": ["rotate_logs", "cleanup_disk"],
    "service_down": ["restart_service"],
    "db_latency": ["optimize_query"],
    "cpu": ["restart_service", "scale_up"],
    "network_errors": ["alert_human"],
    "anomaly": ["alert_human"],
    "other": ["alert_human"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_rule_table(issue, kind):
    plan = rules_planner().plan(issue(kind))
    assert [s.action for s in plan.steps] == EXPECTED_RULES[kind]
    assert plan.model_version == RULES_VERSION
    assert plan.confidence == RULES[kind].confidence


def test_multi_step_plan_sums_durations_and_takes_the_highest_risk(issue):
    plan = rules_planner().plan(issue("cpu"))
    assert [(s.action, s.risk, s.estimated_seconds) for s in plan.steps] == [
        ("restart_service", "low", 30),
        ("scale_up", "medium", 120),
    ]
    assert plan.estimated_seconds == 150 and plan.risk == "medium"
    assert not plan.requires_approval


def test_plan_carries_the_issue_and_a_deterministic_id(issue):
    event = issue("disk", host="db-1", severity="critical", value=97.0)
    plan = rules_planner().plan(event)
    assert plan.plan_id == plan.event_id == plan_id_for(event.event_id)
    assert rules_planner().plan(event).plan_id == plan.plan_id
    assert (plan.issue_event_id, plan.issue_fingerprint) == (event.event_id, event.fingerprint)
    assert (plan.host, plan.issue_kind, plan.metric, plan.labels) == (
        "db-1",
        "disk",
        "disk_percent",
        {"mount": "/var/log"},
    )
    assert (plan.value, plan.threshold, plan.severity) == (97.0, 90.0, "critical")
    assert plan.reason.startswith("rules-v1: disk filling up")


# --- targets ---------------------------------------------------------------------------


def test_targets_default_to_the_resource_with_overrides_per_action_and_host(issue):
    planner = rules_planner(
        action_targets={"clear_cache": "redis", "restart_service": "app"},
        host_targets={"cache-*": {"restart_service": "redis"}, "cache-9": {"clear_cache": "x"}},
    )
    app = planner.plan(issue("memory", host="app-1"))
    assert [(s.action, s.target) for s in app.steps] == [
        ("clear_cache", "redis"),
        ("restart_service", "app"),
    ]
    cache = planner.plan(issue("memory", host="cache-9"))  # first matching pattern wins
    assert [s.target for s in cache.steps] == ["redis", "redis"]
    disk = planner.plan(issue("disk"))
    assert [s.target for s in disk.steps] == ["/var/log", "/var/log"]


# --- approval --------------------------------------------------------------------------


def test_approval_for_high_risk_low_confidence_and_policy(issue):
    config = PlannerConfig.model_validate(
        {
            "min_confidence": 0.65,
            "require_approval": {"kinds": ["disk"], "actions": ["scale_up"], "hosts": ["db-*"]},
        }
    )
    planner = Planner(config, SuccessRates())
    assert not planner.plan(issue("memory", host="app-1")).requires_approval  # 0.70
    assert planner.plan(issue("db_latency", host="app-1")).requires_approval  # 0.60
    assert planner.plan(issue("disk", host="app-1")).requires_approval
    assert planner.plan(issue("cpu", host="app-1")).requires_approval  # scale_up
    held = planner.plan(issue("service_down", host="db-2"))
    assert held.requires_approval and "hosts db-*" in held.reason
    # alerting a person changes nothing: low confidence alone does not hold it
    assert not planner.plan(issue("anomaly", host="app-1")).requires_approval


def test_high_risk_steps_need_approval(issue):
    planner = rules_planner()
    plan = planner.plan(issue("service_down"))
    reboot = plan.steps[0].model_copy(update={"action": "reboot", "risk": "high"})
    why = approval_reasons(planner.config, "service_down", "h1", [reboot], 0.99)
    assert why == ["high-risk reboot"]


# --- requests by hand -------------------------------------------------------------------


def test_a_request_becomes_a_one_step_plan_under_the_same_rules():
    planner = rules_planner(require_approval={"actions": ["scale_up"]})
    request = ActionRequested(
        host="app-1",
        action="kill_process",
        target="api",
        params={"signal": "KILL"},
        requested_by="ada",
        channel="gateway",
        reason="stuck worker",
    )
    plan = planner.plan_request(request)
    assert plan.plan_id == plan_id_for(request.event_id) == planner.plan_request(request).plan_id
    assert [(s.action, s.target, s.params) for s in plan.steps] == [
        ("kill_process", "api", {"signal": "KILL"})
    ]
    assert (plan.model_version, plan.issue_kind, plan.confidence) == ("manual", "other", 1.0)
    assert plan.requires_approval and plan.risk == "high"
    assert plan.reason.startswith("requested by ada via gateway: stuck worker")
    restart = request.model_copy(update={"action": "restart_service", "params": {}})
    assert not planner.plan_request(restart).requires_approval
    scale = request.model_copy(update={"action": "scale_up", "params": {}})
    assert planner.plan_request(scale).requires_approval


# --- which events get a plan ----------------------------------------------------------


def test_opened_and_escalated_issues_get_plans(issue):
    assert wants_plan(issue("cpu"))
    assert wants_plan(issue("cpu", severity="critical", previous="warning"))
    assert not wants_plan(issue("cpu", severity="warning", previous="critical"))
    opened = issue("cpu")
    resolved = IssueResolved(**opened.model_dump(exclude={"type", "event_id"}))
    assert not wants_plan(resolved)


# --- config ----------------------------------------------------------------------------


def test_config_is_strict_and_names_the_field(tmp_path: Path):
    path = tmp_path / "planner.yaml"
    path.write_text("min_confidence: 2\naction_targets: {clear_cache: redis, fly: x}\nfoo: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "min_confidence" in text and "action_targets.fly" in text and "foo" in text
    path.write_text("require_approval: {kinds: [disk], actions: [reboot]}\nretrain_every: 20\n")
    config = load_config(path)
    assert config.retrain_every == 20 and config.require_approval.kinds == ["disk"]
    assert load_config(None) == PlannerConfig()


def test_the_example_config_loads():
    config = load_config(Path(__file__).parents[1] / "planner.example.yaml")
    assert config.target_for("restart_service", "cache-2", "memory_percent") == "redis"
    assert config.target_for("alert_human", "cache-2", "memory_percent") == "oncall"


def test_bad_config_exits_with_status_2(tmp_path: Path):
    path = tmp_path / "planner.yaml"
    path.write_text("forest: {trees: 0}\n")
    out = subprocess.run(
        [sys.executable, "-m", "medbay.planner.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "forest.trees" in out.stderr and "greater than or equal to 1" in out.stderr
