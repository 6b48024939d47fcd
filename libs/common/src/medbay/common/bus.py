"""The bus: one broker factory, publishing, consuming with retries, dead-lettering.

Conventions every service follows through this module:

* Publishing always goes to a stream and waits for the PubAck; the event's
  ``event_id`` is sent as ``Nats-Msg-Id`` so a repeat is deduplicated.
* Consumers are durable pull consumers fetching explicit batches. A message that
  is too large, fails validation or came on a subject its body does not match
  goes to DEADLETTER at once, with the reason; a message whose handling raises is
  nak'ed with a delay and retried, and after ``max_deliver`` attempts it goes to
  DEADLETTER too. Either way the consumer goes on. A dead letter keeps at most
  ``DL_KEEP_BYTES`` of the payload (the original stays in its stream, named by
  stream and sequence, until that stream's retention drops it); if even that
  cannot be stored, the message is terminated rather than redelivered forever.
* Handling a message is a span whose parent is the publisher's span, carried in
  the ``traceparent`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.nats.security import NatsSecurity, NatsUserPassword
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from medbay.common.access import Durable
from medbay.common.events import Event
from medbay.common.kv import patiently
from medbay.common.settings import replicas_problem
from medbay.common.streams import (
    DEADLETTER,
    StreamSpec,
    deadletter_subject,
    subject_for,
    subject_mismatch,
)

if TYPE_CHECKING:
    from medbay.common.runtime import ServiceRuntime

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("medbay.bus")  # follows the provider installed later

E = TypeVar("E")

# Headers a dead-lettered message carries besides its own.
DL_REASON = "Medbay-DL-Reason"
DL_SUBJECT = "Medbay-DL-Subject"
DL_STREAM = "Medbay-DL-Stream"
DL_SEQUENCE = "Medbay-DL-Sequence"
DL_CONSUMER = "Medbay-DL-Consumer"
DL_SERVICE = "Medbay-DL-Service"
DL_AT = "Medbay-DL-At"
DL_TRUNCATED = "Medbay-DL-Truncated"
"""Set when the payload was cut: the original's size in bytes."""
EVENT_TYPE = "Medbay-Event-Type"

DL_KEEP_BYTES = 64 * 1024
"""The most of a rejected payload a dead letter keeps: enough to see what it was."""
_DL_MAX_HEADER = 1024
"""An original header longer than this (name and value) is not copied."""
_DL_MAX_HEADERS = 32


def make_broker(
    service: str,
    nats_url: str,
    *,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider | None = None,
    options: dict[str, Any] | None = None,
) -> NatsBroker:
    """The broker every service uses: tracing and Prometheus middlewares on.

    ``options`` are further ``nats.connect`` arguments: credentials, TLS, inbox
    prefix (``BusSettings.connect_options``)."""
    options = dict(options or {})
    user, password, tls = (
        options.pop("user", None),
        options.pop("password", None),
        options.pop("tls", None),
    )
    if user is not None:
        options["security"] = NatsUserPassword(user, password or "", ssl_context=tls)
    elif tls is not None:
        options["security"] = NatsSecurity(ssl_context=tls)
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
        log_level=logging.DEBUG,
        **options,
    )


def jetstream(broker: NatsBroker) -> JetStreamContext:
    js: JetStreamContext = broker.config.connection_state.stream
    return js


def connection(broker: NatsBroker) -> Client:
    nc: Client = broker.config.connection_state.connection
    return nc


async def declare_streams(
    broker: NatsBroker,
    specs: Sequence[StreamSpec],
    *,
    replicas: int = 1,
    patience: float = 120.0,
) -> None:
    """Create or update the streams this service owns to their declared configuration,
    kept in ``replicas`` copies. A stream already so declared is left alone, so
    replicas starting together do not all rewrite it; a JetStream API that does not
    answer yet (a cluster electing its leaders) is asked again for ``patience`` s."""
    js = jetstream(broker)
    for spec in specs:
        config: StreamConfig = spec.declaration(replicas)
        await patiently(functools.partial(_declare, js, config, replicas), spec.name, patience)


