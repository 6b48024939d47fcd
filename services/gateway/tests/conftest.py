"""Fixtures of the gateway tests: the streams on a real nats-server, the gateway as
a real process with an operator and a viewer token, and events to publish."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from medbay.common.bus import declare_streams, event_headers, make_broker
from medbay.common.events import (
    ActionResult,
    AlertRaised,
    Approval,
    Event,
    IssueKind,
    IssueOpened,
    IssueResolved,
    Plan,
    PlanFinished,
    PlanOutcome,
    PlanStep,
    Risk,
    Severity,
    issue_fingerprint,
    new_event_id,
)
from medbay.common.streams import ALL_STREAMS, stream_for_subject, subject_for

if TYPE_CHECKING:
    from conftest import NatsServer, ServiceProcess, StartService

OPERATOR = ("olivia", "operator-token-0123456789")
VIEWER = ("victor", "viewer-token-0123456789abc")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Gateway:
    process: ServiceProcess
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.process.port}/ws"

    operator = auth(OPERATOR[1])
    viewer = auth(VIEWER[1])

    def restart(self) -> None:
        self.process.stop()
        self.process.start()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            return await client.get(path, headers=self.viewer if headers is None else headers)

    async def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            return await client.post(
                path, json=body, headers=self.operator if headers is None else headers
            )

    async def until(self, path: str, check: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        """GET ``path`` until its JSON passes ``check``; that JSON."""
        deadline = time.monotonic() + timeout
        while True:
            response = await self.get(path)
            body = response.json()
            if response.status_code == 200 and check(body):
                return body
            assert time.monotonic() < deadline, f"{path}: {response.status_code} {body}"
            await asyncio.sleep(0.05)


@pytest.fixture
def streams(nats_server: NatsServer) -> None:
    """Every Medbay stream, declared as its owners would."""

    async def declare() -> None:
        broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
        await broker.connect()
        await declare_streams(broker, ALL_STREAMS)
        await broker.stop()

    asyncio.run(declare())


class StartGateway(Protocol):
    """What ``start_gateway`` returns: starts the gateway with ``extra`` config."""

    def __call__(self, extra: str = "", **env: str) -> Gateway: ...


@pytest.fixture
def start_gateway(services: StartService, streams: None, tmp_path: Path) -> StartGateway:
    """Start the gateway with both test tokens and ``extra`` YAML in its config."""

    def start(extra: str = "", **env: str) -> Gateway:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "tokens:\n"
            f"  - {{name: {OPERATOR[0]}, token: {OPERATOR[1]}, role: operator}}\n"
            f"  - {{name: {VIEWER[0]}, token: {VIEWER[1]}, role: viewer}}\n" + extra
        )
        return Gateway(
            services("gateway", "--config", str(config), wait_healthy=True, **env), config
        )

    return start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Gateway:
    return start_gateway()


class Bus:
    """Publishes events to their streams and collects what is published on subjects."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def publish(self, *events: Event, trace_id: str | None = None) -> None:
        """Publish ``events``, as part of the trace ``trace_id`` if given."""
        for event in events:
            subject = subject_for(event)
            spec = stream_for_subject(subject)
            assert spec is not None
            headers = event_headers(event)
            if trace_id is not None:
                headers["traceparent"] = f"00-{trace_id}-{'1' * 16}-01"
            await self.js.publish(
                subject, event.model_dump_json().encode(), headers=headers, stream=spec.name
            )

    async def collect(self, subject: str) -> list[dict[str, Any]]:
        """A list that fills with the JSON of every message on ``subject`` from now on."""
        received: list[dict[str, Any]] = []

        async def on_msg(msg: Msg) -> None:
            received.append(json.loads(msg.data))

        await self.nc.subscribe(subject, cb=on_msg)
        await self.nc.flush()
        return received


@pytest.fixture
async def bus(nats_server: NatsServer, streams: None) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_server.url)
    yield Bus(nc)
    await nc.close()


class PublishNow(Protocol):
    """What ``publish_now`` returns: publishes ``events`` to their streams."""

    def __call__(self, *events: Event) -> None: ...


