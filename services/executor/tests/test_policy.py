"""The safety rules alone: state and time are passed in, no NATS server is needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from medbay.common.records import TargetState
from medbay.executor.policy import FlapGuard, RateLimiter, RateWindow, Refusal, SafetyPolicy
from medbay.executor.safety_config import FlapConfig, RateLimitConfig, SafetyConfig

MONDAY_NOON = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def policy(**overrides: Any) -> SafetyPolicy:
    data: dict[str, Any] = {
        "allow": {
            "restart_service": ["web"],
            "kill_process": ["web"],
            "alert_human": ["oncall"],
        },
        "cooldown_seconds": 60,
    }
    return SafetyPolicy(SafetyConfig.model_validate({**data, **overrides}))


def refusal(
    p: SafetyPolicy, action: Any = "restart_service", target: str = "web", **kw: Any
) -> Refusal | None:
    state: TargetState | None = kw.pop("state", None)
    window: RateWindow = kw.pop("window", RateWindow())
    now: datetime = kw.pop("now", MONDAY_NOON)
    return p.refusal(action, target, kw.pop("host", "web-1"), now, state, window)


def test_an_unlisted_target_is_refused_by_the_allowlist() -> None:
    found = refusal(policy(), target="db")
    assert found is not None and found.rule == "allowlist"
    assert "safety.allow.restart_service" in found.reason
    assert refusal(policy()) is None


def test_cooldown_counts_from_the_last_run_of_that_action() -> None:
    p = policy()
    state = p.after_run(None, "restart_service", "web", MONDAY_NOON)
    soon = refusal(p, state=state, now=MONDAY_NOON + timedelta(seconds=30))
    assert soon is not None and soon.rule == "cooldown"
    assert refusal(p, state=state, now=MONDAY_NOON + timedelta(seconds=61)) is None
    # another action on the same target has its own cooldown
    assert refusal(p, "kill_process", state=state, now=MONDAY_NOON + timedelta(seconds=1)) is None


def test_maintenance_comes_before_the_breaker_and_cooldown() -> None:
    p = policy(maintenance=[{"start": "11:00", "end": "13:00", "hosts": ["web-*"]}])
    found = refusal(p)
    assert found is not None and found.rule == "maintenance"
    assert refusal(p, host="db-1") is None


def test_alerting_a_person_is_held_back_by_nothing_but_the_allowlist() -> None:
    p = policy(
        maintenance=[{"start": "11:00", "end": "13:00"}],
        rate_limit={"max_actions": 1, "per_seconds": 60},
    )
    full = RateWindow(taken=[MONDAY_NOON])
    assert refusal(p, "alert_human", "oncall", window=full) is None
    assert refusal(p, "alert_human", "web", window=full) is not None


def test_flap_guard_opens_the_breaker_at_the_limit_within_the_window() -> None:
    guard = FlapGuard(FlapConfig(max_actions=3, window_seconds=600))
    state = TargetState(target="web")
    for minutes in (0, 4, 8):
        assert state.breaker is None
        state = guard.after(state, "restart_service", MONDAY_NOON + timedelta(minutes=minutes))
    assert state.breaker is not None
    assert "3 actions in 10 min: 3 restart_service" in state.breaker.reason
    again = guard.after(state, "restart_service", MONDAY_NOON + timedelta(minutes=9))
    assert again.breaker == state.breaker  # an open breaker stays as it opened


def test_flap_guard_forgets_old_actions_and_ignores_uncounted_ones() -> None:
    guard = FlapGuard(FlapConfig(max_actions=2, window_seconds=60))
    state = guard.after(TargetState(target="web"), "restart_service", MONDAY_NOON)
    state = guard.after(state, "restart_service", MONDAY_NOON + timedelta(seconds=61))
    assert state.breaker is None and len(state.recent) == 1
    assert guard.after(state, "clear_cache", MONDAY_NOON + timedelta(seconds=62)) == state


def test_an_open_breaker_refuses_until_reset() -> None:
    p = policy(flap={"max_actions": 1, "window_seconds": 60}, cooldown_seconds=0)
    state = p.after_run(None, "kill_process", "web", MONDAY_NOON)
    found = refusal(p, state=state, now=MONDAY_NOON + timedelta(hours=5))
    assert found is not None and found.rule == "breaker"
    assert "medbay breaker reset web" in found.reason


def test_rate_limiter_counts_one_sliding_window() -> None:
    limiter = RateLimiter(RateLimitConfig(max_actions=2, per_seconds=60))
    window = RateWindow()
    for seconds in (0, 10):
        assert limiter.refusal(window, MONDAY_NOON + timedelta(seconds=seconds)) is None
        window = limiter.take(window, MONDAY_NOON + timedelta(seconds=seconds))
    full = limiter.refusal(window, MONDAY_NOON + timedelta(seconds=20))
    assert full is not None and full.rule == "rate_limit"
    assert limiter.refusal(window, MONDAY_NOON + timedelta(seconds=61)) is None
    later = limiter.take(window, MONDAY_NOON + timedelta(seconds=61))
    assert later.taken == [MONDAY_NOON + timedelta(seconds=10), MONDAY_NOON + timedelta(seconds=61)]