async def _declare(js: JetStreamContext, config: StreamConfig, replicas: int) -> None:
    try:
        try:
            info = await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config=config)
            log.info("declared stream %s (%d replicas)", config.name, replicas)
            return
        wanted = config.as_dict()
        current = info.config.as_dict()
        if any(current.get(key) != value for key, value in wanted.items()):
            await js.update_stream(config=config)
            log.info("updated stream %s to its declaration", config.name)
    except APIError as exc:
        raise replicas_problem(config.name or "", replicas, exc) from None


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
            except (TimeoutError, NoRespondersError, ServiceUnavailableError):
                if deadline is not None and loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)  # NATS away (a node lost, a leader elected): again
            except NotFoundError:
                if deadline is not None and loop.time() > deadline:
                    raise TimeoutError(
                        f"stream {spec.name} does not exist (declared by the {spec.owner})"
                    ) from None
                if not warned:
                    log.warning("waiting for stream %s, declared by the %s", spec.name, spec.owner)
                    warned = True
                await asyncio.sleep(0.5)


def current_task_cancelling() -> bool:
    """Whether this task is being cancelled: a loop that catches ``Exception`` to go on
    must stop instead, since the error may have replaced the ``CancelledError``."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


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
    """Store ``msg`` in DEADLETTER, with where it came from and why.

    The payload is kept whole up to ``DL_KEEP_BYTES`` (and always within the
    server's max payload, headers included); past that it is cut and
    ``DL_TRUNCATED`` gives the original size.
    """
    meta = msg.metadata
    source_stream = meta.stream
    headers: dict[str, str] = {}
    for key, value in (msg.headers or {}).items():
        if key.lower().startswith("nats-") or len(key) + len(value) > _DL_MAX_HEADER:
            continue
        if len(headers) < _DL_MAX_HEADERS:
            headers[key] = value
    headers.update(
        {
            # One dead letter per stored message and consumer, however often it is rejected.
            "Nats-Msg-Id": f"dl-{source_stream}-{meta.consumer}-{meta.sequence.stream}",
            DL_REASON: " ".join(reason.split())[:2000],
            DL_SUBJECT: msg.subject[:1000],
            DL_STREAM: source_stream,
            DL_SEQUENCE: str(meta.sequence.stream),
            DL_CONSUMER: meta.consumer or "",
            DL_SERVICE: service,
            DL_AT: datetime.now(UTC).isoformat(),
        }
    )
    header_bytes = sum(len(k) + len(v) + 4 for k, v in headers.items()) + 64
    max_payload = broker.config.connection_state.connection.max_payload
    keep = max(0, min(DL_KEEP_BYTES, max_payload - header_bytes - 1024))
    payload = msg.data
    if len(payload) > keep:
        headers[DL_TRUNCATED] = str(len(payload))
        payload = payload[:keep]
    await broker.publish(
        payload,
        deadletter_subject(service, source_stream),
        headers=headers,
        stream=DEADLETTER.name,
        timeout=timeout,
    )
    log.warning(
        "dead-lettered %s seq %s: %s",
        source_stream,
        meta.sequence.stream,
        reason,
        extra={"subject": msg.subject[:200]},
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


def stream_position(msg: Msg) -> tuple[int, float]:
    """A JetStream message's stream sequence and when the stream stored it (seconds
    since the epoch), read from its reply subject: ``msg.metadata`` reads all of it
    into objects, which costs more than validating a batch of metrics."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<ns>.<pending>
            return int(tokens[5]), int(tokens[7]) / 1e9
        if len(tokens) >= 11:  # with a domain and an account hash after $JS.ACK
            return int(tokens[7]), int(tokens[9]) / 1e9
    meta = msg.metadata  # raises NotJSMessageError, naming what is wrong
    return meta.sequence.stream, meta.timestamp.timestamp()


