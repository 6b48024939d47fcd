"""``/ws``: live events over a WebSocket.

Connect with a token (``?token=``, an ``Authorization: Bearer`` header, or the
subprotocols ``medbay.v1`` and ``bearer.<token>``) and optional filters
(``?types=issue.*,plan.created&hosts=web-1``). The server first sends
``{"kind": "hello", ...}``, then ``{"kind": "event", "stream", "seq", "type",
"host", "event"}`` for each live event that passes the filters. Sending
``{"subscribe": {"types": [...], "hosts": [...]}}`` replaces the filters (answered
with ``{"kind": "subscribed", ...}``); anything else is answered with
``{"kind": "error", "detail": ...}``.

Close codes: 4401 no or unknown token, 4403 role not allowed, 4400 bad filter,
4408 too slow (the client's queue filled up, or one send took too long),
1013 the gateway is still reading its history. A browser's handshake from another
site's page never gets here: ``medbay.gateway.guards.OriginCheck`` answers it 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from medbay.gateway.auth import Forbidden, Unauthorized
from medbay.gateway.hub import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_READY,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHORIZED,
    EventFilter,
    FilterError,
    Hub,
    Subscriber,
    split_list,
)

if TYPE_CHECKING:
    from medbay.gateway.service import GatewayService

SUBPROTOCOL = "medbay.v1"
TOKEN_SUBPROTOCOL = "bearer."


def _credentials(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The token, and the subprotocol to answer with."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    token = websocket.query_params.get("token")
    authorization = websocket.headers.get("authorization", "")
    if not token and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token:
        token = next(
            (p[len(TOKEN_SUBPROTOCOL) :] for p in offered if p.startswith(TOKEN_SUBPROTOCOL)), None
        )
    return token or None, SUBPROTOCOL if SUBPROTOCOL in offered else None


def _reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8."""
    return text.encode()[:123].decode(errors="ignore")


async def events_socket(websocket: WebSocket) -> None:
    service: GatewayService = websocket.app.state.service
    token, subprotocol = _credentials(websocket)
    await websocket.accept(subprotocol=subprotocol)
    try:
        principal = service.tokens.authorize(token, "viewer")
    except Unauthorized as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, _reason(str(exc)))
        return
    except Forbidden as exc:
        await websocket.close(CLOSE_FORBIDDEN, _reason(str(exc)))
        return
    if service.starting() is not None:
        await websocket.close(CLOSE_NOT_READY, "starting: reading history; try again shortly")
        return
    params = websocket.query_params
    try:
        event_filter = EventFilter.parse(
            split_list(params.getlist("types")), split_list(params.getlist("hosts"))
        )
    except FilterError as exc:
        await websocket.close(CLOSE_BAD_REQUEST, _reason(str(exc)))
        return
    config = service.config.websocket
    subscriber = Subscriber(principal, event_filter, config.queue_size)
    hello = {
        "kind": "hello",
        "client": subscriber.id,
        "user": principal.name,
        "role": principal.role,
        "queue_size": config.queue_size,
        **event_filter.describe(),
    }
    service.hub.add(subscriber)  # before hello: nothing published after it is missed
    try:
        await websocket.send_text(json.dumps(hello))
        await _serve(websocket, service.hub, subscriber, config.send_timeout_seconds)
    finally:
        service.hub.remove(subscriber)


async def _serve(
    websocket: WebSocket, hub: Hub, subscriber: Subscriber, send_timeout: float
) -> None:
    """Send queued events and read filter changes until either side stops."""
    tasks = {
        asyncio.create_task(_pump(websocket, hub, subscriber, send_timeout)),
        asyncio.create_task(_listen(websocket, subscriber)),
        asyncio.create_task(subscriber.dropped.wait()),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if subscriber.close_reason is not None:
        code, reason = subscriber.close_reason
        # a client that reads nothing may never take the close frame: give up after a while
        with contextlib.suppress(Exception):
            async with asyncio.timeout(send_timeout):
                await websocket.close(code, _reason(reason))


async def _pump(
    websocket: WebSocket, hub: Hub, subscriber: Subscriber, send_timeout: float
) -> None:
    while True:
        text = await subscriber.queue.get()
        try:
            async with asyncio.timeout(send_timeout):
                await websocket.send_text(text)
        except TimeoutError:
            hub.drop(subscriber, CLOSE_TOO_SLOW, f"too slow: a send took over {send_timeout:g} s")
            return
        except (WebSocketDisconnect, RuntimeError):
            return


async def _listen(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        reply = _subscribe(subscriber, message.get("text"))
        try:
            await websocket.send_text(json.dumps(reply))
        except (WebSocketDisconnect, RuntimeError):
            return


def _subscribe(subscriber: Subscriber, text: str | None) -> dict[str, Any]:
    """Apply a ``{"subscribe": {...}}`` message; the reply to send."""
    try:
        request = json.loads(text) if text is not None else None
    except ValueError:
        request = None
    spec = request.get("subscribe") if isinstance(request, dict) else None
    if not isinstance(spec, dict):
        return {
            "kind": "error",
            "detail": 'expected {"subscribe": {"types": [...], "hosts": [...]}}',
        }
    types, hosts = spec.get("types", []), spec.get("hosts", [])
    if not (isinstance(types, list) and isinstance(hosts, list)) or not all(
        isinstance(v, str) for v in [*types, *hosts]
    ):
        return {"kind": "error", "detail": "types and hosts must be lists of strings"}
    try:
        subscriber.filter = EventFilter.parse(types, hosts)
    except FilterError as exc:
        return {"kind": "error", "detail": str(exc)}
    return {"kind": "subscribed", **subscriber.filter.describe()}
