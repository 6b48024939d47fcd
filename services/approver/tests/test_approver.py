"""The approver as a real process on a real nats-server, with real polling against a
fake Bot API server run by the test: asking, deciding once, refusing, expiring, and
passing the executor's alerts on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from medbay.approver.callbacks import CallbackSigner
from medbay.common.bus import DL_REASON, declare_streams, event_headers, make_broker
from medbay.common.events import AlertRaised, Approval, Plan, Risk
from medbay.common.streams import (
    APPROVALS,
    DEADLETTER,
    PLANS,
    RESULTS,
    plan_subject,
    subject_for,
)
from tests import factories
from tests.factories import step
from tests.helpers import free_port

if TYPE_CHECKING:
    from conftest import NatsServer, StartService

TOKEN = "123456:TEST-token"
SECRET = "integration-test-secret"
CHAT = -1001
ALICE = {"id": 111, "is_bot": False, "first_name": "Alice", "username": "alice"}
MALLORY = {"id": 666, "is_bot": False, "first_name": "Mallory"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class FakeBotAPI:
    """The Bot API methods the approver uses, recording every call (form data, as sent;
    a sent message's id is recorded with it). ``failures`` are answered to the next
    sendMessage calls instead (those are recorded in ``failed``).

    ``getUpdates`` long-polls for at most a second, so the server stops quickly."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.failures: list[tuple[int, str]] = []
        self.failed: list[dict[str, str]] = []
        self.updates: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.next_message_id = 100
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "no"}, status=401
            )
        method = request.match_info["method"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        if method == "sendMessage" and self.failures:
            self.failed.append(form)
            status, description = self.failures.pop(0)
            return web.json_response(
                {"ok": False, "error_code": status, "description": description}, status=status
            )
        if method != "getUpdates":
            self.calls.append((method, form))
        result: Any = True
        if method == "getMe":
            result = {
                "id": 123456,
                "is_bot": True,
                "first_name": "Medbay",
                "username": "medbay_bot",
            }
        elif method == "getUpdates":
            result = await self.wait_updates(int(form.get("offset", "0")))
        elif method in ("sendMessage", "editMessageText"):
            if method == "sendMessage":
                form["message_id"] = str(self.next_message_id)  # recorded with the call
                self.next_message_id += 1
            result = {
                "message_id": int(form["message_id"]),
                "date": int(time.time()),
                "chat": {"id": int(form["chat_id"]), "type": "supergroup", "title": "ops"},
                "text": form["text"],
            }
        return web.json_response({"ok": True, "result": result})

    async def wait_updates(self, offset: int) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(1.0):
                while not (fresh := [u for u in self.updates if u["update_id"] >= offset]):
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            return []
        return fresh

    def push(self, update: dict[str, Any]) -> int:
        update_id = len(self.updates) + 1
        self.updates.append({"update_id": update_id, **update})
        self.arrived.set()
        return update_id

    def click(self, user: dict[str, Any], data: str) -> str:
        query_id = f"q{len(self.updates) + 1}"
        self.push(
            {"callback_query": {"id": query_id, "from": user, "chat_instance": "c", "data": data}}
        )
        return query_id

    def command(self, user: dict[str, Any], text: str) -> None:
        message = {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": CHAT, "type": "supergroup", "title": "ops"},
            "from": user,
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
        }
        self.push({"message": message})

    def sent(self, method: str, **match: str) -> list[dict[str, str]]:
        return [
            form
            for name, form in self.calls
            if name == method and all(form.get(k) == v for k, v in match.items())
        ]

    async def wait_for(self, method: str, timeout: float = 20, **match: str) -> dict[str, str]:
        """The first call of ``method`` whose fields equal ``match``."""
        return await self.wait_text(method, "", timeout, **match)

    async def wait_text(
        self, method: str, part: str, timeout: float = 20, **match: str
    ) -> dict[str, str]:
        """The first call of ``method`` whose fields equal ``match`` and whose text has ``part``."""
        deadline = time.monotonic() + timeout
        while not (found := [f for f in self.sent(method, **match) if part in f.get("text", "")]):
            assert time.monotonic() < deadline, f"no {method} {match}; calls: {self.calls}"
            await asyncio.sleep(0.05)
        return found[0]


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotAPI]:
    api = FakeBotAPI()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", api.handle)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", api.port).start()
    yield api
    await runner.cleanup()