@dataclass
class Delivery(Generic[E]):
    """One valid message of a fetched batch."""

    event: E
    msg: Msg
    seq: int
    stored_at: float
    """When the stream stored it (seconds since the epoch)."""

    @functools.cached_property
    def trace_context(self) -> otel_context.Context:
        """The publisher's trace, from the message's headers: read only when a span
        needs it (the detector makes spans for few of its messages)."""
        return propagate.extract(self.msg.headers or {})

    def span(self, name: str, start_time: int | None = None) -> trace.Span:
        """A span for handling this message, continuing the publisher's trace; from
        ``start_time`` (ns since the epoch) when its handling began earlier."""
        return _TRACER.start_span(
            name, context=self.trace_context, kind=trace.SpanKind.CONSUMER, start_time=start_time
        )


BatchHandler = Callable[[list[Delivery[E]]], Awaitable[None]]


class NotHeld(Exception):
    """Raised by a handler whose work is no longer this replica's (its lease lapsed, or
    another replica took it): the batch is handed back at once (nak'd without delay,
    not retried here, not dead-lettered) and the consumer stops."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer and its retry policy."""

    durable: str
    subject: str
    stream: StreamSpec
    batch_size: int = 256
    max_deliver: int = 5
    ack_wait: float = 30.0
    retry_delay: float = 2.0
    max_ack_pending: int = 20_000
    deliver_new: bool = False
    """When the durable is first created, start with new messages instead of all."""
    start_back_seconds: float | None = None
    """When the durable is first created, start this far back (instead of all or new):
    what came shortly before a service's first start still matters."""
    start_seq: int | None = None
    """When the durable is first created, start at this stream sequence (a reader that
    has read up to the one before)."""

    def consumer_config(self) -> ConsumerConfig:
        """The durable's configuration (its start applies only when it is created)."""
        start: datetime | None = None
        start_seq: int | None = None
        if self.start_seq is not None:
            policy = DeliverPolicy.BY_START_SEQUENCE
            start_seq = max(self.start_seq, 1)
        elif self.start_back_seconds is not None:
            policy = DeliverPolicy.BY_START_TIME
            start = datetime.now(UTC) - timedelta(seconds=self.start_back_seconds)
        else:
            policy = DeliverPolicy.NEW if self.deliver_new else DeliverPolicy.ALL
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.subject,
            max_deliver=self.max_deliver,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            deliver_policy=policy,
            opt_start_time=start,
            opt_start_seq=start_seq,
        )


_OUTCOMES: dict[int, Counter] = {}


def consumer_outcomes(registry: CollectorRegistry | None) -> Counter:
    """The consumers' outcome counter: one per registry, however many consumers."""
    key = id(registry)
    if key not in _OUTCOMES:
        _OUTCOMES[key] = Counter(
            "medbay_consumer_messages",
            "Messages consumed, by outcome (handled, retried, dead_lettered)",
            ["consumer", "outcome"],
            registry=registry,
        )
    return _OUTCOMES[key]


_PENDING: dict[int, Gauge] = {}


def consumer_pending(registry: CollectorRegistry | None) -> Gauge:
    """The consumers' lag gauge: one per registry, however many consumers."""
    key = id(registry)
    if key not in _PENDING:
        _PENDING[key] = Gauge(
            "medbay_consumer_pending",
            "Messages waiting for a durable consumer (its lag), as of its last fetch",
            ["consumer"],
            registry=registry,
        )
    return _PENDING[key]


FETCH_SECONDS = 1.0
"""How long a consumer waits for messages before it reports that none wait."""


class FeedTrouble(Exception):
    """The server ended a pull request with an error status (the consumer was deleted,
    its stream has no leader, too many requests wait): try again after a pause."""


