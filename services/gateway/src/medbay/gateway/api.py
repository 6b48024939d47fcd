"""The HTTP API: routes over the service's views and operations, and nothing more.

Every ``/api`` route needs a bearer token (``viewer`` to read, ``operator`` to
change anything) and answers 503 until the history is read. ``/healthz``,
``/metrics``, the OpenAPI document, its page ``/docs`` (Swagger UI, its scripts
served from the ``fastapi-offline`` package rather than a CDN; no ReDoc, which
fetches its logo from one) and the dashboard need none. The checks made before
any route (``Host``, ``Origin``, token, body size) are in ``medbay.gateway.guards``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medbay.common.events import ActionOutcome, ActionResult, IssueKind, Severity
from medbay.gateway.auth import Forbidden, Principal, Unauthorized
from medbay.gateway.config import Role
from medbay.gateway.guards import BodyLimit, OriginCheck, TokenGate, TrustedHosts
from medbay.gateway.health import OwnHealth
from medbay.gateway.incidents import IncidentFilter
from medbay.gateway.lab_report import read_lab_report
from medbay.gateway.monitoring import TRACE_KINDS
from medbay.gateway.operations import Conflict, NotFound, Operations, Unavailable
from medbay.gateway.schemas import (
    ActionAccepted,
    Breaker,
    BreakerResetResponse,
    CheckedService,
    DecisionRequest,
    DecisionResponse,
    EventMessage,
    FieldProblem,
    HealthBody,
    HostMetrics,
    IncidentDetail,
    IncidentState,
    IncidentSummary,
    IssueSummary,
    LabReportState,
    Me,
    Monitoring,
    PendingApproval,
    PlannerModel,
    PlanProgress,
    Problem,
    QuickAction,
    ReplayRequest,
    ReplayResponse,
    ServiceHealth,
    ServiceInfo,
    TraceFindings,
    TracingLinks,
    UtcDateTime,
    ValidationProblem,
)
from medbay.gateway.service import GatewayService
from medbay.gateway.ws import events_socket

PACKAGE_STATIC = Path(__file__).parent / "static"
MAX_LIMIT = 1000
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
"""A W3C trace id: 32 lower-case hexadecimal digits, not all zero."""
NO_TRACE = "0" * 32


class BadRequest(ValueError):
    """A request the gateway cannot answer as asked: 400, with what is wrong."""


def trace_url(jaeger_url: str, trace_id: str) -> str:
    """Where Jaeger's UI (configured without a trailing slash) shows a trace."""
    return f"{jaeger_url}/trace/{trace_id}"


def _problem(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Problem, "description": description}}


_PLAIN_TEXT = {"text/plain": {"schema": {"type": "string"}}}
MALFORMED_HTTP: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "A malformed HTTP request (its framing or headers), refused in plain "
        "text by the HTTP server before the API reads it",
        "content": _PLAIN_TEXT,
    }
}
"""What any operation may answer, whatever it documents itself."""


AUTH_ERRORS = {
    **_problem(401, "No token, or an unknown one"),
    **_problem(403, "The token's role may not do this"),
    **_problem(413, "A request body over max_body_bytes"),
    422: {"model": ValidationProblem, "description": "Invalid input"},
    **_problem(503, "Starting (reading history) or NATS unavailable"),
}

# --- dependencies ----------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="A token from the gateway's config.")


def service_of(request: Request) -> GatewayService:
    service: GatewayService = request.app.state.service
    return service


