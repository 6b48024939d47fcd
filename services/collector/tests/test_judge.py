"""CheckJudge: start-up grace, the reasons a batch carries, and logging state changes only."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from medbay.collector.checks import CheckJudge, CheckResult, JudgedChecks
from medbay.collector.config import CollectorConfig, ServiceCheck
from medbay.collector.samples import MS, sample

START = 1000.0
LOGGER = "medbay.collector.checks"


def config(**fields: Any) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "services": [
                {"name": "api", "check": "tcp", "port": 8000},
                {"name": "db", "check": "tcp", "port": 5432, "startup_grace_seconds": 0},
            ],
            **fields,
        }
    )


def service(judge_config: CollectorConfig, name: str) -> ServiceCheck:
    return next(c for c in judge_config.services if c.name == name)


def up(value: JudgedChecks) -> dict[str, float]:
    return {
        s["labels"]["service"]: s["value"]
        for s in value.samples
        if s["name"] == "service_up" and "labels" in s
    }


def test_failures_within_the_grace_report_nothing_until_the_first_success() -> None:
    cfg = config(startup_grace_seconds=30)
    api = service(cfg, "api")
    judge = CheckJudge(cfg, started_at=START)
    refused = CheckResult(api, "connection refused to 127.0.0.1:8000")
    latency = sample("service_latency_ms", 3.0, MS, service="api", check="tcp")

    starting = judge.judge([refused], now=START + 1)
    assert (starting.samples, starting.errors) == ([], {})
    assert judge.judge([refused], now=START + 29.9).samples == []

    # once it has answered, a failure counts even within the grace
    answered = judge.judge([CheckResult(api, None, [latency])], now=START + 10)
    assert answered.samples == [
        sample("service_up", 1.0, service="api", check="tcp"),
        latency,
    ]
    assert answered.errors == {}
    down = judge.judge([refused], now=START + 11)
    assert up(down) == {"api": 0.0}
    assert down.errors == {"api": "connection refused to 127.0.0.1:8000"}


def test_after_the_grace_failures_count() -> None:
    cfg = config(startup_grace_seconds=30)
    judge = CheckJudge(cfg, started_at=START)
    refused = CheckResult(service(cfg, "api"), "connection refused to 127.0.0.1:8000")
    assert judge.judge([refused], now=START + 29).samples == []
    late = judge.judge([refused], now=START + 30)
    assert up(late) == {"api": 0.0}
    assert late.errors == {"api": "connection refused to 127.0.0.1:8000"}


def test_each_check_has_its_own_grace() -> None:
    cfg = config()  # the default grace is 60 s; db's is 0
    assert (cfg.startup_grace(service(cfg, "api")), cfg.startup_grace(service(cfg, "db"))) == (
        60,
        0,
    )
    judge = CheckJudge(cfg, started_at=START)
    results = [
        CheckResult(service(cfg, "api"), "no answer within 2 s"),
        CheckResult(service(cfg, "db"), "no answer within 2 s"),
    ]
    judged = judge.judge(results, now=START)
    assert up(judged) == {"db": 0.0}
    assert judged.errors == {"db": "no answer within 2 s"}


def test_state_changes_are_logged_not_every_failure(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(startup_grace_seconds=30)
    api = service(cfg, "api")
    judge = CheckJudge(cfg, started_at=START)
    refused = CheckResult(api, "connection refused to 127.0.0.1:8000")
    hung = CheckResult(api, "no answer within 2 s")
    ok = CheckResult(api, None)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    def logged() -> list[tuple[int, str]]:
        records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
        caplog.clear()
        return records

    for now in (1, 2, 3):
        judge.judge([refused], now=START + now)
    assert logged() == [
        (
            logging.INFO,
            "api (tcp check) not judged yet: connection refused to 127.0.0.1:8000; "
            "it has 30 s from the start to come up",
        )
    ]
    judge.judge([ok], now=START + 4)
    judge.judge([ok], now=START + 5)
    assert logged() == []  # up from the start is no change worth a line
    judge.judge([refused], now=START + 6)
    judge.judge([hung], now=START + 7)
    judge.judge([refused], now=START + 8)
    assert logged() == [
        (logging.WARNING, "api (tcp check) is down: connection refused to 127.0.0.1:8000")
    ]
    judge.judge([ok], now=START + 9)
    judge.judge([ok], now=START + 10)
    assert logged() == [(logging.INFO, "api (tcp check) is up again")]

    # down when first judged, after the grace: said once, with the reason
    late = CheckJudge(cfg, started_at=START)
    late.judge([hung], now=START + 31)
    late.judge([hung], now=START + 32)
    assert logged() == [(logging.WARNING, "api (tcp check) is down: no answer within 2 s")]
