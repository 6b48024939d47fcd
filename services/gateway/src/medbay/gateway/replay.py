"""Replaying a recorded time range of a stream into a sandbox subject prefix.

Each stored message is re-published unchanged, with its headers (less the
``Nats-*`` ones), on ``PREFIX.<original subject>`` (the one it was published on:
for METRICS, without the partition it is stored under) as a plain NATS message,
outside every stream: a debugging subscriber can watch a past incident unfold
without the live pipeline seeing anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client
from nats.js import JetStreamContext

from medbay.common.reading import read
from medbay.common.streams import (
    StreamSpec,
    published_subject,
    sandbox_prefix_problem,
    stored_pattern,
)
from medbay.gateway.feeds import WHOLE_STREAM

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
    for subjects in spec.subjects:
        base = subjects.removesuffix(".>").split(".")
        if len(tokens) > len(base) and tokens[: len(base)] == base:
            return None
    return f"not inside the stream's subjects ({', '.join(spec.subjects)})"


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
    """Re-publish the messages stored from ``since`` to ``until`` under ``prefix``: those
    published on ``subject``, or (None) every one of the stream."""
    count = 0
    selected = stored_pattern(subject) if subject else WHOLE_STREAM
    try:
        async for msgs in read(js, spec, selected, since=since, until=until, idle_seconds=2.0):
            for msg in msgs:
                if count >= max_messages:
                    return Replayed(count, True)
                headers = {
                    k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")
                }
                original = published_subject(msg.subject)
                await nc.publish(f"{prefix}.{original}", msg.data, headers=headers or None)
                count += 1
        return Replayed(count, False)
    finally:
        await nc.flush()
