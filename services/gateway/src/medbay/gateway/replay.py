"""Replaying a recorded time range of a stream into a sandbox subject prefix.

Each stored message is re-published unchanged, with its headers (less the
``Nats-*`` ones), on ``PREFIX.<original subject>`` as a plain NATS message,
outside every stream: a debugging subscriber can watch a past incident unfold
without the live pipeline seeing anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from medbay.common.streams import StreamSpec, sandbox_prefix_problem

_TOKEN = r"[A-Za-z0-9_-]+"
_PATTERN_TOKEN = re.compile(rf"^({_TOKEN}|\*|>)$")


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a sandbox prefix (None: it can)."""
    return sandbox_prefix_problem(prefix)


def subject_problem(pattern: str, spec: StreamSpec) -> str | None:
    """Why ``pattern`` cannot select messages of ``spec``'s stream (None: it can)."""
    tokens = pattern.split(".")
    if not all(_PATTERN_TOKEN.match(t) for t in tokens) or ">" in tokens[:-1]:
        return "not a NATS subject pattern"
    base = spec.subjects[0].removesuffix(".>").split(".")
    if len(tokens) <= len(base) or tokens[: len(base)] != base:
        return f"not inside the stream's subjects ({spec.subjects[0]})"
    return None


@dataclass(frozen=True)
class Replayed:
    count: int
    truncated: bool


async def replay_range(
    nc: Client,
    js: JetStreamContext,
    spec: StreamSpec,
    *,
    since: datetime,
    until: datetime,
    subject: str | None,
    prefix: str,
    max_messages: int,
) -> Replayed:
    """Re-publish the messages stored from ``since`` to ``until`` under ``prefix``."""
    sub = await js.pull_subscribe(
        subject or spec.subjects[0],
        stream=spec.name,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since.astimezone(UTC),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
        ),
    )
    count = 0
    try:
        if (await sub.consumer_info()).num_pending == 0:
            return Replayed(0, False)
        while True:
            try:
                msgs = await sub.fetch(256, timeout=2.0)
            except (NatsTimeoutError, TimeoutError):
                return Replayed(count, False)
            for msg in msgs:
                stamp = msg.metadata.timestamp
                if stamp is not None and stamp > until:
                    return Replayed(count, False)
                if count >= max_messages:
                    return Replayed(count, True)
                headers = {
                    k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")
                }
                await nc.publish(f"{prefix}.{msg.subject}", msg.data, headers=headers or None)
                count += 1
            if msgs[-1].metadata.num_pending == 0:
                return Replayed(count, False)
    finally:
        await nc.flush()
        await sub.unsubscribe()
