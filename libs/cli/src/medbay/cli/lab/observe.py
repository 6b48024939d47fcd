"""What the lab sees of Medbay: every issue, plan, step result, plan outcome and alert.

The lab reads the streams as the ``cli`` identity, the way ``medbay events tail``
does (ephemeral consumers that take nothing from the services), and keeps each
event with the moment it was seen on the lab's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from medbay.common.access import inbox_prefix
from medbay.common.events import (
    ALL_EVENTS,
    Event,
    IssueOpened,
    IssueResolved,
    Plan,
    PlanFinished,
)
from medbay.common.reading import read
from medbay.common.streams import APPROVALS, ISSUES, PLANS, PREFIX, RESULTS, StreamSpec

log = logging.getLogger("medbay.lab")
E = TypeVar("E", bound=Event)
CLOSE_SECONDS = 10.0
MODELS: dict[str, type[Event]] = {model.model_fields["type"].default: model for model in ALL_EVENTS}
WATCHED: tuple[tuple[StreamSpec, str], ...] = (
    (ISSUES, f"{PREFIX}.issues.>"),
    (PLANS, f"{PREFIX}.plans.>"),
    (APPROVALS, f"{PREFIX}.approvals.>"),
    (RESULTS, f"{PREFIX}.results.>"),
    (RESULTS, f"{PREFIX}.outcomes.>"),
    (RESULTS, f"{PREFIX}.alerts.>"),
)


@dataclass(frozen=True)
class Seen:
    at: float
    """``time.monotonic()`` when the lab received it."""
    event: Event


@dataclass
class Observer:
    nc: Client
    seen: list[Seen] = field(default_factory=list)
    unreadable: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def connect(cls, url: str, password: str) -> Observer:
        import nats

        nc = await nats.connect(
            url, user="cli", password=password, inbox_prefix=inbox_prefix("cli"), name="medbay-lab"
        )
        return cls(nc)

    async def start(self, timeout: float = 300.0) -> None:
        """Follow every watched stream from now on (waiting for their owners to declare them)."""
        js = self.nc.jetstream()
        deadline = time.monotonic() + timeout
        for spec in {spec.name: spec for spec, _ in WATCHED}.values():
            while True:
                try:
                    await js.stream_info(spec.name)
                    break
                except NotFoundError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"stream {spec.name} was never declared") from None
                    await asyncio.sleep(0.2)
        for spec, subject in WATCHED:
            start = (await js.stream_info(spec.name)).state.last_seq + 1
            self._tasks.append(asyncio.create_task(self._follow(spec, subject, start)))

    async def _follow(self, spec: StreamSpec, subject: str, start: int) -> None:
        """Read ``subject`` from ``start`` on for ever; a broken read resumes where it was."""
        js = self.nc.jetstream()
        next_seq = start
        while True:
            try:
                async for msgs in read(
                    js, spec, subject, start_seq=next_seq, follow=True, idle_seconds=0.5
                ):
                    now = time.monotonic()
                    for msg in msgs:
                        next_seq = msg.metadata.sequence.stream + 1
                        event = self._parse(msg.data)
                        if event is not None:
                            self.seen.append(Seen(now, event))
                    self._changed.set()
            except (NatsError, TimeoutError) as exc:
                log.warning("reading %s stopped (%r); resuming at %d", subject, exc, next_seq)
                await asyncio.sleep(0.5)

    def _parse(self, data: bytes) -> Event | None:
        try:
            kind = json.loads(data).get("type")
            return MODELS[kind].model_validate_json(data)
        except (ValueError, KeyError, AttributeError, ValidationError):
            self.unreadable += 1
            return None

    async def wait_for(self, condition: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``condition()`` is truthy (re-checked at every new event and every
        half second); returns its value, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = condition()
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await self._changed.wait()

    def since(self, start: float, kind: type[E]) -> list[tuple[float, E]]:
        return [(s.at, s.event) for s in self.seen if s.at >= start and isinstance(s.event, kind)]

    def open_issues(self) -> dict[str, IssueOpened]:
        """Issues opened and not yet resolved, by fingerprint."""
        found: dict[str, IssueOpened] = {}
        for s in self.seen:
            if isinstance(s.event, IssueOpened):
                found[s.event.fingerprint] = s.event
            elif isinstance(s.event, IssueResolved):
                found.pop(s.event.fingerprint, None)
        return found

    def plans_running(self) -> set[str]:
        """Plans made and not yet finished."""
        made = {s.event.plan_id for s in self.seen if isinstance(s.event, Plan)}
        done = {s.event.plan_id for s in self.seen if isinstance(s.event, PlanFinished)}
        return made - done

    async def close(self) -> None:
        """Stop following and disconnect. The sandbox is torn down after this, so it never
        waits more than ``CLOSE_SECONDS`` for a reader: closing the connection ends it."""
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        if not all(task.done() for task in self._tasks):
            log.warning("a stream reader did not stop when cancelled; closing its connection")
        with contextlib.suppress(Exception):
            await self.nc.close()