class PullFeed:
    """The messages of a durable pull consumer, a set at a time.

    nats-py's ``fetch`` collects a set by awaiting each message with a timeout of
    its own, which costs more than the detector's evaluation of the message
    (measured: about 50 µs a message, against 18 µs for the same messages taken
    this way, acks included). Here the messages of JetStream's own pull requests
    (``CONSUMER.MSG.NEXT``) arrive through a subscription callback into a buffer,
    and one request is open at a time: ``no_wait`` for what is stored (it ends at
    once, with a 404 status when it brings fewer than a batch), and while there is
    none, a wait for the next message (it ends with it, or a 408 status when it
    expires). A request is sent only when a set is wanted, so none is open while a
    set is handled: a message the consumer gives back (nak) could otherwise be
    caught by it after the consumer stopped listening, and come back out of order.
    """

    LOST_AFTER = 1.0
    """A request with no end this long after it should have ended was lost (a
    reconnect, a new stream leader): another is sent. (One that was only slow
    brings its messages to the buffer all the same.)"""

    def __init__(self, nc: Client, stream: str, durable: str, batch: int, wait: float) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.batch = batch
        self.wait = wait
        self.inbox = nc.new_inbox()
        self.buffer: deque[Msg] = deque()
        self.arrived = asyncio.Event()
        self.open_request = False
        self.left = 0  # messages the open request may still bring
        self.ends_by = 0.0  # when the open request ends at the latest (monotonic)
        self.idle = False  # the last request found nothing stored
        self.trouble: str | None = None
        self.sub: Subscription | None = None

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(self.inbox, cb=self._arrive)

    async def stop(self) -> list[Msg]:
        """Stop listening; returns the messages taken from the server but not handed
        out (the caller gives them back)."""
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
                # a wait still open is dropped by the server once it knows: what
                # arrives meanwhile goes to the next consumer rather than here
                if self.nc.is_connected:  # else there is no server to tell
                    await self.nc.flush(timeout=1)
            self.sub = None
        left, self.buffer = list(self.buffer), deque()
        return left

    async def _arrive(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is None:
            self.buffer.append(msg)
            self.left -= 1
            self.idle = False
            if self.left <= 0:
                self.open_request = False
        elif status != "100":  # not a heartbeat: the request is over
            self.open_request = False
            if status in ("404", "408"):
                self.idle = not self.buffer
            else:
                description = msg.headers.get("Description", "") if msg.headers else ""
                self.trouble = f"{status} {description}".strip()
        self.arrived.set()

    async def _request(self) -> None:
        if self.idle:  # wait for the next message
            body: dict[str, Any] = {"batch": 1, "expires": int(self.wait * 1e9)}
            self.left, wait = 1, self.wait
        else:  # what is stored, now
            body = {"batch": self.batch, "no_wait": True}
            self.left, wait = self.batch, 0.0
        self.open_request = True
        self.ends_by = time.monotonic() + wait + self.LOST_AFTER
        await self.nc.publish(self.subject, json.dumps(body).encode(), reply=self.inbox)

    async def take(self, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages, as soon as a request brought any; ``TimeoutError``
        when none came within ``timeout``; ``FeedTrouble`` when the server refused."""
        deadline = time.monotonic() + timeout
        while True:
            if self.trouble is not None:
                trouble, self.trouble = self.trouble, None
                raise FeedTrouble(trouble)
            now = time.monotonic()
            if self.open_request and now > self.ends_by:
                self.open_request = False
            if not self.open_request:
                if self.buffer:
                    count = min(self.batch, len(self.buffer))
                    return [self.buffer.popleft() for _ in range(count)]
                if now >= deadline:
                    raise TimeoutError
                await self._request()
            elif now >= deadline and not self.buffer:
                raise TimeoutError
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(deadline - now, 0.05)):
                    await self.arrived.wait()


class BatchConsumer(Generic[E]):
    """Consumes a durable pull consumer in batches of up to ``batch_size``.

    Each message is size-checked and parsed; the bad ones go to DEADLETTER and
    the good ones reach ``handler`` together, in stream order. If ``handler``
    raises for a batch, its messages are retried one by one, so one poison
    message cannot hold back the others: each that still fails is nak'ed with a
    delay, or dead-lettered once it has used ``max_deliver`` deliveries. The
    handler must therefore tolerate seeing a message again.

    The fetch loop is ours rather than faststream's batch subscriber: a fetch
    returns as soon as any messages are waiting (low latency when idle, full
    batches under load), and a fetched batch is never dropped on a timeout
    (``PullFeed``).
    """

    def __init__(
        self,
        broker: NatsBroker,
        spec: ConsumerSpec,
        *,
        service: str,
        parse: Callable[[bytes], E],
        handler: BatchHandler[E],
        max_bytes: int,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.broker = broker
        self.spec = spec
        self.service = service
        self.parse = parse
        self.handler = handler
        self.max_bytes = max_bytes
        self._feed: PullFeed | None = None
        outcomes = consumer_outcomes(registry)
        self._handled = outcomes.labels(spec.durable, "handled")
        self._retried = outcomes.labels(spec.durable, "retried")
        self._rejected = outcomes.labels(spec.durable, "dead_lettered")
        self._pending = consumer_pending(registry).labels(spec.durable)
        self._pending.set(0)

    async def open(self) -> None:
        """Create (or bind to) the durable consumer now. A service that calls this
        before it reports ready misses nothing published after that."""
        if self._feed is None:
            spec = self.spec
            js = jetstream(self.broker)
            try:
                await js.consumer_info(spec.stream.name, spec.durable)
            except NotFoundError:
                try:
                    await js.add_consumer(spec.stream.name, spec.consumer_config())
                except APIError:  # another replica made it just now
                    await js.consumer_info(spec.stream.name, spec.durable)
            feed = PullFeed(
                connection(self.broker),
                spec.stream.name,
                spec.durable,
                spec.batch_size,
                wait=FETCH_SECONDS,
            )
            await feed.start()
            self._feed = feed
            log.info("consuming %s as %s", spec.stream.name, spec.durable)

    async def run(self) -> None:
        """Fetch and handle until cancelled."""
        await self.open()
        feed = self._feed
        assert feed is not None
        try:
            while True:
                await self._fetch_and_handle(feed)
                if current_task_cancelling():  # a cancel a library call swallowed
                    raise asyncio.CancelledError
        finally:
            # an open subscription would hold up the connection's drain on stop
            await self._give_back([])

    async def _fetch_and_handle(self, feed: PullFeed) -> None:
        spec = self.spec
        try:
            msgs = await feed.take(timeout=FETCH_SECONDS)
        except TimeoutError:
            self._pending.set(0)  # nothing came within the timeout: nothing waits
            return
        except (
            FeedTrouble,
            ConnectionClosedError,
            ServiceUnavailableError,
            NoRespondersError,
        ) as exc:
            log.warning("fetch from %s failed: %r; retrying", spec.stream.name, exc)
            await asyncio.sleep(1.0)
            return
        if msgs:
            self._pending.set(msgs[-1].metadata.num_pending)
        try:
            await self.handle(msgs)
        except NotHeld:
            raise
        except Exception:
            if current_task_cancelling():
                raise
            # e.g. NATS went away mid-batch: leave what is unsettled for redelivery
            log.exception("batch from %s not settled; it will be redelivered", spec.stream.name)
            await asyncio.sleep(1.0)

    async def handle(self, msgs: list[Msg]) -> None:
        good = await self.valid(msgs)
        if not good:
            return
        try:
            await self.handler(good)
        except NotHeld:  # for the replica that holds the work now
            await self._give_back([d.msg for d in good])
            raise
        except Exception:
            log.exception("batch of %d failed; retrying one by one", len(good))
            for delivery in good:
                try:
                    await self.handler([delivery])
                except Exception as exc:
                    await self.settle_failed(delivery, exc)
                else:
                    await delivery.msg.ack()
                    self._handled.inc()
            return
        for delivery in good:
            await delivery.msg.ack()
        self._handled.inc(len(good))

    async def _give_back(self, msgs: list[Msg]) -> None:
        """Stop consuming, then nak ``msgs`` and what was taken ahead, so whoever
        consumes next has them at once (stopped first: a nak'd message must not come
        back to this consumer's open request)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            msgs = msgs + await feed.stop()
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak()

    async def valid(self, msgs: list[Msg]) -> list[Delivery[E]]:
        """The messages that pass the size check and parse; the others are dead-lettered."""
        good: list[Delivery[E]] = []
        for raw in msgs:
            if len(raw.data) > self.max_bytes:
                await self.reject(
                    raw, f"payload of {len(raw.data)} bytes exceeds {self.max_bytes} bytes"
                )
                continue
            try:
                event = self.parse(raw.data)
            except ValueError as exc:  # pydantic.ValidationError is one
                await self.reject(raw, validation_reason(exc))
                continue
            if isinstance(event, Event) and (problem := subject_mismatch(event, raw.subject)):
                await self.reject(raw, problem)
                continue
            good.append(Delivery(event, raw, *stream_position(raw)))
        return good

    async def reject(self, raw: Msg, reason: str) -> None:
        """Dead-letter and acknowledge; if the dead letter cannot be stored, terminate
        the message so it is not redelivered for ever."""
        self._rejected.inc()
        try:
            await dead_letter(self.broker, raw, reason, service=self.service)
        except Exception as exc:
            log.error(
                "could not dead-letter %s seq %s (%r); terminating it: %s",
                raw.metadata.stream,
                raw.metadata.sequence.stream,
                exc,
                reason,
            )
            await raw.term()
            return
        await raw.ack()

    async def settle_failed(self, delivery: Delivery[E], exc: Exception) -> None:
        raw = delivery.msg
        delivered = raw.metadata.num_delivered or 1
        if delivered >= self.spec.max_deliver:
            await self.reject(raw, f"failed {delivered} deliveries: {exc!r}")
        else:
            log.warning("handling seq %s failed, will retry: %r", delivery.seq, exc)
            await raw.nak(delay=self.spec.retry_delay)
            self._retried.inc()


def json_parser(model: type[Any]) -> Callable[[bytes], Any]:
    """A ``parse`` for ``subscribe_batches`` that validates JSON against ``model``."""

    def parse(data: bytes) -> Any:
        return model.model_validate_json(data)

    return parse


def consumer(
    rt: ServiceRuntime,
    durable: Durable,
    handler: BatchHandler[E],
    model: type[Any] | None = None,
    *,
    parse: Callable[[bytes], E] | None = None,
    **options: Any,
) -> BatchConsumer[E]:
    """The ``BatchConsumer`` of one durable of the ownership table (``medbay.common.access``)
    for the service ``rt`` runs: its name, stream and subjects come from ``durable``.

    Messages are parsed as JSON into ``model``, or by ``parse``; ``options`` are the
    rest of the ``ConsumerSpec`` (``batch_size``, ``deliver_new``, ...).
    """
    if durable.identity != rt.name:
        raise ValueError(f"durable {durable.name!r} belongs to {durable.identity}, not {rt.name}")
    if parse is None:
        if model is None:
            raise TypeError("give model or parse")
        parse = json_parser(model)
    elif model is not None:
        raise TypeError("give model or parse, not both")
    stream = durable.stream
    return BatchConsumer(
        rt.broker,
        ConsumerSpec(durable.name, durable.filter_subject, stream, **options),
        service=rt.name,
        parse=parse,
        handler=handler,
        max_bytes=rt.settings.max_event_bytes,
        registry=rt.registry,
    )
