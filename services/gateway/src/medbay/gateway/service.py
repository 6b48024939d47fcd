"""The gateway's state and its feeds: every event read updates the views, and
events that arrive once the history is read also go out to WebSocket clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field, TypeAdapter, ValidationError

from medbay.common.events import (
    ActionRequested,
    Approval,
    BreakerReset,
    Event,
    MetricBatch,
)
from medbay.common.streams import (
    APPROVALS,
    AUDIT,
    CHANNELS,
    ISSUES,
    METRICS,
    PLANS,
    REQUESTS,
    RESULTS,
    StreamSpec,
    subject_mismatch,
)
from medbay.common.telemetry import trace_id_of
from medbay.gateway.auth import TokenBook
from medbay.gateway.config import GatewayConfig
from medbay.gateway.feeds import StreamFeed
from medbay.gateway.health import HealthBoard, OwnHealth
from medbay.gateway.hub import Hub, RecentEvents, Subscriber, envelope
from medbay.gateway.incidents import IncidentBook
from medbay.gateway.metrics_view import MetricsBoard
from medbay.gateway.monitoring import MonitoringBoard
from medbay.gateway.operations import Operations, Publish
from medbay.gateway.planner_model import PlannerModelReader

log = logging.getLogger(__name__)

HISTORY_STREAMS = (ISSUES, PLANS, APPROVALS, RESULTS)
"""Read back ``history_hours`` at start-up: they make the incidents."""
LIVE_STREAMS = (REQUESTS, AUDIT)
"""Only followed: their events go to WebSocket clients."""
READS: tuple[StreamSpec, ...] = (METRICS, *HISTORY_STREAMS, *LIVE_STREAMS)
PRUNE_SECONDS = 60.0


def _parser(stream: StreamSpec) -> TypeAdapter[Any]:
    models = tuple(model for _, spec, model in CHANNELS if spec is stream)
    if len(models) == 1:
        return TypeAdapter(models[0])
    union = models[0]
    for model in models[1:]:
        union = union | model  # type: ignore[assignment]
    return TypeAdapter(Annotated[union, Field(discriminator="type")])


PARSERS = {spec.name: _parser(spec) for spec in READS}


class GatewayService:
    def __init__(
        self, config: GatewayConfig, *, registry: CollectorRegistry, max_event_bytes: int
    ) -> None:
        self.config = config
        self.max_event_bytes = max_event_bytes
        self.tokens = TokenBook(config.tokens, config.allow_anonymous_viewer)
        self.metrics = MetricsBoard(config.metrics)
        self.monitoring = MonitoringBoard(config.monitoring)
        self.incidents = IncidentBook(
            max_incidents=config.max_incidents,
            max_timeline_events=config.max_timeline_events,
            max_results=config.max_results,
        )
        self.hub = Hub(on_drop=self._dropped)
        self.recent = RecentEvents(config.recent_events, max(1, config.recent_events // 10))
        self.feeds: list[StreamFeed] = []
        self.operations: Operations | None = None
        self.model: PlannerModelReader | None = None
        self.health: HealthBoard | None = None
        self.events = Counter(
            "medbay_gateway_events",
            "Events read, by stream and whether history or live",
            ["stream", "phase"],
            registry=registry,
        )
        self.unreadable = Counter(
            "medbay_gateway_unreadable_events",
            "Messages skipped: too large or not a valid event",
            ["stream"],
            registry=registry,
        )
        self.ws_dropped = Counter(
            "medbay_gateway_ws_dropped",
            "WebSocket clients dropped for being too slow",
            registry=registry,
        )
        self.mutations = Counter(
            "medbay_gateway_mutations", "Changes made through the API", ["kind"], registry=registry
        )
        Gauge(
            "medbay_gateway_ws_clients", "Connected WebSocket clients", registry=registry
        ).set_function(lambda: len(self.hub.subscribers))
        Gauge("medbay_gateway_incidents", "Incidents held", registry=registry).set_function(
            lambda: len(self.incidents)
        )
        Gauge("medbay_gateway_hosts", "Hosts with metrics held", registry=registry).set_function(
            lambda: len(self.metrics)
        )
        Gauge(
            "medbay_gateway_traced_services",
            "Services with trace figures held (host, service)",
            registry=registry,
        ).set_function(lambda: len(self.monitoring))

    # --- state ---------------------------------------------------------------------

    def starting(self) -> str | None:
        """What start-up still waits for (None: nothing)."""
        if not self.feeds:
            return "waiting for the streams " + ", ".join(s.name for s in READS)
        reading = [f.spec.name for f in self.feeds if not f.caught_up.is_set()]
        return f"reading the history of {', '.join(reading)}" if reading else None

    # --- start-up and running ----------------------------------------------------------

    def attach(
        self,
        nc: Client,
        js: JetStreamContext,
        publish: Publish,
        *,
        http: httpx.AsyncClient,
        own_url: str,
        own_health: OwnHealth,
    ) -> None:
        """Connect to NATS's streams (which must exist) and the other services."""
        now = datetime.now(UTC)
        history_since = now - timedelta(hours=self.config.history_hours)
        metrics_seconds = self.config.metrics.history_seconds
        metrics_since = now - timedelta(seconds=metrics_seconds) if metrics_seconds else None
        self.feeds = [
            StreamFeed(js, METRICS, self.on_message, since=metrics_since),
            *(StreamFeed(js, s, self.on_message, since=history_since) for s in HISTORY_STREAMS),
            *(StreamFeed(js, s, self.on_message, since=None) for s in LIVE_STREAMS),
        ]
        self.operations = Operations(
            nc,
            js,
            publish,
            self.incidents,
            replay_max_messages=self.config.replay.max_messages,
            on_change=lambda kind: self.mutations.labels(kind).inc(),
        )
        self.model = PlannerModelReader(js)
        self.health = HealthBoard(
            self.config.health, own_url=own_url, own_health=own_health, client=http
        )

    def tasks(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [*(f.run for f in self.feeds), self.prune_forever]

    async def prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            self.prune(datetime.now(UTC))

    def prune(self, now: datetime) -> None:
        horizon = now - timedelta(hours=self.config.history_hours)
        self.incidents.prune(horizon)
        self.metrics.prune(horizon)
        self.monitoring.prune(now)

    # --- events ----------------------------------------------------------------------

    def on_message(self, stream: StreamSpec, msg: Msg, live: bool) -> None:
        if len(msg.data) > self.max_event_bytes:
            self.unreadable.labels(stream.name).inc()
            return
        try:
            event: Event = PARSERS[stream.name].validate_json(msg.data)
        except ValidationError:
            self.unreadable.labels(stream.name).inc()
            return
        if subject_mismatch(event, msg.subject) is not None:  # its consumer dead-letters it
            self.unreadable.labels(stream.name).inc()
            return
        self.events.labels(stream.name, "live" if live else "history").inc()
        if isinstance(event, MetricBatch):
            self.metrics.apply(event)
            self.monitoring.apply(event)
        elif not isinstance(event, ActionRequested | BreakerReset):
            trace_id = trace_id_of((msg.headers or {}).get("traceparent"))
            self.incidents.apply(event, stream.name, msg.data, trace_id)  # type: ignore[arg-type]
        event_type = str(getattr(event, "type", ""))
        seq = msg.metadata.sequence.stream
        host = self.host_of(event)
        text = envelope(stream.name, seq, event_type, host, msg.data)
        self.recent.add(event.timestamp, text, metric=isinstance(event, MetricBatch))
        if live and self.hub.subscribers:
            self.hub.broadcast(stream.name, seq, event_type, host, msg.data)

    def host_of(self, event: Event) -> str | None:
        if isinstance(event, Approval):
            return self.incidents.host_of_plan(event.plan_id)
        host = getattr(event, "host", None)
        return host if isinstance(host, str) else None

    def _dropped(self, subscriber: Subscriber) -> None:
        self.ws_dropped.inc()
        reason = subscriber.close_reason[1] if subscriber.close_reason else ""
        log.warning(
            "dropped WebSocket client %d (%s): %s",
            subscriber.id,
            subscriber.principal.name,
            reason,
        )
