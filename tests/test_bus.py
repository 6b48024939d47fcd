"""The bus conventions against a real nats-server: acked publishes, dedup,
dead-lettering of bad input, retries, and trace propagation."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from medbay.common.bus import (
    DL_REASON,
    DL_SEQUENCE,
    BatchConsumer,
    ConsumerSpec,
    Delivery,
    FeedTrouble,
    NotHeld,
    PullFeed,
    declare_streams,
    json_parser,
    make_broker,
    publish_event,
    stream_position,
)
from medbay.common.events import MetricBatch, MetricSample
from medbay.common.streams import DEADLETTER, METRICS
from medbay.common.telemetry import setup_tracing
from tests.helpers import headers


def batch(host: str = "h1", value: float = 1.0) -> MetricBatch:
    return MetricBatch(
        host=host,
        collected_at=datetime.now(UTC),
        samples=[MetricSample(name="cpu_percent", value=value, unit="%")],
    )


async def read_deadletters(url: str) -> list[Msg]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("medbay.deadletter.>", stream="DEADLETTER")
    try:
        return await sub.fetch(100, timeout=2)
    except TimeoutError:  # nats-py raises its own or the built-in one
        return []
    finally:
        await nc.close()


async def test_publish_dedup_deadletter_and_trace(nats_server):
    provider = setup_tracing("test")
    broker = make_broker(
        "test", nats_server.url, registry=CollectorRegistry(), tracer_provider=provider
    )
    seen: list[Delivery[MetricBatch]] = []
    trace_ids: list[int] = []
    attempts: dict[int, int] = {}

    async def handler(deliveries: list[Delivery[MetricBatch]]) -> None:
        for d in deliveries:
            with trace.use_span(d.span("handle"), end_on_exit=True) as span:
                trace_ids.append(span.get_span_context().trace_id)
            if d.event.samples[0]["value"] == 13.0:
                attempts[d.seq] = attempts.get(d.seq, 0) + 1
                raise RuntimeError("unlucky")
            if all(s.seq != d.seq for s in seen):  # handlers must tolerate repeats
                seen.append(d)

    consumer = BatchConsumer(
        broker,
        ConsumerSpec("test", "medbay.metrics.>", METRICS, max_deliver=2, retry_delay=0.1),
        service="test",
        parse=json_parser(MetricBatch),
        handler=handler,
        max_bytes=10_000,
    )
    await broker.connect()
    await declare_streams(broker, [METRICS, DEADLETTER])
    await broker.start()
    running = asyncio.create_task(consumer.run())
    try:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("collect") as root:
            good = batch()
            assert await publish_event(broker, good, stream=METRICS)
        # the same event again is deduplicated by JetStream
        assert not await publish_event(broker, good, stream=METRICS)
        js = broker.config.connection_state.stream
        await js.publish("medbay.metrics.h1", b"{not json", timeout=5)
        wrong = batch().model_dump(mode="json") | {"schema_version": 99}
        import json

        await js.publish("medbay.metrics.h1", json.dumps(wrong).encode(), timeout=5)
        await js.publish("medbay.metrics.h1", b"x" * 20_000, timeout=5)
        await publish_event(broker, batch(value=13.0), stream=METRICS)
        await publish_event(broker, batch(value=2.0), stream=METRICS)

        for _ in range(100):
            if len(seen) >= 2 and len(attempts) == 1 and sum(attempts.values()) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        running.cancel()
        await broker.stop()

    assert [d.event.samples[0]["value"] for d in seen] == [1.0, 2.0]
    assert seen[0].event.event_id == good.event_id
    # the consumer's span continues the publisher's trace
    assert trace_ids[0] == root.get_span_context().trace_id

    letters = await read_deadletters(nats_server.url)
    reasons = {headers(m)[DL_SEQUENCE]: headers(m)[DL_REASON] for m in letters}
    assert len(letters) == 4, reasons
    by_seq = dict(sorted((int(k), v) for k, v in reasons.items()))
    texts = list(by_seq.values())
    assert "invalid MetricBatch" in texts[0] and "JSON" in texts[0]
    assert "schema_version" in texts[1]
    assert "exceeds 10000 bytes" in texts[2]
    assert "failed 2 deliveries" in texts[3] and "unlucky" in texts[3]
    # the original payload is kept unchanged
    assert letters[2].data == b"x" * 20_000


async def test_a_consumer_reports_its_lag(nats_server):
    """``medbay_consumer_pending``: what waited behind the last fetch, 0 once drained."""
    registry = CollectorRegistry()
    broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
    release = asyncio.Event()
    handled: list[int] = []

    async def handler(deliveries: list[Delivery[MetricBatch]]) -> None:
        await release.wait()
        handled.extend(d.seq for d in deliveries)

    consumer = BatchConsumer(
        broker,
        ConsumerSpec("lag", "medbay.metrics.>", METRICS, batch_size=10),
        service="test",
        parse=json_parser(MetricBatch),
        handler=handler,
        max_bytes=10_000,
        registry=registry,
    )

    def pending() -> float | None:
        return registry.get_sample_value("medbay_consumer_pending", {"consumer": "lag"})

    await broker.connect()
    await declare_streams(broker, [METRICS, DEADLETTER])
    for n in range(25):
        await publish_event(broker, batch(value=float(n)), stream=METRICS)
    assert pending() == 0  # shown from the start
    running = asyncio.create_task(consumer.run())
    try:
        for _ in range(100):  # the first batch of 10 is held in the handler
            if pending() == 15:
                break
            await asyncio.sleep(0.1)
        assert pending() == 15
        release.set()
        for _ in range(100):
            if len(handled) == 25 and pending() == 0:
                break
            await asyncio.sleep(0.1)
        assert (len(handled), pending()) == (25, 0)
    finally:
        running.cancel()
        await broker.stop()


async def test_work_no_longer_held_is_handed_back_and_the_consumer_stops(nats_server):
    """A handler that raises ``NotHeld`` (its partition went to another replica): the
    batch is nak'd at once for the next holder, nothing is retried one by one or
    dead-lettered, and ``run`` ends."""
    broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
    spec = ConsumerSpec("handed", "medbay.metrics.>", METRICS, batch_size=10, max_deliver=2)
    seen: list[list[int]] = []

    def consumer(give_up: bool) -> BatchConsumer[MetricBatch]:
        async def handler(deliveries: list[Delivery[MetricBatch]]) -> None:
            seen.append([d.seq for d in deliveries])
            if give_up:
                raise NotHeld("partition 0 is no longer held")

        return BatchConsumer(
            broker,
            spec,
            service="test",
            parse=json_parser(MetricBatch),
            handler=handler,
            max_bytes=10_000,
            registry=CollectorRegistry(),
        )

    await broker.connect()
    await declare_streams(broker, [METRICS, DEADLETTER])
    for n in range(5):
        await publish_event(broker, batch(value=float(n)), stream=METRICS)
    try:
        with pytest.raises(NotHeld):
            await asyncio.wait_for(consumer(give_up=True).run(), 30)
        assert seen == [[1, 2, 3, 4, 5]]  # once, as a batch: not again one by one
        taker = asyncio.create_task(consumer(give_up=False).run())
        for _ in range(100):  # the next holder has them at once, not after ack_wait
            if len(seen) > 1:
                break
            await asyncio.sleep(0.05)
        taker.cancel()
        assert seen[1:] == [[1, 2, 3, 4, 5]]
        assert await read_deadletters(nats_server.url) == []
    finally:
        await broker.stop()


async def test_a_pull_feed_takes_what_is_stored_then_waits_for_more(nats_server):
    """A set holds every stored message up to a batch; with none stored, the next one
    published is handed over as it comes; a refusal by the server is reported."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=METRICS.declaration())
    spec = ConsumerSpec("feed", "medbay.metrics.>", METRICS)
    await js.add_consumer(METRICS.name, spec.consumer_config())
    for n in range(25):
        await js.publish(f"medbay.metrics.h{n}", b"{}")
    feed = PullFeed(nc, METRICS.name, "feed", batch=10, wait=1.0)
    await feed.start()
    try:
        sets = [await feed.take(timeout=5) for _ in range(3)]
        assert [[m.metadata.sequence.stream for m in s] for s in sets] == [
            list(range(1, 11)),
            list(range(11, 21)),
            list(range(21, 26)),
        ]
        for msg in (m for s in sets for m in s):
            await msg.ack()
        with pytest.raises(TimeoutError):
            await feed.take(timeout=0.3)

        async def publish_later() -> None:
            await asyncio.sleep(0.5)
            await js.publish("medbay.metrics.late", b"{}")

        later = asyncio.create_task(publish_later())
        (msg,) = await feed.take(timeout=10)
        await later
        assert msg.subject.endswith(".late")
        await msg.ack()

        await js.delete_consumer(METRICS.name, "feed")
        with pytest.raises(FeedTrouble, match=r"409 Consumer Deleted|503"):
            for _ in range(5):
                with contextlib.suppress(TimeoutError):
                    await feed.take(timeout=1)
    finally:
        await feed.stop()
        await nc.close()


