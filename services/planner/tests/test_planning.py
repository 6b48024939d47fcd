"""Features, the rule table, targets from the executor's catalog, approval and which
issue events get a plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medbay.common.events import ActionRequested, IssueResolved
from medbay.planner.config import ConfigError, PlannerConfig, load_config
from medbay.planner.features import ACTION_NAMES, ISSUE_FEATURES, KINDS, issue_features
from medbay.planner.planning import NotPlanned, Planner, approval_reasons, plan_id_for, wants_plan
from medbay.planner.rates import SuccessRates
from medbay.planner.rules import FALLBACK_CONFIDENCE, RULES, RULES_VERSION
from services.planner.tests.conftest import KIND_ISSUES, make_catalog

FULL = make_catalog(
    {
        "cache": ["clear_cache"],
        "api": (["restart_service", "scale_up", "scale_down"], ["web", "worker"]),
        "logs": (["rotate_logs", "cleanup_disk"], ["/var/log"]),
        "postgres": ["optimize_query"],
        "workers": (["kill_process"], ["worker"]),
        "h1": ["reboot"],
        "oncall": ["alert_human"],
    }
)
"""A target for every step of the rule table, with the config of ``rules_planner``."""
ONCALL = make_catalog({"oncall": ["alert_human"]})


def rules_planner(**config: object) -> Planner:
    defaults = {"action_targets": {"clear_cache": "cache", "restart_service": "api"}}
    return Planner(PlannerConfig.model_validate(defaults | config), SuccessRates())


def any_issue(issue, kind_issue, kind: str, **changes):
    return kind_issue(kind, **changes) if kind in KIND_ISSUES else issue(kind, **changes)


# --- features ----------------------------------------------------------------------


def test_issue_features(issue):
    f = issue_features(issue("memory", value=93.5, severity="critical"))
    assert f["value"] == 93.5 and f["threshold"] == 85.0 and f["has_threshold"] == 1.0
    assert f["severity_ratio"] == pytest.approx(93.5 / 85.0)
    assert f["critical"] == 1.0
    assert (f["hour"], f["weekday"]) == (13.0, 2.0)  # last_seen: Wednesday 13:30 UTC
    assert [k for k in KINDS if f[f"kind:{k}"] == 1.0] == ["memory"]
    assert set(f) == set(ISSUE_FEATURES)


def test_every_issue_kind_is_a_feature(kind_issue):
    assert len(KINDS) == 14
    f = issue_features(kind_issue("runaway_process"))
    assert [k for k in KINDS if f[f"kind:{k}"] == 1.0] == ["runaway_process"]


def test_features_without_a_usable_threshold(issue):
    anomaly = issue_features(issue("anomaly", value=7.0))
    assert anomaly["threshold"] == 0.0 and anomaly["has_threshold"] == 0.0
    assert anomaly["severity_ratio"] == 1.0
    zero = issue_features(issue("memory", value=3.0, threshold=0.0))
    assert zero["has_threshold"] == 1.0 and zero["severity_ratio"] == 1.0


def test_plan_features_hold_rate_tries_and_target_of_every_action(issue, planned):
    planner = rules_planner()
    planner.rates.record("memory", "clear_cache", "cache", True, "warning")
    features = planned(planner.plan(issue("memory"), FULL)).features
    assert len(ACTION_NAMES) == 10
    for action in ACTION_NAMES:
        assert {f"rate:{action}", f"tries:{action}", f"targeted:{action}"} <= set(features)
    assert features["tries:clear_cache"] == 1.0 and features["tries:reboot"] == 0.0
    assert features["rate:clear_cache"] > features["rate:reboot"] == 0.5
    # which actions have a permitted target for a memory issue on h1
    assert [a for a in ACTION_NAMES if features[f"targeted:{a}"]] == [
        "restart_service",
        "clear_cache",
        "alert_human",
    ]


# --- the rule table ------------------------------------------------------------------

EXPECTED_RULES = {
    "service_down": ["restart_service"],
    "runaway_process": ["restart_service", "kill_process"],
    "memory": ["clear_cache", "restart_service"],
    "disk": ["rotate_logs", "cleanup_disk"],
    "db_latency": ["optimize_query"],
    "cpu": ["scale_up"],
    "low_utilisation": ["scale_down"],
    "host_silent": ["reboot"],
    "error_rate": ["restart_service"],
    "latency": ["scale_up"],
    "no_traffic": ["alert_human"],
    "network_errors": ["alert_human"],
    "anomaly": ["alert_human"],
    "other": ["alert_human"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_rule_table(issue, kind_issue, planned, kind):
    targets = {"clear_cache": "cache", "restart_service": "api", "scale_up": "api"}
    planner = rules_planner(action_targets=targets)
    plan = planned(planner.plan(any_issue(issue, kind_issue, kind), FULL))
    assert [s.action for s in plan.steps] == EXPECTED_RULES[kind]
    assert plan.model_version == RULES_VERSION
    assert plan.confidence == RULES[kind].confidence
    assert set(RULES) == set(KINDS)


def test_every_action_has_a_rule():
    assert {a for rule in RULES.values() for a in rule.actions} == set(ACTION_NAMES)


def test_multi_step_plan_sums_durations_and_takes_the_highest_risk(kind_issue, planned):
    targets = {
        "worker": (["restart_service"], ["worker"]),
        "workers": (["kill_process"], ["worker"]),
    }
    plan = planned(rules_planner().plan(kind_issue("runaway_process"), make_catalog(targets)))
    assert [(s.action, s.risk, s.estimated_seconds) for s in plan.steps] == [
        ("restart_service", "low", 30),
        ("kill_process", "high", 5),
    ]
    assert plan.estimated_seconds == 35 and plan.risk == "high"


def test_plan_carries_the_issue_and_a_deterministic_id(issue, planned):
    event = issue("disk", host="db-1", severity="critical", value=97.0)
    plan = planned(rules_planner().plan(event, FULL))
    assert plan.plan_id == plan.event_id == plan_id_for(event.event_id)
    assert planned(rules_planner().plan(event, FULL)).plan_id == plan.plan_id
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


def test_a_configured_target_is_used_only_if_the_executor_permits_the_action(issue, planned):
    planner = rules_planner(
        action_targets={"clear_cache": "redis", "restart_service": "app"},
        host_targets={"cache-*": {"restart_service": "redis"}, "cache-9": {"clear_cache": "x"}},
    )
    catalog = make_catalog({"redis": ["clear_cache", "restart_service"], "app": ["scale_up"]})
    app = planned(planner.plan(issue("memory", host="app-1"), catalog))
    assert [(s.action, s.target) for s in app.steps] == [("clear_cache", "redis")]
    assert (
        "restart_service dropped: the executor does not permit it on app, and no executor "
        "target named or covering memory_percent permits it"
    ) in app.reason
    cache = planned(planner.plan(issue("memory", host="cache-9"), catalog))
    assert [s.target for s in cache.steps] == ["redis", "redis"]  # the first pattern wins


def test_a_configured_target_never_stands_for_another_named_thing(issue, planned):
    planner = rules_planner(action_targets={}, host_targets={"app-*": {"restart_service": "api"}})
    catalog = make_catalog({"api": ["restart_service"], "oncall": ["alert_human"]})
    # the heaviest service on the host, for an issue about the host's memory...
    memory = planned(planner.plan(issue("memory", host="app-1"), catalog))
    assert [(s.action, s.target) for s in memory.steps] == [("restart_service", "api")]
    # ...but web being down is no reason to restart api
    down = planner.plan(issue("service_down", host="app-1"), catalog)
    assert down == NotPlanned(
        "no_target",
        "restart_service dropped: the configured api is not web and does not cover it, and "
        "no executor target named or covering web permits it",
    )
    with_web = make_catalog({"api": ["restart_service"], "web": ["restart_service"]})
    web = planned(planner.plan(issue("service_down", host="app-1"), with_web))
    assert [(s.action, s.target) for s in web.steps] == [("restart_service", "web")]
    covering = make_catalog({"api": (["restart_service"], ["web"])})
    api = planned(planner.plan(issue("service_down", host="app-1"), covering))
    assert [(s.action, s.target) for s in api.steps] == [("restart_service", "api")]


def test_the_catalog_resolves_the_issues_resource(issue, planned):
    catalog = make_catalog({"app-logs": (["rotate_logs", "cleanup_disk"], ["/var/log"])})
    disk = planned(rules_planner().plan(issue("disk"), catalog))
    assert [(s.action, s.target) for s in disk.steps] == [
        ("rotate_logs", "app-logs"),
        ("cleanup_disk", "app-logs"),
    ]
    down = planned(
        rules_planner().plan(issue("service_down"), make_catalog({"web": ["restart_service"]}))
    )
    assert [(s.action, s.target) for s in down.steps] == [("restart_service", "web")]


def test_rule_plans_explore_another_safe_fix_only_when_configured(issue, planned):
    catalog = make_catalog({"app-logs": (["rotate_logs", "cleanup_disk"], ["/var/log"])})
    exploring = rules_planner(rule_explore_rate=1.0)
    plan = planned(exploring.plan(issue("disk"), catalog, frozenset()))
    assert [s.action for s in plan.steps] == ["cleanup_disk", "rotate_logs"]
    assert plan.reason.startswith("rules-v1: exploring cleanup_disk before rotate_logs; ")
    assert plan.model_version == RULES_VERSION and not plan.requires_approval
    rule_order = ["rotate_logs", "cleanup_disk"]
    for planner, breakers in [
        (rules_planner(), frozenset()),  # off by default
        (exploring, None),  # breakers not known
        (exploring, frozenset({"app-logs"})),  # the target's breaker is open
    ]:
        plan = planned(planner.plan(issue("disk"), catalog, breakers))
        assert [s.action for s in plan.steps] == rule_order and "exploring" not in plan.reason
    anomaly = planned(exploring.plan(issue("anomaly"), FULL, frozenset()))
    assert [s.action for s in anomaly.steps] == ["alert_human"]  # never a fix before a person
    assert rules_planner().explores() is False and exploring.explores() is True


def test_a_metric_is_never_a_target_a_person_is_told_instead(issue, planned):
    plan = planned(rules_planner().plan(issue("cpu", severity="critical", value=97.0), ONCALL))
    [step] = plan.steps
    assert (step.action, step.target) == ("alert_human", "oncall")
    assert step.params["message"] == (
        "critical cpu on h1: cpu_percent 97 (threshold 80); Medbay may not scale_up here"
    )
    assert plan.reason == (
        "rules-v1: high CPU: scale up; scale_up dropped: no executor target named or "
        "covering cpu_percent permits it; alerting oncall instead"
    )
    assert plan.confidence == FALLBACK_CONFIDENCE and not plan.requires_approval


def test_no_plan_for_a_service_that_is_not_a_target(issue):
    made = rules_planner(action_targets={}).plan(issue("service_down"), ONCALL)
    assert made == NotPlanned(
        "no_target",
        "restart_service dropped: no executor target named or covering web permits it",
    )


def test_no_plan_when_not_even_a_person_can_be_told(issue):
    catalog = make_catalog({"pager": ["restart_service"]})
    memory = rules_planner().plan(issue("memory"), catalog)
    assert isinstance(memory, NotPlanned) and memory.reason == "no_target"
    assert memory.why.endswith(
        "alert_human (the fallback) dropped: oncall is not an executor target, and no "
        "executor target named or covering memory_percent permits it"
    )
    assert isinstance(rules_planner().plan(issue("network_errors"), catalog), NotPlanned)


def test_alerts_go_to_oncall_unless_the_config_names_another(issue, planned):
    catalog = make_catalog({"pager": ["alert_human"], "oncall": ["alert_human"]})
    assert planned(rules_planner().plan(issue("anomaly"), catalog)).steps[0].target == "oncall"
    paged = rules_planner(action_targets={"alert_human": "pager"})
    assert planned(paged.plan(issue("anomaly"), catalog)).steps[0].target == "pager"


def test_a_runaway_process_is_restarted_then_killed_by_name(kind_issue, planned):
    issue = kind_issue("runaway_process")
    both = make_catalog(
        {
            "worker": (["restart_service"], ["worker"]),
            "strays": (["kill_process"], ["worker", "crawler"]),
            "oncall": ["alert_human"],
        }
    )
    plan = planned(rules_planner(action_targets={}).plan(issue, both))
    assert [(s.action, s.target, s.params) for s in plan.steps] == [
        ("restart_service", "worker", {}),
        ("kill_process", "strays", {"name": "worker"}),
    ]
    assert plan.requires_approval and "high-risk kill_process" in plan.reason
    kill_only = make_catalog({"strays": (["kill_process"], ["worker"])})
    only = planned(rules_planner().plan(issue, kill_only))
    assert [s.action for s in only.steps] == ["kill_process"] and only.requires_approval
    alert = planned(rules_planner().plan(issue, ONCALL))
    assert [s.action for s in alert.steps] == ["alert_human"]
    assert "worker" in str(alert.steps[0].params["message"])


def test_a_silent_host_is_rebooted_only_with_approval(kind_issue, planned):
    issue = kind_issue("host_silent", host="db-7")
    catalog = make_catalog({"power": (["reboot"], ["db-7"]), "oncall": ["alert_human"]})
    plan = planned(rules_planner().plan(issue, catalog))
    assert [(s.action, s.target) for s in plan.steps] == [("reboot", "power")]
    assert plan.requires_approval
    alert = planned(rules_planner().plan(issue, ONCALL))
    assert [s.action for s in alert.steps] == ["alert_human"] and not alert.requires_approval


def test_an_idle_service_is_scaled_down_or_left_alone(kind_issue, planned):
    issue = kind_issue("low_utilisation")
    plan = planned(rules_planner().plan(issue, make_catalog({"api": ["scale_down"]})))
    assert [(s.action, s.target) for s in plan.steps] == [("scale_down", "api")]
    assert isinstance(rules_planner().plan(issue, ONCALL), NotPlanned)


# --- approval --------------------------------------------------------------------------


def test_approval_for_high_risk_low_confidence_and_policy(issue, planned):
    planner = rules_planner(
        action_targets={"clear_cache": "cache", "restart_service": "api", "scale_up": "api"},
        min_confidence=0.65,
        require_approval={"kinds": ["disk"], "actions": ["scale_up"], "hosts": ["db-*"]},
    )

    def plan(kind: str, host: str):
        return planned(planner.plan(issue(kind, host=host), FULL))

    assert not plan("memory", "app-1").requires_approval  # 0.70
    assert plan("db_latency", "app-1").requires_approval  # 0.60
    assert plan("disk", "app-1").requires_approval
    assert plan("cpu", "app-1").requires_approval  # scale_up
    held = plan("service_down", "db-2")
    assert held.requires_approval and "hosts db-*" in held.reason
    # alerting a person changes nothing: low confidence alone does not hold it
    assert not plan("anomaly", "app-1").requires_approval


def test_high_risk_steps_need_approval(issue, planned):
    planner = rules_planner()
    plan = planned(planner.plan(issue("service_down"), FULL))
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
    assert config.named_target("restart_service", "cache-2") == "redis"
    assert config.named_target("alert_human", "cache-2") == "oncall"
    assert config.named_target("rotate_logs", "cache-2") is None


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


def test_exploring_and_the_initial_model_are_checked(tmp_path: Path):
    path = tmp_path / "planner.yaml"
    path.write_text(f"explore_rate: 0.5\ninitial_model: {tmp_path / 'missing.zip'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "explore_rate: Input should be less than or equal to 0.2" in text
    assert "initial_model: Path does not point to a file" in text
    assert PlannerConfig().explore_rate == 0.05 and PlannerConfig().trained_on == "live"


def test_an_initial_model_that_is_refused_exits_with_status_2(tmp_path: Path, pickle_bomb):
    marker = tmp_path / "pickle-ran"
    model = tmp_path / "model.zip"
    model.write_bytes(pickle_bomb(marker))
    path = tmp_path / "planner.yaml"
    path.write_text(f"initial_model: {model}\n")
    out = subprocess.run(
        [sys.executable, "-m", "medbay.planner.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"bad config: initial_model: model file {model} refused: unreadable" in out.stderr
    assert not marker.exists()
