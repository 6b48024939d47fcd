"""Safety rails: the rules alone, then the shared state on a real nats-server.

Time is passed in (``now``), so cooldowns and windows are tested without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import nats
import pytest
import yaml
from nats.aio.client import Client
from pydantic import ValidationError

from medbay.common.events import ActionName
from medbay.common.records import (
    CatalogTarget,
    TargetCatalog,
    key_token,
    read_target_catalog,
    target_key,
)
from medbay.executor.rails import BUCKET, SafetyRails
from medbay.executor.safety_config import MaintenanceWindow, SafetyConfig

if TYPE_CHECKING:
    from conftest import NatsServer

MONDAY_NOON = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


class Opener(Protocol):
    """What ``open_rails`` yields."""

    async def __call__(self, cfg: SafetyConfig | None = None) -> SafetyRails: ...


def config(**overrides: Any) -> SafetyConfig:
    """Everything allowed on web and db, then ``overrides`` (given as YAML would give them)."""
    data: dict[str, Any] = {
        "allow": {
            "restart_service": ["web", "db"],
            "kill_process": ["web"],
            "clear_cache": ["web", "db"],
            "alert_human": ["oncall"],
        }
    }
    return SafetyConfig.model_validate({**data, **overrides})


@pytest.fixture
async def open_rails(nats_server: NatsServer) -> AsyncIterator[Opener]:
    """``await open_rails(config)``: SafetyRails over a new connection of its own."""
    connections: list[Client] = []

    async def open_(cfg: SafetyConfig | None = None) -> SafetyRails:
        nc = await nats.connect(nats_server.url)
        connections.append(nc)
        return await SafetyRails.open(nc.jetstream(), cfg or config())

    yield open_
    for nc in connections:
        await nc.close()


# --- configuration -----------------------------------------------------------------


def test_nothing_is_allowed_by_default() -> None:
    cfg = SafetyConfig()
    assert cfg.allow == {}
    assert not cfg.allows("restart_service", "web")
    assert cfg.cooldown_seconds == 300 and cfg.step_timeout_seconds == 300
    assert (cfg.flap.max_actions, cfg.flap.window_seconds) == (3, 900)
    assert (cfg.rate_limit.max_actions, cfg.rate_limit.per_seconds) == (10, 60)


def test_config_reads_from_yaml_and_rejects_mistakes() -> None:
    text = """
    allow: {restart_service: [web]}
    cooldown_seconds: 120
    cooldown_by_action: {clear_cache: 10}
    flap: {max_actions: 2, window_seconds: 600, actions: [restart_service]}
    rate_limit: {max_actions: 5, per_seconds: 30}
    maintenance:
      - {name: patching, days: [sat, sun], start: "22:00", end: "02:00", timezone: Europe/Berlin}
    step_timeout_seconds: 60
    """
    cfg = SafetyConfig.model_validate(yaml.safe_load(text))
    assert cfg.cooldown_for("clear_cache") == 10 and cfg.cooldown_for("restart_service") == 120
    assert cfg.maintenance[0].describe() == "'patching' (sat,sun 22:00-02:00 Europe/Berlin)"

    for bad in (
        "allow: {restart: [web]}",  # unknown action
        "colldown_seconds: 5",  # misspelt field
        "cooldown_seconds: '5'",  # strict: no strings for numbers
        "maintenance: [{start: 12:30, end: '13:00'}]",  # unquoted: YAML reads 750
        "maintenance: [{start: '25:00', end: '13:00'}]",
        "maintenance: [{start: '12:00', end: '12:00'}]",
        "maintenance: [{start: '12:00', end: '13:00', timezone: Mars/Olympus}]",
        "maintenance: [{start: '12:00', end: '13:00', days: [monday]}]",
    ):
        with pytest.raises(ValidationError):
            SafetyConfig.model_validate(yaml.safe_load(bad))


def test_unquoted_time_error_says_to_quote_it() -> None:
    with pytest.raises(ValidationError, match="quotes"):
        MaintenanceWindow.model_validate(yaml.safe_load("{start: 12:30, end: '13:00'}"))


def test_maintenance_window_uses_its_timezone() -> None:
    window = MaintenanceWindow.model_validate(
        {"days": ["mon"], "start": "13:00", "end": "14:00", "timezone": "Europe/Berlin"}
    )
    # 12:30 UTC on a Monday in January is 13:30 in Berlin
    assert window.covers("any", MONDAY_NOON + timedelta(minutes=30))
    assert not window.covers("any", MONDAY_NOON + timedelta(hours=1, minutes=30))
    assert not window.covers("any", MONDAY_NOON + timedelta(days=1, minutes=30))  # Tuesday


def test_maintenance_window_across_midnight_and_for_some_hosts() -> None:
    window = MaintenanceWindow.model_validate(
        {"days": ["sun"], "start": "23:00", "end": "01:00", "hosts": ["db-*"]}
    )
    sunday_late = datetime(2025, 1, 5, 23, 30, tzinfo=UTC)
    assert window.covers("db-1", sunday_late)
    assert window.covers("db-1", sunday_late + timedelta(hours=1))  # Monday 00:30
    assert not window.covers("db-1", sunday_late + timedelta(hours=2))  # Monday 01:30
    assert not window.covers("db-1", sunday_late - timedelta(days=1))  # Saturday
    assert not window.covers("web-1", sunday_late)


def test_key_tokens_are_valid_and_distinct() -> None:
    names = ["web", "web.1", "web_1", "web=2E1", "my service", "db/main", "ünï"]
    tokens = [key_token(n) for n in names]
    assert len(set(tokens)) == len(names)
    for token in tokens:
        assert all(c.isascii() and (c.isalnum() or c in "_-=") for c in token), token
    assert key_token("web.1") == "web=2E1"


# --- plan steps run at most once -------------------------------------------------


async def test_a_step_is_claimed_once(open_rails: Opener) -> None:
    rails = await open_rails()
    assert await rails.step_state("p1", 0) is None
    assert await rails.claim_step("p1", 0, "exec-a")
    assert not await rails.claim_step("p1", 0, "exec-a")
    assert not await rails.claim_step("p1", 0, "exec-b")
    state = await rails.step_state("p1", 0)
    assert state is not None and state.executor_id == "exec-a"
    assert not state.finished and state.outcome is None  # claimed, never finished: not re-run
    assert await rails.claim_step("p1", 1, "exec-b")  # another step of the same plan


async def test_two_executors_racing_for_a_step_one_wins(open_rails: Opener) -> None:
    a, b = await open_rails(), await open_rails()
    for index in range(5):
        won = await asyncio.gather(
            a.claim_step("race", index, "exec-a"), b.claim_step("race", index, "exec-b")
        )
        assert sorted(won) == [False, True]
        state = await a.step_state("race", index)
        assert state is not None
        assert state.executor_id == ("exec-a" if won[0] else "exec-b")


async def test_a_redelivered_step_is_seen_finished(open_rails: Opener) -> None:
    rails = await open_rails()
    assert await rails.claim_step("p2", 0, "exec-a")
    await rails.finish_step("p2", 0, "verified")

    restarted = await open_rails()  # e.g. after a restart, on redelivery
    state = await restarted.step_state("p2", 0)
    assert state is not None and state.finished and state.outcome == "verified"
    assert not await restarted.claim_step("p2", 0, "exec-b")
    await restarted.finish_step("p2", 0, "failure")  # the first outcome stays
    state = await restarted.step_state("p2", 0)
    assert state is not None and state.outcome == "verified"


async def test_the_claimers_own_outcome_replaces_an_interrupted_one(open_rails: Opener) -> None:
    """exec-b took the plan over and reported the step interrupted, but exec-a, which
    claimed it, got through after all: its outcome is what the claim keeps."""
    rails = await open_rails()
    assert await rails.claim_step("p3", 0, "exec-a")
    await rails.finish_step("p3", 0, "interrupted", "interrupted", by="exec-b")
    await rails.finish_step("p3", 0, "success", "from someone else", by="exec-c")
    state = await rails.step_state("p3", 0)
    assert state is not None and state.outcome == "interrupted"  # only the claimer's counts
    await rails.finish_step("p3", 0, "verified", "fixed", by="exec-a")
    state = await rails.step_state("p3", 0)
    assert state is not None and (state.outcome, state.detail) == ("verified", "fixed")
    await rails.finish_step("p3", 0, "interrupted", "late", by="exec-b")  # never back
    await rails.finish_step("p3", 0, "failure", "again", by="exec-a")  # nor replaced again
    state = await rails.step_state("p3", 0)
    assert state is not None and (state.outcome, state.detail) == ("verified", "fixed")


# --- the rules over shared state ----------------------------------------------------


async def test_allowlist_refuses_unlisted_targets(open_rails: Opener) -> None:
    rails = await open_rails()
    refusal = await rails.check("kill_process", "db", "db-1", MONDAY_NOON)
    assert refusal is not None and refusal.rule == "allowlist"
    assert "target 'db' is not allowlisted for kill_process" in refusal.reason
    assert await rails.check("kill_process", "web", "web-1", MONDAY_NOON) is None
    nothing = await open_rails(SafetyConfig())
    assert await nothing.check("restart_service", "web", "web-1", MONDAY_NOON) is not None


async def test_breaker_opens_at_the_flap_limit_is_shared_and_reset(open_rails: Opener) -> None:
    rails = await open_rails(config(cooldown_seconds=0))
    now = MONDAY_NOON
    assert not await rails.record("restart_service", "web", now)
    assert not await rails.record("clear_cache", "web", now)  # not a flapping action
    assert not await rails.record("kill_process", "web", now + timedelta(minutes=5))
    assert await rails.check("restart_service", "web", "web-1", now) is None
    assert await rails.record("restart_service", "web", now + timedelta(minutes=10))

    later = now + timedelta(minutes=11)
    refusal = await rails.check("restart_service", "web", "web-1", later)
    assert refusal is not None and refusal.rule == "breaker"
    assert "breaker open for 'web' since 2025-01-06 12:10:00 UTC" in refusal.reason
    assert "3 actions in 15 min: 2 restart_service, 1 kill_process" in refusal.reason
    assert "reset with `medbay breaker reset web`" in refusal.reason
    assert await rails.check("restart_service", "db", "db-1", later) is None  # other targets run

    other = await open_rails(config(cooldown_seconds=0))  # another replica
    assert (await other.check("clear_cache", "web", "web-1", later)) is not None
    breakers = await other.breakers()
    assert list(breakers) == ["web"]
    assert breakers["web"].opened_at == now + timedelta(minutes=10)
    assert [a.action for a in breakers["web"].actions] == [
        "restart_service",
        "kill_process",
        "restart_service",
    ]
    assert not await other.record("restart_service", "web", later)  # opens only once

    fresh = await open_rails(SafetyConfig())  # e.g. the CLI, after the executor restarted
    assert list(await fresh.breakers()) == ["web"]
    assert await fresh.reset_breaker("web", by="alice")
    assert not await fresh.reset_breaker("web", by="alice")
    assert not await fresh.reset_breaker("never-seen", by="alice")
    assert await other.breakers() == {}
    assert await rails.check("restart_service", "web", "web-1", later) is None
    # a reset forgets the flap history: the budget starts again
    assert not await rails.record("restart_service", "web", later)
    assert not await rails.record("restart_service", "web", later)


async def test_flap_window_forgets_old_actions(open_rails: Opener) -> None:
    rails = await open_rails(config(cooldown_seconds=0))
    for minutes in (0, 10, 20, 30):  # never 3 within 15 min
        assert not await rails.record(
            "restart_service", "web", MONDAY_NOON + timedelta(minutes=minutes)
        )
    assert await rails.breakers() == {}


async def test_cooldown_refuses_then_allows(open_rails: Opener) -> None:
    rails = await open_rails(config(cooldown_seconds=300, cooldown_by_action={"clear_cache": 30}))
    await rails.record("restart_service", "web", MONDAY_NOON)
    await rails.record("clear_cache", "web", MONDAY_NOON)

    soon = MONDAY_NOON + timedelta(seconds=40)
    refusal = await rails.check("restart_service", "web", "web-1", soon)
    assert refusal is not None and refusal.rule == "cooldown"
    assert refusal.reason == "cooldown: restart_service on 'web' ran 40 s ago (cooldown 300 s)"
    assert await rails.check("clear_cache", "web", "web-1", soon) is None  # its own cooldown
    assert await rails.check("restart_service", "db", "db-1", soon) is None  # another target
    after = MONDAY_NOON + timedelta(seconds=300)
    assert await rails.check("restart_service", "web", "web-1", after) is None


async def test_rate_limit_holds_across_racing_replicas(open_rails: Opener) -> None:
    cfg = config(cooldown_seconds=0, rate_limit={"max_actions": 10, "per_seconds": 60})
    a, b = await open_rails(cfg), await open_rails(cfg)
    now = MONDAY_NOON

    # 16 admissions race from two replicas for 10 slots: exactly 10 get one
    verdicts = await asyncio.gather(
        *(a.admit("clear_cache", "web", "web-1", now) for _ in range(8)),
        *(b.admit("clear_cache", "db", "db-1", now) for _ in range(8)),
    )
    assert sum(v is None for v in verdicts) == 10
    for refusal in verdicts:
        if refusal is not None:
            assert refusal.rule == "rate_limit"
            assert refusal.reason.startswith("rate limit: 10 actions in the last 60 s")
    for rails in (a, b):
        refusal = await rails.check("restart_service", "db", "db-1", now + timedelta(seconds=2))
        assert refusal is not None and refusal.rule == "rate_limit"
    # the slots leave the window after 60 s
    assert await a.check("restart_service", "db", "db-1", now + timedelta(seconds=60)) is None


async def test_admit_applies_the_other_rules_first(open_rails: Opener) -> None:
    rails = await open_rails(config(rate_limit={"max_actions": 1, "per_seconds": 60}))
    refusal = await rails.admit("kill_process", "db", "db-1", MONDAY_NOON)
    assert refusal is not None and refusal.rule == "allowlist"
    assert await rails.admit("restart_service", "web", "web-1", MONDAY_NOON) is None  # took it


async def test_maintenance_window_refuses_inside_only(open_rails: Opener) -> None:
    window = {
        "name": "patching",
        "days": ["mon"],
        "start": "13:00",
        "end": "14:00",
        "timezone": "Europe/Berlin",
        "hosts": ["web-*"],
    }
    rails = await open_rails(config(maintenance=[window]))
    inside = MONDAY_NOON + timedelta(minutes=30)  # 13:30 in Berlin
    refusal = await rails.check("restart_service", "web", "web-1", inside)
    assert refusal is not None and refusal.rule == "maintenance"
    assert refusal.reason.startswith("maintenance window 'patching'")
    assert await rails.check("restart_service", "db", "db-1", inside) is None  # other host
    outside = MONDAY_NOON + timedelta(hours=1, minutes=30)  # 14:30 in Berlin
    assert await rails.check("restart_service", "web", "web-1", outside) is None


async def test_rules_apply_in_order(open_rails: Opener) -> None:
    window = {"start": "00:00", "end": "23:59"}
    rails = await open_rails(config(maintenance=[window]))
    refusal = await rails.check("kill_process", "db", "db-1", MONDAY_NOON)
    assert refusal is not None and refusal.rule == "allowlist"  # before maintenance
    refusal = await rails.check("kill_process", "web", "web-1", MONDAY_NOON)
    assert refusal is not None and refusal.rule == "maintenance"


async def test_alerting_a_person_is_only_allowlisted(open_rails: Opener) -> None:
    cfg = config(
        rate_limit={"max_actions": 1, "per_seconds": 60},
        maintenance=[{"start": "00:00", "end": "23:59"}],
    )
    rails = await open_rails(cfg)
    assert await rails.check("alert_human", "oncall", "web-1", MONDAY_NOON) is None
    assert not await rails.record("alert_human", "oncall", MONDAY_NOON)
    assert await rails.check("alert_human", "oncall", "web-1", MONDAY_NOON) is None
    refusal = await rails.check("alert_human", "web", "web-1", MONDAY_NOON)
    assert refusal is not None and refusal.rule == "allowlist"


async def test_check_changes_nothing(open_rails: Opener, nats_server: NatsServer) -> None:
    rails = await open_rails(config(cooldown_seconds=60))
    await rails.record("restart_service", "web", MONDAY_NOON)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        before = (await js.stream_info(f"KV_{BUCKET}")).state
        actions: tuple[ActionName, ...] = ("restart_service", "kill_process", "clear_cache")
        for action in actions:
            for target in ("web", "db", "new"):
                await rails.check(action, target, "web-1", MONDAY_NOON)
        after = (await js.stream_info(f"KV_{BUCKET}")).state
        assert (after.messages, after.last_seq) == (before.messages, before.last_seq)
    finally:
        await nc.close()


async def test_target_names_become_valid_keys(open_rails: Opener) -> None:
    odd = "db.main primary/1"
    rails = await open_rails(config(allow={"restart_service": [odd]}, cooldown_seconds=0))
    for minutes in range(3):
        await rails.record("restart_service", odd, MONDAY_NOON + timedelta(minutes=minutes))
    assert list(await rails.breakers()) == [odd]
    assert target_key(odd).count(".") == 1
    refusal = await rails.check("restart_service", odd, "db-1", MONDAY_NOON)
    assert refusal is not None and "medbay breaker reset 'db.main primary/1'" in refusal.reason
    assert await rails.reset_breaker(odd, by="bob")


async def test_concurrent_admits_on_one_target_respect_its_cooldown(open_rails: Opener) -> None:
    a, b = await open_rails(config(cooldown_seconds=300)), await open_rails(config())
    verdicts = await asyncio.gather(
        *(rails.admit("restart_service", "web", "web-1", MONDAY_NOON) for rails in (a, b, a, b))
    )
    assert sum(v is None for v in verdicts) == 1
    assert {v.rule for v in verdicts if v is not None} == {"cooldown"}


async def test_a_zero_cooldown_never_refuses_even_with_clock_skew(open_rails: Opener) -> None:
    rails = await open_rails(config(cooldown_seconds=0))
    assert await rails.admit("restart_service", "web", "web-1", MONDAY_NOON) is None
    # another replica whose clock is a little behind
    earlier = MONDAY_NOON - timedelta(milliseconds=5)
    assert await rails.admit("restart_service", "web", "web-1", earlier) is None


async def test_people_are_told_once_per_opening_of_a_breaker(open_rails: Opener) -> None:
    a, b = await open_rails(config(cooldown_seconds=0)), await open_rails(config())
    for minutes in range(3):
        await a.record("restart_service", "web", MONDAY_NOON + timedelta(minutes=minutes))
    first = await a.breaker("web")
    assert first is not None and await a.breaker("db") is None
    holders = await asyncio.gather(
        *(rails.claim_breaker_alert("web", first, plan) for rails, plan in ((a, "p1"), (b, "p2")))
    )
    winner = "p1" if holders[0] == "p1" else "p2"
    assert holders == [winner, winner]  # one plan tells people; the other learns which
    assert await b.claim_breaker_alert("web", first, "p3") == winner
    assert await a.claim_breaker_alert("web", first, winner) == winner  # the same plan again

    await b.release_breaker_alert("web", first, "p3")  # not its claim: nothing changes
    assert await a.claim_breaker_alert("web", first, "p4") == winner
    await a.release_breaker_alert("web", first, winner)  # the telling failed
    assert await b.claim_breaker_alert("web", first, "p4") == "p4"

    assert await a.reset_breaker("web", by="alice")
    later = MONDAY_NOON + timedelta(hours=1)
    for minutes in range(3):
        await a.record("restart_service", "web", later + timedelta(minutes=minutes))
    second = await b.breaker("web")
    assert second is not None and second.opened_at != first.opened_at
    assert await b.claim_breaker_alert("web", second, "p5") == "p5"  # a new opening


async def test_the_catalog_is_read_as_the_planner_reads_it(
    open_rails: Opener, nats_server: NatsServer
) -> None:
    rails = await open_rails(config())
    catalog = TargetCatalog(
        mode="live",
        targets={"web": CatalogTarget(kind="process", actions=["restart_service"], covers=["w"])},
        written_at=MONDAY_NOON,
    )
    await rails.write_catalog(catalog)
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        assert await read_target_catalog(kv) == catalog
    finally:
        await nc.close()


async def test_one_step_at_a_time_holds_a_target_across_replicas(open_rails: Opener) -> None:
    first, second = await open_rails(), await open_rails()
    order: list[str] = []

    async def act(rails: SafetyRails, holder: str, target: str) -> None:
        async with rails.hold(target, holder, 60):
            order.append(f"{holder} in")
            await asyncio.sleep(0.5)
            order.append(f"{holder} out")

    await asyncio.gather(act(first, "a", "web"), act(second, "b", "web"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    order.clear()
    await asyncio.gather(act(first, "a", "web"), act(second, "b", "db"))  # other targets
    assert sorted(order[:2]) == ["a in", "b in"]


async def test_a_hold_whose_holder_died_lapses(open_rails: Opener) -> None:
    rails = await open_rails()
    held = rails.hold("web", "gone", 0.5).__aenter__()  # entered, never left: a dead holder
    await held
    async with asyncio.timeout(30):
        async with rails.hold("web", "next", 60):
            pass
