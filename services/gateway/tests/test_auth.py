"""Who may do what: no token 401, a viewer on a change 403, an operator allowed,
for every route that changes something; and the same rules on ``/ws``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from medbay.common.records import BreakerState, TargetState, target_key
from medbay.executor.rails import SafetyRails
from medbay.executor.safety_config import SafetyConfig

NO_TOKEN: dict[str, str] = {}
UNKNOWN = {"Authorization": "Bearer not-a-token-anyone-was-given"}


async def test_every_change_needs_an_operator(gateway, bus, events):
    issue = events.issue()
    to_approve, to_reject = events.plan(issue), events.plan(issue)
    await bus.publish(issue, to_approve, to_reject)
    rails = await SafetyRails.open(bus.js, SafetyConfig())
    breaker = BreakerState(opened_at=datetime.now(UTC), reason="flapping", actions=[])
    await rails.kv.put(
        target_key("web"), TargetState(target="web", breaker=breaker).model_dump_json().encode()
    )
    await gateway.until("/api/approvals", lambda body: len(body) == 2)
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    changes = [
        (f"/api/approvals/{to_approve.plan_id}/approve", None, 202),
        (f"/api/approvals/{to_reject.plan_id}/reject", {"reason": "no"}, 202),
        ("/api/actions", {"host": "web-1", "action": "clear_cache", "target": "redis"}, 202),
        ("/api/breakers/web/reset", None, 202),
        ("/api/replay", {"stream": "ISSUES", "since": since, "prefix": "sandbox"}, 200),
    ]
    requests = await bus.collect("medbay.requests.>")
    approvals = await bus.collect("medbay.approvals.>")
    for path, body, allowed in changes:
        for headers, expected in ((NO_TOKEN, 401), (UNKNOWN, 401), (gateway.viewer, 403)):
            response = await gateway.post(path, body, headers=headers)
            assert response.status_code == expected, (path, headers, response.text)
            assert response.json()["detail"]
            if expected == 401:
                assert response.headers["www-authenticate"] == "Bearer"
        response = await gateway.post(path, body, headers=gateway.operator)
        assert response.status_code == allowed, (path, response.text)
    await asyncio.sleep(0.3)
    assert len(requests) == 1 and len(approvals) == 2  # only the operator's went through
    assert {a["decided_by"] for a in approvals} == {"olivia"}


async def test_reading_needs_a_token_of_any_role(gateway):
    for path in ("/api/incidents", "/api/issues", "/api/approvals", "/api/metrics", "/api/model"):
        assert (await gateway.get(path, headers=NO_TOKEN)).status_code == 401
        assert (await gateway.get(path, headers=UNKNOWN)).status_code == 401
        assert (await gateway.get(path, headers=gateway.viewer)).status_code == 200
        assert (await gateway.get(path, headers=gateway.operator)).status_code == 200
    me = (await gateway.get("/api/me", headers=gateway.viewer)).json()
    assert me == {"name": "victor", "role": "viewer"}
    assert (await gateway.get("/healthz", headers=NO_TOKEN)).status_code == 200


async def closed_with(url: str, **kwargs: Any) -> tuple[int, str]:
    async with websockets.connect(url, **kwargs) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("not closed")


async def test_websocket_tokens_and_filters(gateway):
    assert await closed_with(gateway.ws_url) == (4401, "a bearer token is required")
    assert (await closed_with(f"{gateway.ws_url}?token=wrong"))[0] == 4401
    code, reason = await closed_with(f"{gateway.ws_url}?token=viewer-token-0123456789abc&types=x")
    assert code == 4400 and "unknown event type 'x'" in reason

    token = "viewer-token-0123456789abc"
    subprotocols = [Subprotocol("medbay.v1"), Subprotocol(f"bearer.{token}")]
    async with websockets.connect(gateway.ws_url, subprotocols=subprotocols) as ws:
        assert ws.subprotocol == "medbay.v1"
        hello = json.loads(await ws.recv())
        assert hello["user"] == "victor" and hello["role"] == "viewer"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["kind"] == "hello"