async def test_a_pull_feed_stops_when_cancelled_as_a_message_arrives(nats_server):
    """A cancel that comes in the same moment as what the feed waits for (a message, or
    a request's end) still stops it: a consumer being handed over must not live on."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=METRICS.declaration())
    spec = ConsumerSpec("feed", "medbay.metrics.>", METRICS)
    await js.add_consumer(METRICS.name, spec.consumer_config())
    feed = PullFeed(nc, METRICS.name, "feed", batch=10, wait=1.0)
    await feed.start()
    try:
        for _ in range(20):
            waiting = asyncio.create_task(feed.take(timeout=30))
            for _ in range(1000):  # until it waits for the request it sent
                if feed.open_request:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            feed.arrived.set()  # what it waits for comes ...
            waiting.cancel()  # ... as it is cancelled
            done, _ = await asyncio.wait([waiting], timeout=5)
            assert done, "the feed went on waiting after it was cancelled"
            assert waiting.cancelled()
    finally:
        await feed.stop()
        await nc.close()


async def test_a_following_read_stops_when_its_fetch_swallows_the_cancel(nats_server, monkeypatch):
    """nats-py's ``fetch`` waits with ``asyncio.wait_for``, which in Python 3.11 can turn
    a cancel that comes as its wait times out into a timeout: a reader that follows a
    stream must still stop (the lab's teardown waited for one for ever)."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.client import JetStreamContext

    from medbay.common.reading import read

    fetch = JetStreamContext.PullSubscription.fetch

    async def fetch_that_swallows_the_cancel(
        self: JetStreamContext.PullSubscription,
        batch: int = 1,
        timeout: float | None = 5,
        heartbeat: float | None = None,
    ) -> list[Msg]:
        try:
            return await fetch(self, batch, timeout, heartbeat)
        except asyncio.CancelledError:
            raise NatsTimeoutError from None

    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", fetch_that_swallows_the_cancel)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=METRICS.declaration())

    async def follow() -> None:
        async for _ in read(js, METRICS, follow=True, idle_seconds=0.2):
            pass

    try:
        reader = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        reader.cancel()
        done, _ = await asyncio.wait([reader], timeout=5)
        assert done, "the reader went on following after it was cancelled"
        assert reader.cancelled()
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.METRICS.detector-3.2.1234.77.1733049600123456789.42",
        "$JS.ACK.hub.ACCHASH.METRICS.detector-3.2.1234.77.1733049600123456789.42.token",
        "$JS.ACK._.ACCHASH.METRICS.detector-3.2.1234.77.1733049600123456789.42",
    ],
)
def test_the_stream_position_is_what_the_metadata_says(reply: str) -> None:
    msg = Msg(_client=None, subject="medbay.metrics.h", reply=reply)  # type: ignore[arg-type]
    seq, stored_at = stream_position(msg)
    assert seq == msg.metadata.sequence.stream == 1234
    assert stored_at == pytest.approx(msg.metadata.timestamp.timestamp(), abs=1e-6)


def test_a_message_not_from_jetstream_has_no_stream_position() -> None:
    with pytest.raises(NotJSMessageError):
        stream_position(Msg(_client=None, subject="x", reply="_INBOX.abc"))  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
