"""The bus: one broker factory, publishing, consuming with retries, dead-lettering.

Conventions every service follows through this module:

* Publishing always goes to a stream and waits for the PubAck; the event's
  ``event_id`` is sent as ``Nats-Msg-Id`` so a repeat is deduplicated.
* Consumers are durable pull consumers fetching explicit batches. A message that
  is too large or fails validation goes to DEADLETTER at once, with the reason; a
  message whose handling raises is nak'ed with a delay and retried, and after
  ``max_deliver`` attempts it goes to DEADLETTER too. Either way the consumer
  goes on, and nothing is lost.
* Handling a message is a span whose parent is the publisher's span, carried in
  the ``traceparent`` header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from medbay.common.events import Event
from medbay.common.streams import DEADLETTER, StreamSpec, deadletter_subject, subject_for

log = logging.getLogger(__name__)

E = TypeVar("E")

# Headers a dead-lettered message carries besides its own.
DL_REASON = "Medbay-DL-Reason"
DL_SUBJECT = "Medbay-DL-Subject"
DL_STREAM = "Medbay-DL-Stream"
DL_SEQUENCE = "Medbay-DL-Sequence"
DL_CONSUMER = "Medbay-DL-Consumer"
DL_SERVICE = "Medbay-DL-Service"
DL_AT = "Medbay-DL-At"
EVENT_TYPE = "Medbay-Event-Type"


class InvalidMessage(ValueError):
    """A message that can never be handled: it goes to DEADLETTER, not back for retry."""


def make_broker(
    service: str,
    nats_url: str,
    *,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None = None,
) -> NatsBroker:
    """The broker every service uses: tracing and Prometheus middlewares on."""
    return NatsBroker(
        nats_url.split(","),
        name=f"medbay-{service}",
        middlewares=(
            NatsTelemetryMiddleware(tracer_provider=tracer_provider),
            NatsPrometheusMiddleware(registry=registry, app_name=f"medbay_{service}"),
        ),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(f"medbay.{service}.broker"),
    )


def jetstream(broker: NatsBroker) -> JetStreamContext:
    js: JetStreamContext = broker.config.connection_state.stream
    return js


async def declare_streams(broker: NatsBroker, specs: Sequence[StreamSpec]) -> None:
    """Create or update the streams this service owns to their declared configuration."""
    js = jetstream(broker)
    for spec in specs:
        config: StreamConfig = spec.declaration()
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config=config)
            log.info("declared stream %s", spec.name)
        else:
            await js.update_stream(config=config)


async def wait_for_streams(
    broker: NatsBroker, specs: Sequence[StreamSpec], *, timeout: float | None = None
) -> None:
    """Wait until streams owned by other services exist (they declare them)."""
    js = jetstream(broker)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for spec in specs:
        warned = False
        while True:
            try:
                await js.stream_info(spec.name)
                break
            except NotFoundError:
                if deadline is not None and loop.time() > deadline:
                    raise TimeoutError(
                        f"stream {spec.name} does not exist (declared by the {spec.owner})"
                    ) from None
                if not warned:
                    log.warning(
                        "waiting for stream %s, declared by the %s", spec.name, spec.owner
                    )
                    warned = True
                await asyncio.sleep(0.5)


def event_headers(event: Event) -> dict[str, str]:
    return {"Nats-Msg-Id": event.event_id, EVENT_TYPE: getattr(event, "type", "")}


async def publish_event(
    broker: NatsBroker, event: Event, *, stream: StreamSpec, timeout: float = 5.0
) -> bool:
    """Publish to ``stream`` and wait for the ack. Returns False for a deduplicated repeat."""
    ack = await broker.publish(
        event.model_dump_json().encode(),
        subject_for(event),
        headers=event_headers(event),
        stream=stream.name,
        timeout=timeout,
    )
    return not ack.duplicate


async def dead_letter(
    broker: NatsBroker,
    msg: Msg,
    reason: str,
    *,
    service: str,
    timeout: float = 5.0,
) -> None:
    """Store ``msg`` unchanged in DEADLETTER, with where it came from and why."""
    meta = msg.metadata
    source_stream = meta.stream
    headers = {
        k: v for k, v in (msg.headers or {}).items() if not k.lower().startswith("nats-")
    }
    headers.update(
        {
            # One dead letter per stored message, however often it is rejected.
            "Nats-Msg-Id": f"dl-{source_stream}-{meta.sequence.stream}",
            DL_REASON: " ".join(reason.split())[:2000],
            DL_SUBJECT: msg.subject,
            DL_STREAM: source_stream,
            DL_SEQUENCE: str(meta.sequence.stream),
            DL_CONSUMER: meta.consumer or "",
            DL_SERVICE: service,
            DL_AT: datetime.now(UTC).isoformat(),
        }
    )
    await broker.publish(
        msg.data,
        deadletter_subject(source_stream),
        headers=headers,
        stream=DEADLETTER.name,
        timeout=timeout,
    )
    log.warning(
        "dead-lettered %s seq %s: %s",
        source_stream,
        meta.sequence.stream,
        reason,
        extra={"subject": msg.subject},
    )


def validation_reason(exc: Exception) -> str:
    """A short, readable reason naming the fields that are wrong."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err["loc"]) or "message"
            parts.append(f"{where}: {err['msg']}")
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        return f"invalid {exc.title}: " + "; ".join(parts) + more
    return str(exc)