Service = Annotated[GatewayService, Depends(service_of)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _authorize(
    service: GatewayService, credentials: HTTPAuthorizationCredentials | None, role: Role
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    try:
        return service.tokens.authorize(token, role)
    except Unauthorized as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None


def viewer(service: Service, credentials: Credentials) -> Principal:
    return _authorize(service, credentials, "viewer")


def operator(service: Service, credentials: Credentials) -> Principal:
    return _authorize(service, credentials, "operator")


def ready(service: Service) -> None:
    starting = service.starting()
    if starting is not None:
        raise HTTPException(503, f"starting: {starting}", headers={"Retry-After": "1"})


def operations(service: Service) -> Operations:
    assert service.operations is not None  # set before ready
    return service.operations


Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]
Ops = Annotated[Operations, Depends(operations)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")]
HostFilter = Annotated[str | None, Query(max_length=253, description="Only this host.")]
Since = Annotated[
    UtcDateTime | None, Query(description="Only with activity since (UTC if no zone).")
]
PlanId = Annotated[str, PathParam(min_length=1, max_length=64)]


# --- routes -------------------------------------------------------------------------------

system = APIRouter(tags=["system"])


@system.get("/healthz", response_model=HealthBody, responses={503: {"model": HealthBody}})
async def healthz(request: Request) -> JSONResponse:
    """200 when connected to NATS with the history read, 503 otherwise (and why)."""
    own: OwnHealth = request.app.state.own_health
    ok, body = own()
    return JSONResponse(body, status_code=200 if ok else 503)


@system.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def metrics(request: Request) -> PlainTextResponse:
    registry: CollectorRegistry = request.app.state.registry
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _root() -> ServiceInfo:
    return ServiceInfo(
        service="medbay-gateway", docs="/docs", openapi="/openapi.json", websocket="/ws"
    )


api = APIRouter(
    prefix="/api", dependencies=[Depends(viewer), Depends(ready)], responses=AUTH_ERRORS
)
"""Changes also take an ``Operator``: an authenticated viewer gets 403 there."""


@api.get("/me", tags=["auth"])
async def me(who: Viewer) -> Me:
    """Who the token belongs to, and its role."""
    return Me(name=who.name, role=who.role)


@api.get("/metrics", tags=["metrics"])
async def host_metrics(
    service: Service, name: Annotated[str | None, Query(max_length=200)] = None
) -> list[HostMetrics]:
    """Every host's current metric values (of metric ``name`` only, if given)."""
    return service.metrics.hosts(name)


@api.get("/metrics/{host}", tags=["metrics"], responses=_problem(404, "No metrics from this host"))
async def one_host_metrics(
    service: Service,
    host: Annotated[str, PathParam(max_length=253)],
    name: Annotated[str | None, Query(max_length=200)] = None,
    history: bool = True,
) -> HostMetrics:
    """One host's current values and each series' short history."""
    found = service.metrics.host(host, name, history)
    if found is None:
        raise HTTPException(404, f"no metrics from host {host!r}")
    return found


@api.get("/monitoring", tags=["monitoring"])
async def monitoring(
    service: Service,
    host: HostFilter = None,
    service_name: Annotated[
        str | None,
        Query(
            alias="service",
            min_length=1,
            max_length=200,
            description="Only this service: its figures, its edges either way, its incidents.",
        ),
    ] = None,
    points: Annotated[
        int,
        Query(
            ge=1,
            le=10_000,
            description="History points per service, the latest (at most the "
            "monitoring.history_points held).",
        ),
    ] = 60,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many incidents.")
    ] = 50,
) -> Monitoring:
    """What services' traces show: per service its requests and errors per second, error
    ratio and latency percentiles (now, over time and per operation), the calls between
    services, and the incidents raised from them (error_rate, latency, no_traffic)."""
    now = datetime.now(UTC)
    board = service.monitoring
    where = IncidentFilter(host=host, kinds=TRACE_KINDS, resource=service_name)
    return Monitoring(
        services=board.services(now, host=host, service=service_name, points=points),
        edges=board.edges(now, host=host, service=service_name),
        hosts=board.hosts(host=host),
        incidents=service.incidents.incidents(where, limit),
    )


@api.get("/tracing", tags=["monitoring"])
async def tracing(service: Service) -> TracingLinks:
    """Where traces are shown: Jaeger's UI, if the gateway's config names one."""
    return TracingLinks(jaeger_url=service.config.jaeger_url)


@api.get(
    "/traces/{trace_id}",
    tags=["monitoring"],
    responses={
        400: {
            "model": Problem,
            "description": "Not a trace id: 32 hexadecimal digits, not all zero (or a "
            "malformed HTTP request, refused in plain text)",
            "content": _PLAIN_TEXT,
        }
    },
)
async def trace(
    service: Service,
    trace_id: Annotated[str, PathParam(description="A W3C trace id: 32 hexadecimal digits.")],
) -> TraceFindings:
    """What Medbay holds of a trace: the incidents and events (issues, plans, decisions,
    step results, outcomes, alerts) published in it, and where Jaeger shows it, if
    configured. A trace Medbay holds nothing of is answered with empty lists."""
    wanted = trace_id.strip().lower()
    if not TRACE_ID.match(wanted) or wanted == NO_TRACE:
        shown = trace_id if len(trace_id) <= 40 else f"{trace_id[:40]}..."
        raise BadRequest(
            f"trace_id: expected 32 hexadecimal digits, not all zero (a W3C trace id), "
            f"got {shown!r}"
        )
    incidents, events = service.incidents.trace(wanted)
    jaeger_url = service.config.jaeger_url
    return TraceFindings(
        trace_id=wanted,
        jaeger_url=None if jaeger_url is None else trace_url(jaeger_url, wanted),
        incidents=incidents,
        events=events,
    )


@api.get("/issues", tags=["incidents"])
async def issues(
    service: Service,
    host: HostFilter = None,
    kind: IssueKind | None = None,
    severity: Severity | None = None,
    state: Literal["open", "resolved"] | None = None,
    since: Since = None,
    limit: Limit = 100,
) -> list[IssueSummary]:
    """Issues, open and recent, most recently active first."""
    where = IncidentFilter(host, kind, severity, state, since)
    return service.incidents.issues(where, limit)


@api.get("/incidents", tags=["incidents"])
async def incidents(
    service: Service,
    host: HostFilter = None,
    kind: IssueKind | None = None,
    severity: Severity | None = None,
    state: IncidentState | None = None,
    since: Since = None,
    limit: Limit = 100,
) -> list[IncidentSummary]:
    """Incidents (an issue with its plans, approvals and results), most recently active first."""
    where = IncidentFilter(host, kind, severity, state, since)
    return service.incidents.incidents(where, limit)


@api.get(
    "/incidents/{fingerprint}", tags=["incidents"], responses=_problem(404, "No such incident")
)
async def incident(
    service: Service, fingerprint: Annotated[str, PathParam(max_length=64)]
) -> IncidentDetail:
    """One incident with its plans and its whole timeline."""
    found = service.incidents.incident(fingerprint)
    if found is None:
        raise HTTPException(
            404, f"no incident {fingerprint!r} in the last {service.config.history_hours:g} h"
        )
    return found


@api.get("/plans/{plan_id}", tags=["approvals"], responses=_problem(404, "No such plan"))
async def plan(service: Service, plan_id: PlanId) -> PlanProgress:
    """One plan: its decision and its results so far."""
    found = service.incidents.plan(plan_id)
    if found is None:
        raise HTTPException(404, f"no plan {plan_id!r}")
    return found


@api.get("/approvals", tags=["approvals"])
async def pending_approvals(
    ops: Ops, service: Service, limit: Limit = 100
) -> list[PendingApproval]:
    """Plans waiting for a decision, oldest first, each with the approver's deadline."""
    return await ops.with_deadlines(service.incidents.pending_approvals(limit))


@api.get("/results", tags=["approvals"])
async def results(
    service: Service,
    host: HostFilter = None,
    outcome: ActionOutcome | None = None,
    since: Since = None,
    limit: Limit = 100,
) -> list[ActionResult]:
    """Finished plan steps, newest first."""
    return service.incidents.results(host=host, outcome=outcome, since=since, limit=limit)


@api.get("/services", tags=["system"])
async def services(service: Service) -> list[ServiceHealth]:
    """Every Medbay service's health, from its /healthz."""
    assert service.health is not None  # set before ready
    return await service.health.services()


@api.get("/checked-services", tags=["system"])
async def checked_services(service: Service) -> list[CheckedService]:
    """The services the collector checks on each host: up or down, and since when."""
    return service.metrics.checked_services()


@api.get(
    "/events",
    tags=["events"],
    response_class=Response,
    responses={200: {"model": list[EventMessage], "description": "Oldest first"}},
)
async def recent_events(
    service: Service,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many, the newest.")
    ] = 500,
) -> Response:
    """The latest events the gateway read, oldest first (newest last), as the WebSocket
    sends them: a page shows them, then continues with ``/ws``, skipping what it has
    (by ``stream`` and ``seq``)."""
    body = "[" + ",".join(service.recent.latest(limit)) + "]"
    return Response(body, media_type="application/json")


