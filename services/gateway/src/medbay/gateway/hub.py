"""Live events to WebSocket clients: filters, one bounded queue per client, fan-out.

Broadcasting never waits for a client: an event is put on each matching
client's queue, and a client whose queue is full is dropped (its connection is
closed with ``CLOSE_TOO_SLOW``) so that one slow reader never holds back the
others or grows the gateway's memory. Each event is encoded once for everyone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from medbay.common.events import ALL_EVENTS
from medbay.gateway.auth import Principal

CLOSE_NOT_READY = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4408

EVENT_TYPES: tuple[str, ...] = tuple(str(e.model_fields["type"].default) for e in ALL_EVENTS)
FAMILIES = frozenset(t.split(".")[0] for t in EVENT_TYPES)
MAX_FILTER_ENTRIES = 100
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class FilterError(ValueError):
    """A filter names an unknown event type or an impossible host."""


@dataclass(frozen=True)
class EventFilter:
    """Which events a client wants; an empty set means all of them.

    Types are event types (``issue.opened``) or families (``issue.*``). Events
    without a host (breaker resets, approvals of unknown plans) pass a host
    filter only when it is empty.
    """

    types: frozenset[str] = frozenset()
    families: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, types: Iterable[str], hosts: Iterable[str]) -> EventFilter:
        type_list, host_list = list(types), list(hosts)
        if len(type_list) > MAX_FILTER_ENTRIES or len(host_list) > MAX_FILTER_ENTRIES:
            raise FilterError(f"at most {MAX_FILTER_ENTRIES} types and hosts")
        exact, families = set(), set()
        for name in type_list:
            if name.endswith(".*") and name[:-2] in FAMILIES:
                families.add(name[:-2])
            elif name in EVENT_TYPES:
                exact.add(name)
            else:
                raise FilterError(
                    f"unknown event type {name[:40]!r}; known: {', '.join(EVENT_TYPES)}"
                )
        for host in host_list:
            if not _HOST.match(host):
                raise FilterError(f"{host[:40]!r} is not a host name")
        return cls(frozenset(exact), frozenset(families), frozenset(host_list))

    def matches(self, event_type: str, host: str | None) -> bool:
        if self.hosts and host not in self.hosts:
            return False
        if not self.types and not self.families:
            return True
        return event_type in self.types or event_type.split(".")[0] in self.families

    def describe(self) -> dict[str, list[str]]:
        types = sorted(self.types) + sorted(f"{f}.*" for f in self.families)
        return {"types": types, "hosts": sorted(self.hosts)}


def split_list(values: Iterable[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: query parameters may repeat or use commas."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


class Subscriber:
    _ids = itertools.count(1)

    def __init__(self, principal: Principal, event_filter: EventFilter, queue_size: int) -> None:
        self.id = next(self._ids)
        self.principal = principal
        self.filter = event_filter
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.close_reason: tuple[int, str] | None = None
        self.dropped = asyncio.Event()

    def offer(self, text: str) -> bool:
        """Queue ``text``; False if the queue is full."""
        if self.close_reason is not None:
            return True  # on its way out
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True


class Hub:
    def __init__(self, on_drop: Callable[[Subscriber], None] | None = None) -> None:
        self.subscribers: set[Subscriber] = set()
        self.on_drop = on_drop

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def drop(self, subscriber: Subscriber, code: int, reason: str) -> None:
        """Have the client's connection closed with ``code`` (once)."""
        if subscriber.close_reason is not None:
            return
        subscriber.close_reason = (code, reason)
        subscriber.dropped.set()
        if self.on_drop is not None:
            self.on_drop(subscriber)

    def broadcast(
        self, stream: str, seq: int, event_type: str, host: str | None, raw: bytes
    ) -> None:
        """Offer one stored event (its JSON as stored) to every client that wants it."""
        text: str | None = None
        for subscriber in list(self.subscribers):
            if not subscriber.filter.matches(event_type, host):
                continue
            if text is None:
                text = envelope(stream, seq, event_type, host, raw)
            if not subscriber.offer(text):
                size = subscriber.queue.maxsize
                self.drop(subscriber, CLOSE_TOO_SLOW, f"too slow: {size} events waiting")


def envelope(stream: str, seq: int, event_type: str, host: str | None, raw: bytes) -> str:
    """The message a client receives; the event is embedded as stored, not re-encoded."""
    head = json.dumps(
        {"kind": "event", "stream": stream, "seq": seq, "type": event_type, "host": host}
    )
    return f'{head[:-1]}, "event": {raw.decode()}}}'


class RecentEvents:
    """The latest events read, history and live, as the WebSocket's messages, for a page
    to show before live events arrive (``/api/events``). Metric batches, many and
    frequent, are kept apart in a smaller buffer so that they push no other event out."""

    def __init__(self, size: int, metric_size: int) -> None:
        self._events: deque[tuple[datetime, int, str]] = deque(maxlen=size)
        self._metrics: deque[tuple[datetime, int, str]] = deque(maxlen=metric_size)
        self._order = itertools.count()

    def add(self, at: datetime, text: str, *, metric: bool = False) -> None:
        (self._metrics if metric else self._events).append((at, next(self._order), text))

    def latest(self, limit: int) -> list[str]:
        """The newest ``limit`` messages, oldest first (by event time, then arrival)."""
        merged = sorted([*self._events, *self._metrics])
        return [text for _, _, text in merged[-limit:]]
