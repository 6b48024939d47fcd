"""Small helpers for tests that start real servers (imported by the root conftest too)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def headers(msg: Msg) -> dict[str, str]:
    """The headers of ``msg``, which has some (Medbay's events and dead letters do)."""
    assert msg.headers is not None, f"no headers on {msg.subject}"
    return msg.headers


STREAM_OF_TYPE = {
    "metric": "METRICS",
    "issue": "ISSUES",
    "plan.created": "PLANS",
    "plan.approval": "APPROVALS",
    "plan.finished": "RESULTS",
    "alert.raised": "RESULTS",
    "action.result": "RESULTS",
    "action.requested": "REQUESTS",
    "breaker": "AUDIT",
}


class StreamWatch:
    """Events stored from now on, read as a Medbay reader reads them: through an
    ephemeral JetStream consumer per stream (on a secured server nobody may
    subscribe to a stream's subjects)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.subs: dict[str, JetStreamContext.PullSubscription] = {}

    async def open(self, *streams: str) -> StreamWatch:
        for stream in streams:
            self.subs[stream] = await self.js.pull_subscribe(
                "medbay.>",
                stream=stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=300,  # a test may wait a while between fetches
                ),
            )
        return self

    async def next_event(
        self, event_type: str, deadline: float, **match: object
    ) -> tuple[dict[str, Any], Msg]:
        """The next ``event_type`` event whose fields equal ``match``, and its message."""
        stream = next(s for p, s in STREAM_OF_TYPE.items() if event_type.startswith(p))
        sub = self.subs[stream]
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except TimeoutError:
                continue
            for msg in msgs:
                event: dict[str, Any] = json.loads(msg.data)
                if event["type"] == event_type and all(event.get(k) == v for k, v in match.items()):
                    return event, msg
        raise AssertionError(f"no {event_type} {match} before the deadline")


async def wait_for(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 90.0) -> Any:
    """Poll ``check`` until it gives something true; an error (a NATS node away, a service
    starting) counts as not yet. Fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await check()
        except Exception:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        await asyncio.sleep(0.2)