@dataclass
class Delivery(Generic[E]):
    """One valid message of a fetched batch."""

    event: E
    msg: Msg
    seq: int
    trace_context: otel_context.Context

    def span(self, name: str) -> trace.Span:
        """A span for handling this message, continuing the publisher's trace."""
        return trace.get_tracer("medbay").start_span(
            name, context=self.trace_context, kind=trace.SpanKind.CONSUMER
        )


BatchHandler = Callable[[list[Delivery[E]]], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer and its retry policy."""

    durable: str
    subject: str
    stream: StreamSpec
    batch_size: int = 256
    fetch_timeout: float = 0.05
    max_deliver: int = 5
    ack_wait: float = 30.0
    retry_delay: float = 2.0
    max_ack_pending: int = 20_000


def subscribe_batches(
    broker: NatsBroker,
    consumer: ConsumerSpec,
    *,
    service: str,
    parse: Callable[[bytes], E],
    handler: BatchHandler[E],
    max_bytes: int,
    rejected: Counter | None = None,
) -> None:
    """Consume ``consumer`` in batches: parse each message, dead-letter the bad ones,
    hand the good ones to ``handler`` in stream order.

    If ``handler`` raises for a batch, its messages are retried one by one, so one
    poison message cannot hold back the others: each that still fails is nak'ed
    with a delay, or dead-lettered once it has used up ``max_deliver`` deliveries.
    ``handler`` must therefore tolerate seeing a message again.
    """

    async def reject(raw: Msg, reason: str) -> None:
        await dead_letter(broker, raw, reason, service=service)
        await raw.ack()
        if rejected is not None:
            rejected.inc()

    async def settle_failed(delivery: Delivery[E], exc: Exception) -> None:
        raw = delivery.msg
        if raw.metadata.num_delivered >= consumer.max_deliver:
            await reject(raw, f"failed {raw.metadata.num_delivered} deliveries: {exc!r}")
        else:
            log.warning("handling seq %s failed, will retry: %r", delivery.seq, exc)
            await raw.nak(delay=consumer.retry_delay)

    @broker.subscriber(
        consumer.subject,
        stream=consumer.stream.binding(),
        durable=consumer.durable,
        pull_sub=PullSub(consumer.batch_size, timeout=consumer.fetch_timeout, batch=True),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=ConsumerConfig(
            max_deliver=consumer.max_deliver,
            ack_wait=consumer.ack_wait,
            max_ack_pending=consumer.max_ack_pending,
        ),
        title=f"{service}:{consumer.durable}",
    )
    async def on_batch(message: NatsBatchMessage = Context("message")) -> None:
        good: list[Delivery[E]] = []
        for raw in message.raw_message:
            if len(raw.data) > max_bytes:
                await reject(raw, f"payload of {len(raw.data)} bytes exceeds {max_bytes} bytes")
                continue
            try:
                event = parse(raw.data)
            except (ValidationError, InvalidMessage, ValueError) as exc:
                await reject(raw, validation_reason(exc))
                continue
            ctx = propagate.extract(raw.headers or {})
            good.append(Delivery(event, raw, raw.metadata.sequence.stream, ctx))
        if not good:
            return
        try:
            await handler(good)
        except Exception:
            log.exception("batch of %d failed; retrying one by one", len(good))
            for delivery in good:
                try:
                    await handler([delivery])
                except Exception as exc:
                    await settle_failed(delivery, exc)
                else:
                    await delivery.msg.ack()
            return
        for delivery in good:
            await delivery.msg.ack()


def json_parser(model: type[Any]) -> Callable[[bytes], Any]:
    """A ``parse`` for ``subscribe_batches`` that validates JSON against ``model``."""

    def parse(data: bytes) -> Any:
        return model.model_validate_json(data)

    return parse
