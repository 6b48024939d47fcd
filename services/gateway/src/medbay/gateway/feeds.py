"""Reading a stream's history and then following it, per gateway replica.

Each feed is an ephemeral pull consumer that acknowledges nothing: every
replica has its own, so every replica sees every event, and none takes events
from another. It starts at a point in time (the history the views need) or at
new messages only, reads to the end (``caught_up``) and keeps following. If
the consumer disappears (a NATS restart), a new one resumes after the last
message handled, so nothing is missed or seen twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from medbay.common.streams import StreamSpec

log = logging.getLogger(__name__)

Handler = Callable[[StreamSpec, Msg, bool], None]
"""Called with the stream, the message and whether it is live (not history)."""

_RETRYABLE = (NatsError, TimeoutError)


class StreamFeed:
    def __init__(
        self,
        js: JetStreamContext,
        spec: StreamSpec,
        handle: Handler,
        *,
        since: datetime | None,
        batch: int = 256,
        idle_seconds: float = 5.0,
    ) -> None:
        self.js = js
        self.spec = spec
        self.handle = handle
        self.since = since
        """Read from this time on; None: new messages only."""
        self.batch = batch
        self.idle_seconds = idle_seconds
        self.caught_up = asyncio.Event()
        self.next_seq: int | None = None
        self.handled = 0

    async def run(self) -> None:
        """Follow the stream until cancelled (it must exist)."""
        while True:
            try:
                sub = await self._subscribe()
            except _RETRYABLE as exc:
                log.warning("cannot read %s (%r); retrying", self.spec.name, exc)
                await asyncio.sleep(1.0)
                continue
            try:
                await self._follow(sub)
            except _RETRYABLE as exc:
                log.warning("reading %s stopped (%r); resuming", self.spec.name, exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        if self.next_seq is None and self.since is None:  # new only: from what is last now
            self.next_seq = (await self.js.stream_info(self.spec.name)).state.last_seq + 1
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
        if self.next_seq is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.next_seq
        else:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = self.since
        sub = await self.js.pull_subscribe(
            self.spec.subjects[0], stream=self.spec.name, config=config
        )
        if not self.caught_up.is_set() and (await sub.consumer_info()).num_pending == 0:
            self._caught_up()
        return sub

    async def _follow(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=self.idle_seconds)
            except (NatsTimeoutError, TimeoutError):
                # idle: make sure the consumer is still there (it is not after a NATS restart)
                info = await sub.consumer_info()
                if info.num_pending == 0 and not self.caught_up.is_set():
                    self._caught_up()
                continue
            for msg in msgs:
                meta = msg.metadata
                live = self.caught_up.is_set()
                try:
                    self.handle(self.spec, msg, live)
                except Exception:
                    log.exception("handling %s #%d failed", self.spec.name, meta.sequence.stream)
                self.next_seq = meta.sequence.stream + 1
                self.handled += 1
                if not live and meta.num_pending == 0:
                    self._caught_up()
                if live:  # let the WebSocket senders run between the events of a batch
                    await asyncio.sleep(0)

    def _caught_up(self) -> None:
        log.info("read %d messages of %s; following it", self.handled, self.spec.name)
        self.caught_up.set()
