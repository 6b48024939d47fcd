"""Reading a stream without consuming it: history, a time range, or what comes next.

Every read is an ephemeral pull consumer that acknowledges nothing, so it takes
nothing from the durable consumers and leaves no state behind (the server drops
it once idle). This, not a core subscription, is how a service reads a stream it
does not consume: nobody listens on a stream's own subjects (see
``medbay.common.access``).

``read`` gives the stored messages from a start (a sequence, a time, the last N,
or everything) up to what was last stored when it was called, or keeps
following with ``follow=True``. ``follow`` follows from now on and survives a
NATS restart, resuming after the last message seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from medbay.common.bus import current_task_cancelling, jetstream, wait_for_streams
from medbay.common.streams import StreamSpec

log = logging.getLogger(__name__)


async def read(  # noqa: C901 - every start and end option in one loop
    js: JetStreamContext,
    stream: StreamSpec,
    subject: str | None = None,
    *,
    start_seq: int | None = None,
    since: datetime | None = None,
    last: int | None = None,
    until: datetime | None = None,
    follow: bool = False,
    batch: int = 256,
    idle_seconds: float = 1.0,
    on_nothing_pending: Callable[[], None] | None = None,
) -> AsyncIterator[list[Msg]]:
    """Batches of stored messages on ``subject`` (default: the stream's first subject
    space, its main events; ``">"`` for everything it holds).

    Start at ``start_seq``, at ``since``, at the ``last`` N messages of the stream,
    or (none given) at its first. Stop at the message stored last when called
    (unless ``follow``), or before the first stored after ``until``.
    ``on_nothing_pending`` is called at once if nothing is stored from the start
    on (a reader that waits to be caught up need not wait for a message).
    Raises ``nats.js.errors.NotFoundError`` if the stream does not exist.
    """
    info = await js.stream_info(stream.name)
    end = info.state.last_seq
    if last is not None:
        start_seq = max(info.state.first_seq, end - last + 1, 1)
        if last <= 0:
            return
    if not follow and (info.state.messages == 0 or (start_seq or 0) > end):
        return
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
    if start_seq is not None:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = max(start_seq, info.state.first_seq, 1)
    elif since is not None and (start := _utc(since)) is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = start
    else:
        config.deliver_policy = DeliverPolicy.ALL
    sub = await js.pull_subscribe(subject or stream.subjects[0], stream=stream.name, config=config)
    try:
        if on_nothing_pending is not None and (await sub.consumer_info()).num_pending == 0:
            on_nothing_pending()
        while True:
            msgs: list[Msg] | None
            try:
                msgs = await sub.fetch(batch, timeout=idle_seconds)
            except TimeoutError:  # nats-py raises its own or the built-in one
                msgs = None
            if current_task_cancelling():  # a cancel nats-py's fetch swallowed
                raise asyncio.CancelledError
            if msgs is None:
                if follow:
                    await sub.consumer_info()  # still there? (not after a NATS restart)
                    continue
                return
            kept: list[Msg] = []
            for msg in msgs:
                meta = msg.metadata
                if until is not None and meta.timestamp is not None and meta.timestamp > until:
                    if kept:
                        yield kept
                    return
                if not follow and meta.sequence.stream > end:
                    break
                kept.append(msg)
            if kept:
                yield kept
            if not follow and (
                not msgs
                or msgs[-1].metadata.sequence.stream >= end
                or msgs[-1].metadata.num_pending == 0
            ):
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _utc(moment: datetime) -> datetime | None:
    """``moment`` in UTC; None for a time before the first day (read from the start)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


async def follow(
    broker: NatsBroker,
    stream: StreamSpec,
    subject: str,
    handle: Callable[[Msg], Awaitable[None]],
    *,
    since: datetime | None = None,
    batch: int = 256,
) -> None:
    """Hand every message stored on ``subject`` from now on (or from ``since``) to
    ``handle``, until cancelled.

    Waits for the stream (its owner declares it, maybe later); if the consumer
    disappears (a NATS restart) a new one resumes after the last message seen.
    """
    await wait_for_streams(broker, [stream])
    js = jetstream(broker)
    next_seq: int | None = None
    while True:
        try:
            if next_seq is None and since is None:
                next_seq = (await js.stream_info(stream.name)).state.last_seq + 1
            async for msgs in read(
                js,
                stream,
                subject,
                start_seq=next_seq,
                since=since,  # until the first message: then from next_seq
                follow=True,
                batch=batch,
                idle_seconds=5,
            ):
                for msg in msgs:
                    next_seq = msg.metadata.sequence.stream + 1
                    try:
                        await handle(msg)
                    except Exception:
                        log.exception("handling %s #%d failed", subject, next_seq - 1)
        except (NatsError, TimeoutError) as exc:
            if current_task_cancelling():
                raise
            log.warning("following %s stopped (%r); resuming", subject, exc)
            await asyncio.sleep(1.0)
