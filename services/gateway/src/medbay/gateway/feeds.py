"""Reading a stream's history and then following it, per gateway replica.

Each feed reads through ``medbay.common.reading.read``: an ephemeral pull
consumer that acknowledges nothing, so every replica has its own, sees every
event, and takes none from another. It starts at a point in time (the history the views need) or at
new messages only, reads to the end (``caught_up``) and keeps following. If
the consumer disappears (a NATS restart), a new one resumes after the last
message handled, so nothing is missed or seen twice. A feed reads every subject
of its stream (``WHOLE_STREAM``): RESULTS holds step results, plan outcomes and
alerts, each under subjects of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from medbay.common.bus import current_task_cancelling
from medbay.common.reading import read
from medbay.common.streams import StreamSpec

log = logging.getLogger(__name__)

Handler = Callable[[StreamSpec, Msg, bool], None]
"""Called with the stream, the message and whether it is live (not history)."""

_RETRYABLE = (NatsError, TimeoutError)

WHOLE_STREAM = ">"
"""The subject filter for everything a stream holds (it holds only its own subjects)."""


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
                await self._follow()
            except _RETRYABLE as exc:
                if current_task_cancelling():
                    raise
                log.warning("reading %s stopped (%r); resuming", self.spec.name, exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        if self.next_seq is None and self.since is None:  # new only: from what is last now
            self.next_seq = (await self.js.stream_info(self.spec.name)).state.last_seq + 1
        start = {"start_seq": self.next_seq} if self.next_seq is not None else {"since": self.since}
        async for msgs in read(
            self.js,
            self.spec,
            WHOLE_STREAM,
            follow=True,
            batch=self.batch,
            idle_seconds=self.idle_seconds,
            on_nothing_pending=None if self.caught_up.is_set() else self._caught_up,
            **start,
        ):
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