@api.get("/model", tags=["planner"])
async def planner_model(service: Service) -> PlannerModel:
    """The planner's current model, its validation accuracy and the actions' success rates."""
    assert service.model is not None  # set before ready
    return await service.model.read()


@api.get("/lab", tags=["planner"])
async def lab_report(service: Service) -> LabReportState:
    """The lab's latest report (``medbay lab``: faults injected into a sandbox, and what
    Medbay did about each), read from the file of the ``lab_report`` option; or why none
    is shown: no run yet, the file is not a report, or no file is configured."""
    return await asyncio.to_thread(read_lab_report, service.config.lab_report)


@api.get("/breakers", tags=["breakers"])
async def breakers(ops: Ops) -> list[Breaker]:
    """The executor's open flap breakers."""
    return await ops.breakers()


DECIDE_ERRORS = {**_problem(404, "No such plan"), **_problem(409, "The plan is not waiting")}


@api.post(
    "/approvals/{plan_id}/approve", status_code=202, tags=["approvals"], responses=DECIDE_ERRORS
)
async def approve(
    ops: Ops, who: Operator, plan_id: PlanId, body: DecisionRequest | None = None
) -> DecisionResponse:
    """Approve a plan waiting for approval: an Approval (channel gateway) for the executor."""
    return await ops.decide(plan_id, "approve", who, body.reason if body else "")


