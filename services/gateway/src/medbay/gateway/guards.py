"""Checks every request passes before any route sees it, as pure ASGI middleware.

They answer before a byte of the request body is read: FastAPI reads and parses a
body before it solves a route's dependencies, so a check in a dependency comes too
late to stop a large upload. In order, outermost first:

- ``TrustedHosts``: the ``Host`` header names a host the gateway is meant to be
  reached by (against DNS rebinding); ``/healthz`` and ``/metrics`` are exempt.
- ``OriginCheck``: a browser opens ``/ws`` only from the gateway's own pages or
  from an origin of ``allowed_origins``.
- ``TokenGate``: ``/api`` needs a known bearer token (which role a route needs is
  still the route's business), or, with the anonymous viewer, no token on reads.
- ``BodyLimit``: bodies over ``max_body_bytes``: 413, by ``Content-Length`` before
  reading, or as soon as a streamed body passes the limit.

A refusal while a body may still be on its way closes the connection
(``Connection: close``) rather than draining the body.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medbay.gateway.auth import TokenBook, Unauthorized

PROBES = frozenset({"/healthz", "/metrics"})
"""Asked for by address (a pod's IP), whatever ``allowed_hosts`` says."""
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _body_may_follow(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


async def _refuse(
    send: Send, status: int, detail: str, *, close: bool, headers: dict[str, str] | None = None
) -> None:
    """A JSON problem; with ``close``, the connection is closed after it, not drained."""
    headers = {**(headers or {}), **({"Connection": "close"} if close else {})}
    response = JSONResponse({"detail": detail}, status, headers)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class TrustedHosts:
    """Starlette's ``TrustedHostMiddleware`` (HTTP and WebSocket), probes exempt."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.checked = TrustedHostMiddleware(app, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PROBES:
            await self.app(scope, receive, send)
        else:
            await self.checked(scope, receive, send)


class OriginCheck:
    """Refuses a WebSocket handshake whose ``Origin`` is neither the gateway's own
    (its host and port are the request's ``Host``) nor in ``allowed_origins``.

    Browsers always send ``Origin`` on a WebSocket handshake and let any page open a
    socket to any address; without an ``Origin`` it is not a browser, and the token
    check decides.
    """

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin, headers.get("host", "")):
                await self._deny(scope, receive, send, origin)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        origin = origin.lower()
        _, separator, authority = origin.partition("://")
        return (bool(separator) and authority == host.lower()) or origin in self.allowed

    @staticmethod
    async def _deny(scope: Scope, receive: Receive, send: Send, origin: str) -> None:
        reason = f"origin {origin[:100]} may not open this socket (see allowed_origins)"
        if "websocket.http.response" in scope.get("extensions", {}):
            await PlainTextResponse(reason, 403)(scope, receive, send)
        else:  # the server answers a close before the handshake with a bare 403
            await send({"type": "websocket.close", "code": 1008, "reason": reason})


class TokenGate:
    """``/api`` requests without a known bearer token get 401 before their body is read.

    With the anonymous viewer, reads without a token go on to the routes, which let
    them read; a change without a token is refused here.
    """

    def __init__(self, app: ASGIApp, tokens: TokenBook) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/api" or path.startswith("/api/")):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
        else:
            await _refuse(
                send,
                401,
                problem,
                close=_body_may_follow(scope),
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _problem(self, scope: Scope) -> str | None:
        scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
        token = token if scheme.lower() == "bearer" else ""
        if not token and self.tokens.allow_anonymous_viewer:
            safe = scope["method"] in SAFE_METHODS
            return None if safe else "a bearer token is required to change anything"
        try:
            self.tokens.identify(token)
        except Unauthorized as exc:
            return str(exc)
        return None


class BodyLimit:
    """Request bodies of at most ``limit`` bytes, or 413 without reading the rest."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body over {self.limit} bytes"
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await _refuse(send, 413, too_large, close=True)
            return
        received = 0
        started = answered = False

        async def counted_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if not started:
                        answered = True
                        await _refuse(send, 413, too_large, close=True)
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:  # whatever the app makes of the cut-off body: 413 was said
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not answered:
                raise
