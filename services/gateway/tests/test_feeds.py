"""A feed reads a stream's history, then follows it, across a NATS restart: every
message is handled once, in order, and history and live are told apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.msg import Msg

from conftest import NatsServer
from medbay.common.streams import ISSUES, StreamSpec
from medbay.gateway.feeds import StreamFeed


async def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_history_then_live_across_a_nats_restart(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await js.add_stream(config=ISSUES.declaration())
    for n in range(3):
        await js.publish(f"medbay.issues.opened.h{n}", b"{}", stream=ISSUES.name)
    seen: list[tuple[int, bool]] = []

    def handle(spec: StreamSpec, msg: Msg, live: bool) -> None:
        seen.append((msg.metadata.sequence.stream, live))

    since = datetime.now(UTC) - timedelta(hours=1)
    feed = StreamFeed(js, ISSUES, handle, since=since, idle_seconds=0.5)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.caught_up.wait(), 10)
        assert seen == [(1, False), (2, False), (3, False)]
        await js.publish("medbay.issues.opened.h3", b"{}", stream=ISSUES.name)
        await wait_until(lambda: len(seen) == 4)

        nats_server.stop()  # the ephemeral consumer is gone with it
        nats_server.start()
        await wait_until(lambda: nc.is_connected)
        for n in range(4, 6):  # JetStream takes a moment to come back after the restart
            for _ in range(20):
                try:
                    subject, once = f"medbay.issues.opened.h{n}", {"Nats-Msg-Id": f"m{n}"}
                    await js.publish(subject, b"{}", stream=ISSUES.name, headers=once)
                    break
                except (TimeoutError, nats.errors.Error):
                    await asyncio.sleep(0.5)
        await wait_until(lambda: len(seen) == 6)
        assert seen[3:] == [(4, True), (5, True), (6, True)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()


async def test_an_empty_stream_is_caught_up_at_once(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=ISSUES.declaration())
    feed = StreamFeed(js, ISSUES, lambda *_: None, since=datetime.now(UTC), idle_seconds=30)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.caught_up.wait(), 5)  # not after the 30 s idle wait
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()