class Bus:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.approvals: list[Approval] = []
        self.traceparents: dict[str, str] = {}

    async def start(self) -> None:
        await self.nc.subscribe("medbay.approvals.>", cb=self._on_approval)

    async def _on_approval(self, msg: Msg) -> None:
        approval = Approval.model_validate_json(msg.data)
        self.approvals.append(approval)
        self.traceparents[approval.plan_id] = (msg.headers or {}).get("traceparent", "")

    async def decide_elsewhere(self, plan_id: str) -> None:
        """As ``medbay reject`` does."""
        approval = Approval(plan_id=plan_id, decision="reject", decided_by="ops@box", channel="cli")
        await self.js.publish(
            subject_for(approval),
            approval.model_dump_json().encode(),
            headers=event_headers(approval),
        )

    async def publish_alert(self, alert: AlertRaised, subject: str | None = None) -> None:
        """As the executor does (on ``subject`` instead, to pretend otherwise)."""
        await self.js.publish(
            subject or subject_for(alert),
            alert.model_dump_json().encode(),
            headers=event_headers(alert),
        )

    async def publish_plan(self, plan: Plan) -> None:
        headers = {**event_headers(plan), "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        await self.js.publish(plan_subject(plan), plan.model_dump_json().encode(), headers=headers)

    async def wait_consuming(self, timeout: float = 20) -> None:
        """Until the approver's durable consumers exist (they start with new messages)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.js.consumer_info(PLANS.name, "approver")
                await self.js.consumer_info(APPROVALS.name, "approver-approvals")
                await self.js.consumer_info(RESULTS.name, "approver-alerts")
                return
            except nats.js.errors.NotFoundError:
                assert time.monotonic() < deadline, "the approver never consumed PLANS"
                await asyncio.sleep(0.1)

    async def wait_approvals(
        self, plan_id: str, count: int = 1, timeout: float = 20
    ) -> list[Approval]:
        deadline = time.monotonic() + timeout
        while len(found := [a for a in self.approvals if a.plan_id == plan_id]) < count:
            assert time.monotonic() < deadline, f"approvals so far: {self.approvals}"
            await asyncio.sleep(0.05)
        return found


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    # no planner, executor or detector here
    await declare_streams(broker, [PLANS, APPROVALS, RESULTS, DEADLETTER])
    await broker.stop()
    nc = await nats.connect(nats_server.url)
    b = Bus(nc)
    await b.start()
    yield b
    await nc.close()


def make_plan(*, approval: bool = True) -> Plan:
    return factories.plan(
        step("reboot", "web-1", Risk.HIGH, 120), confidence=0.6, requires_approval=approval
    )


def make_alert(alert_id: str, message: str) -> AlertRaised:
    return AlertRaised(
        alert_id=alert_id,
        plan_id="p-7",
        issue_fingerprint="f" * 16,
        issue_kind="service_down",
        host="web-1",
        target="oncall",
        message=message,
    )


def write_config(tmp_path: Path, api: FakeBotAPI, expiry_minutes: float = 15) -> str:
    path = tmp_path / "approver.yaml"
    path.write_text(
        f"api_base: http://127.0.0.1:{api.port}\n"
        f"chat_ids: [{CHAT}]\n"
        f"allowed_user_ids: [{ALICE['id']}]\n"
        f"expiry_minutes: {expiry_minutes}\n"
    )
    return str(path)


def buttons(sent: dict[str, str]) -> dict[str, str]:
    """Button label -> callback data, from a sendMessage's reply_markup (a JSON string)."""
    rows = json.loads(sent["reply_markup"])["inline_keyboard"]
    return {button["text"]: button["callback_data"] for row in rows for button in row}


class Secrets(TypedDict):
    """The approver's secrets, as environment variables (exactly these keys)."""

    MEDBAY_TELEGRAM_TOKEN: str
    MEDBAY_APPROVER_SECRET: str


SECRETS = Secrets(MEDBAY_TELEGRAM_TOKEN=TOKEN, MEDBAY_APPROVER_SECRET=SECRET)


async def test_asks_in_the_chat_and_the_first_allowed_click_decides(
    bus: Bus, bot_api: FakeBotAPI, services: StartService, tmp_path: Path
):
    approver = services("approver", "--config", write_config(tmp_path, bot_api), **SECRETS)
    await bus.wait_consuming()
    quiet, plan = make_plan(approval=False), make_plan()
    await bus.publish_plan(quiet)
    await bus.publish_plan(plan)

    sent = await bot_api.wait_for("sendMessage", chat_id=str(CHAT))
    assert len(bot_api.sent("sendMessage")) == 1  # nothing for the plan needing no approval
    assert quiet.plan_id not in sent["text"]
    assert "service_down on web-1" in sent["text"] and "reboot web-1: risk high" in sent["text"]
    assert TRACE_ID in sent["text"] and plan.plan_id in sent["text"]
    signer = CallbackSigner(SECRET)
    now = datetime.now(UTC)
    data = {label: signer.verify(d, now) for label, d in buttons(sent).items()}
    assert sorted(s.choice for s in data.values()) == ["approve", "reject"]
    assert {s.plan_id for s in data.values()} == {plan.plan_id}
    approve = next(d for d in buttons(sent).values() if signer.verify(d, now).choice == "approve")

    refused = await bot_api.wait_for(
        "answerCallbackQuery", callback_query_id=bot_api.click(MALLORY, approve)
    )
    assert "not allowed" in refused["text"]
    forged = approve[:-3] + ("AAA" if not approve.endswith("AAA") else "BBB")
    refused = await bot_api.wait_for(
        "answerCallbackQuery", callback_query_id=bot_api.click(ALICE, forged)
    )
    assert "not valid" in refused["text"]
    await asyncio.sleep(1.0)
    assert bus.approvals == [] and bot_api.sent("editMessageText") == []

    answer = await bot_api.wait_for(
        "answerCallbackQuery", callback_query_id=bot_api.click(ALICE, approve)
    )
    assert answer["text"].startswith("Approved")
    [approval] = await bus.wait_approvals(plan.plan_id)
    assert (approval.decision, approval.channel) == ("approve", "telegram")
    assert approval.decided_by == "@alice (telegram 111)"
    assert TRACE_ID in bus.traceparents[plan.plan_id]  # the plan's trace goes on
    edited = await bot_api.wait_for("editMessageText", message_id=sent["message_id"])
    assert "✅ Approved by @alice (telegram 111)" in edited["text"]
    assert "reply_markup" not in edited  # the buttons are gone

    again = await bot_api.wait_for(
        "answerCallbackQuery", callback_query_id=bot_api.click(ALICE, approve)
    )
    assert again["text"].startswith("Already approved by @alice (telegram 111) at ")

    bot_api.command(MALLORY, "/pending")  # strangers get no answer to commands
    bot_api.command(ALICE, "/pending")
    pending = await bot_api.wait_for("sendMessage", text="Nothing is waiting for approval.")
    assert pending["chat_id"] == str(CHAT)
    bot_api.command(ALICE, "/status")
    status = await bot_api.wait_text("sendMessage", "No breaker is open.")
    assert "Open issues: unknown" in status["text"]  # no detector here
    await asyncio.sleep(0.5)
    assert len(bus.approvals) == 1
    assert len(bot_api.sent("sendMessage")) == 3  # the plan, /pending and /status for Alice

    other = make_plan()  # decided elsewhere: the chat shows it and its buttons stop working
    await bus.publish_plan(other)
    sent = await bot_api.wait_text("sendMessage", other.plan_id)
    await bus.decide_elsewhere(other.plan_id)
    edited = await bot_api.wait_text("editMessageText", "❌ Rejected by ops@box via cli")
    assert edited["message_id"] == sent["message_id"]
    click = bot_api.click(ALICE, next(iter(buttons(sent).values())))
    late = await bot_api.wait_for("answerCallbackQuery", callback_query_id=click)
    assert late["text"].startswith("Already rejected by ops@box at ")
    assert [a.channel for a in bus.approvals] == ["telegram", "cli"]
    assert approver.stop() == 0


async def test_an_undecided_plan_expires_into_a_rejection_shown_in_the_chat(
    bus: Bus, bot_api: FakeBotAPI, services: StartService, tmp_path: Path
):
    services(
        "approver", "--config", write_config(tmp_path, bot_api, expiry_minutes=0.05), **SECRETS
    )
    await bus.wait_consuming()
    plan = make_plan()
    await bus.publish_plan(plan)
    sent = await bot_api.wait_for("sendMessage", chat_id=str(CHAT))
    [approval] = await bus.wait_approvals(plan.plan_id)
    assert (approval.decision, approval.channel, approval.decided_by) == (
        "reject",
        "expiry",
        "expiry",
    )
    assert approval.reason == "not decided within 3 seconds"
    edited = await bot_api.wait_for("editMessageText")
    assert "⌛ Expired (not decided within 3 seconds)" in edited["text"]
    late = next(iter(buttons(sent).values()))
    answer = await bot_api.wait_for(
        "answerCallbackQuery", callback_query_id=bot_api.click(ALICE, late)
    )
    assert "expired" in answer["text"]
    await asyncio.sleep(0.5)
    assert len(bus.approvals) == 1


async def test_without_a_token_plans_expire_once_across_restarts_and_instances(
    bus: Bus, services: StartService, tmp_path: Path
):
    config = tmp_path / "approver.yaml"
    config.write_text("expiry_minutes: 0.1\n")  # 6 s: time to stop before it expires
    first = services("approver", "--config", str(config))
    assert "Telegram is off" in first.logs()
    await bus.wait_consuming()
    plan = make_plan()
    await bus.publish_plan(plan)
    deadline = time.monotonic() + 20
    while "awaits approval" not in first.logs():
        assert time.monotonic() < deadline, first.logs()
        await asyncio.sleep(0.05)
    assert first.stop() == 0  # before the plan expires
    more = [make_plan() for _ in range(3)]
    for later in more:  # while no approver runs: they wait in the stream
        await bus.publish_plan(later)
    assert bus.approvals == []
    # Two instances now: each sees every record; only one publishes each expiry.
    others = [services("approver", "--config", str(config), wait_healthy=False) for _ in range(2)]
    for other in others:
        other.wait_healthy()
    for each in (plan, *more):
        [approval] = await bus.wait_approvals(each.plan_id)
        assert (approval.decision, approval.channel) == ("reject", "expiry")
        assert approval.reason == "not decided within 6 seconds"
    await asyncio.sleep(1.5)  # the sweeps run every second
    # The subscription sees every publish, even one the stream would deduplicate.
    assert len(bus.approvals) == 4
    assert all(o.proc is not None and o.proc.poll() is None for o in others)


async def test_an_alert_reaches_the_chat_once_through_telegram_errors_and_redeliveries(
    bus: Bus, bot_api: FakeBotAPI, services: StartService, tmp_path: Path
):
    services("approver", "--config", write_config(tmp_path, bot_api), **SECRETS)
    await bus.wait_consuming()
    bot_api.failures.append((502, "Bad Gateway"))  # Telegram fails the first try
    alert = make_alert("a-1", "web is down: <b>connection refused</b> & *no* answer")
    await bus.publish_alert(alert)
    sent = await bot_api.wait_text("sendMessage", alert.message, chat_id=str(CHAT))
    assert sent["text"] == (
        "🚨 Alert: service_down on web-1\n"
        "web is down: <b>connection refused</b> & *no* answer\n\nPlan: p-7"
    )
    assert "parse_mode" not in sent and "reply_markup" not in sent  # plain text, as written
    assert [f["text"] for f in bot_api.failed] == [sent["text"]]

    again = alert.model_copy(update={"event_id": "a-1-once-more"})  # not deduplicated by NATS
    await bus.publish_alert(again)
    forged = make_alert("a-2", "from elsewhere")
    await bus.publish_alert(forged, subject="medbay.alerts.db-1")  # body says web-1
    later = make_alert("a-3", "disk still full")
    await bus.publish_alert(later)
    last = await bot_api.wait_text("sendMessage", later.message)  # the two before are handled
    assert bot_api.sent("sendMessage") == [sent, last]  # a-1 once, nothing for the forged one
    rejected = await bus.js.get_msg(DEADLETTER.name, 1)
    assert rejected.headers is not None
    assert "does not match the event" in rejected.headers[DL_REASON]


async def test_without_a_token_an_alert_is_logged_once(
    bus: Bus, services: StartService, tmp_path: Path
):
    config = tmp_path / "approver.yaml"
    config.write_text("expiry_minutes: 15\n")
    approver = services("approver", "--config", str(config))
    await bus.wait_consuming()
    alert = make_alert("a-1", "web is still down after a restart")
    await bus.publish_alert(alert)
    await bus.publish_alert(alert.model_copy(update={"event_id": "a-1-once-more"}))
    await bus.publish_alert(make_alert("a-2", "the last one"))
    deadline = time.monotonic() + 20
    while "the last one" not in approver.logs():
        assert time.monotonic() < deadline, approver.logs()
        await asyncio.sleep(0.05)
    logged = [json.loads(x) for x in approver.logs().splitlines() if "alert a-1 " in x]
    assert [(entry["level"], entry["plan_id"]) for entry in logged] == [("warning", "p-7")]
    line = logged[0]["msg"]
    assert "Telegram is off" in line and "web is still down after a restart" in line
    assert "service_down on web-1" in line