@pytest.fixture
def publish_now(nats_server: NatsServer, streams: None) -> PublishNow:
    """Publish events from a test that is not a coroutine."""

    def publish(*items: Event) -> None:
        async def run() -> None:
            nc = await nats.connect(nats_server.url)
            try:
                await Bus(nc).publish(*items)
            finally:
                await nc.close()

        asyncio.run(run())

    return publish


class Events:
    """Linked events: an issue, its plan, the plan's approval, results, how it ended and
    the alerts it raised."""

    @staticmethod
    def issue(
        host: str = "web-1", kind: IssueKind = "cpu", metric: str = "cpu_percent"
    ) -> IssueOpened:
        now = datetime.now(UTC)
        return IssueOpened(
            fingerprint=issue_fingerprint(host, kind, metric, {}),
            host=host,
            kind=kind,
            resource="cpu",
            metric=metric,
            value=97.0,
            threshold=90.0,
            severity=Severity.CRITICAL,
            detector="threshold",
            first_seen=now - timedelta(seconds=30),
            last_seen=now,
        )

    @staticmethod
    def resolved(issue: IssueOpened) -> IssueResolved:
        data = issue.model_dump(exclude={"event_id", "timestamp", "type"})
        return IssueResolved(**{**data, "value": 40.0, "last_seen": datetime.now(UTC)})

    @staticmethod
    def plan(issue: IssueOpened, *, approval: bool = True) -> Plan:
        return Plan(
            plan_id=new_event_id(),
            issue_fingerprint=issue.fingerprint,
            issue_event_id=issue.event_id,
            host=issue.host,
            issue_kind=issue.kind,
            metric=issue.metric,
            value=issue.value,
            threshold=issue.threshold,
            severity=issue.severity,
            steps=[
                PlanStep(
                    action="restart_service", target="web", risk=Risk.LOW, estimated_seconds=30
                )
            ],
            confidence=0.9,
            risk=Risk.LOW,
            estimated_seconds=30,
            requires_approval=approval,
            model_version="rules-v1",
        )

    @staticmethod
    def approval(plan: Plan, decision: Literal["approve", "reject"] = "approve") -> Approval:
        return Approval(
            plan_id=plan.plan_id,
            decision=decision,
            decided_by="someone",
            channel="cli",
        )

    @staticmethod
    def result(plan: Plan, status: Literal["started", "finished"] = "finished") -> ActionResult:
        now = datetime.now(UTC)
        return ActionResult(
            plan_id=plan.plan_id,
            issue_fingerprint=plan.issue_fingerprint,
            issue_kind=plan.issue_kind,
            step_index=0,
            action="restart_service",
            target="web",
            host=plan.host,
            status=status,
            outcome="success" if status == "finished" else None,
            verified=True if status == "finished" else None,
            dry_run=False,
            started_at=now,
            finished_at=now if status == "finished" else None,
        )

    @staticmethod
    def finished(
        plan: Plan, outcome: PlanOutcome = "verified", *, escalated: bool = False, detail: str = ""
    ) -> PlanFinished:
        return PlanFinished(
            plan_id=plan.plan_id,
            issue_fingerprint=plan.issue_fingerprint,
            issue_kind=plan.issue_kind,
            host=plan.host,
            outcome=outcome,
            detail=detail,
            steps_run=0 if outcome in ("refused", "dry_run", "rejected", "expired") else 1,
            escalated=escalated,
            dry_run=outcome == "dry_run",
        )

    @staticmethod
    def alert(plan: Plan, target: str = "oncall") -> AlertRaised:
        return AlertRaised(
            alert_id=new_event_id(),
            plan_id=plan.plan_id,
            issue_fingerprint=plan.issue_fingerprint,
            issue_kind=plan.issue_kind,
            host=plan.host,
            target=target,
            message=f"{plan.issue_kind} on {plan.host} is not fixed",
        )


@pytest.fixture
def events() -> Iterator[Events]:
    yield Events()