@api.post(
    "/approvals/{plan_id}/reject", status_code=202, tags=["approvals"], responses=DECIDE_ERRORS
)
async def reject(
    ops: Ops, who: Operator, plan_id: PlanId, body: DecisionRequest | None = None
) -> DecisionResponse:
    """Reject a plan waiting for approval."""
    return await ops.decide(plan_id, "reject", who, body.reason if body else "")


@api.post("/actions", status_code=202, tags=["actions"])
async def quick_action(ops: Ops, who: Operator, body: QuickAction) -> ActionAccepted:
    """Ask for an action by hand: an ActionRequested the planner plans like any other."""
    return await ops.request_action(body, who)


@api.post(
    "/breakers/{target:path}/reset",
    status_code=202,
    tags=["breakers"],
    responses={
        **_problem(404, "A target the URL cannot carry (e.g. with a line break)"),
        **_problem(409, "No open breaker for the target"),
    },
)
async def reset_breaker(
    ops: Ops, who: Operator, target: Annotated[str, PathParam(min_length=1, max_length=300)]
) -> BreakerResetResponse:
    """Ask the executor to close a target's breaker: a BreakerReset on AUDIT, which it applies."""
    return await ops.reset_breaker(target, who)


@api.post("/replay", tags=["replay"])
async def replay(ops: Ops, who: Operator, body: ReplayRequest) -> ReplayResponse:
    """Re-publish a recorded time range of a stream under a sandbox prefix."""
    return await ops.replay(body, who)


# --- errors ---------------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "body" or len(loc) == 1) or "request"


async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldProblem(
            loc=list(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", ""))
        )
        for e in exc.errors()
    ]
    text = "; ".join(f"{_where(tuple(e.loc))}: {e.msg}" for e in errors[:5]) or "invalid request"
    body = ValidationProblem(detail=text, errors=errors)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


async def unreadable_body(request: Request, exc: Exception) -> Response:
    """FastAPI answers a body it cannot decode with 400; here it is invalid input like any."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 400:  # routes answer 400 through BadRequest, not HTTPException
        return await http_exception_handler(request, exc)
    problem = FieldProblem(loc=["body"], msg=str(exc.detail), type="json_invalid")
    body = ValidationProblem(detail="body: not readable as JSON", errors=[problem])
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


def _status_for(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


async def _nats_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"NATS unavailable: {type(exc).__name__}"}, status_code=503)


# --- request timing -------------------------------------------------------------------------


class RequestTimer:
    """Times every HTTP request by method, route template and status (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


# --- the app ---------------------------------------------------------------------------------


def build_app(
    service: GatewayService,
    *,
    registry: CollectorRegistry,
    own_health: OwnHealth,
    static_dir: Path | None = None,
) -> FastAPI:
    app = FastAPIOffline(
        redoc_url=None,
        title="Medbay gateway",
        version="1",
        description="Incidents, approvals, metrics and live events of a Medbay installation.",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
        responses=MALFORMED_HTTP,
    )
    app.state.service = service
    app.state.registry = registry
    app.state.own_health = own_health
    app.include_router(system)
    app.include_router(api)
    app.add_api_websocket_route("/ws", events_socket)
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(StarletteHTTPException, unreadable_body)
    app.add_exception_handler(BadRequest, _status_for(400))
    app.add_exception_handler(NotFound, _status_for(404))
    app.add_exception_handler(Conflict, _status_for(409))
    app.add_exception_handler(Unavailable, _status_for(503))
    app.add_exception_handler(NatsError, _nats_unavailable)
    app.add_exception_handler(TimeoutError, _nats_unavailable)
    directory = static_dir or (PACKAGE_STATIC if PACKAGE_STATIC.is_dir() else None)
    if directory is not None:
        app.mount("/", StaticFiles(directory=directory, html=True), name="dashboard")
    else:
        app.add_api_route("/", _root, methods=["GET"], include_in_schema=False)
    histogram = Histogram(
        "medbay_gateway_http_request_seconds",
        "HTTP requests by method, route and status",
        ["method", "route", "status"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        registry=registry,
    )
    config = service.config
    # the last added runs first: the timer sees the refusals too
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(TokenGate, tokens=service.tokens)
    app.add_middleware(OriginCheck, allowed_origins=config.allowed_origins)
    app.add_middleware(TrustedHosts, allowed_hosts=config.allowed_hosts)
    app.add_middleware(RequestTimer, histogram=histogram)
    return app
