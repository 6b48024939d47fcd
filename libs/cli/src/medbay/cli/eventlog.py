"""Reading recorded events: time ranges, stream selection and one-line summaries."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from medbay.common.bus import DL_REASON, DL_SEQUENCE, DL_STREAM, DL_SUBJECT
from medbay.common.streams import PREFIX, STREAMS_BY_NAME, StreamSpec, stream_for_subject
from medbay.common.telemetry import trace_id_of

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1d`` (ago) or an ISO 8601 timestamp (UTC if no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use e.g. 10m, 2h, 1d or 2026-01-31T12:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    stream: StreamSpec
    subject: str


def select(target: str | None) -> Selection:
    """A stream name (ISSUES), a subject or subject pattern, or nothing (all issues)."""
    if not target:
        return Selection(STREAMS_BY_NAME["ISSUES"], f"{PREFIX}.issues.>")
    spec = STREAMS_BY_NAME.get(target.upper())
    if spec is not None:
        return Selection(spec, spec.subjects[0])
    spec = stream_for_subject(target)
    if spec is None:
        names = ", ".join(STREAMS_BY_NAME)
        raise ValueError(f"{target!r} is neither a stream ({names}) nor a subject in one")
    return Selection(spec, target)


def trace_id(msg: Msg) -> str:
    return trace_id_of((msg.headers or {}).get("traceparent")) or "-"


def summarize(msg: Msg) -> str:
    """One readable line: time, subject, what happened, trace id."""
    meta = msg.metadata
    stamp = meta.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if meta.timestamp else ""
    headers = msg.headers or {}
    head = f"{stamp} #{meta.sequence.stream} {msg.subject}"
    if DL_REASON in headers:
        return (
            f"{head} rejected {headers.get(DL_STREAM, '?')}#{headers.get(DL_SEQUENCE, '?')} "
            f"({headers.get(DL_SUBJECT, '?')}): {headers[DL_REASON]} trace={trace_id(msg)}"
        )
    try:
        event = json.loads(msg.data)
    except ValueError:
        return f"{head} <{len(msg.data)} bytes, not JSON> trace={trace_id(msg)}"
    if not isinstance(event, dict):
        return f"{head} <JSON {type(event).__name__}> trace={trace_id(msg)}"
    kind = event.get("type", "?")
    if kind == "metric.batch":
        what = f"{event.get('host')}: {len(event.get('samples') or [])} samples"
    elif str(kind).startswith("issue."):
        what = (
            f"{event.get('severity')} {event.get('kind')} on {event.get('host')} "
            f"{event.get('resource')}: {event.get('metric')}={event.get('value')}"
            f" (threshold {event.get('threshold')}, {event.get('detector')})"
        )
    else:
        fields = (f"{k}={v}" for k, v in event.items() if k not in ("type", "timestamp"))
        what = " ".join(fields)[:200]
    return f"{head} {kind} {what} trace={trace_id(msg)}"


async def read_range(
    js: JetStreamContext,
    selection: Selection,
    *,
    since: datetime | None,
    until: datetime | None = None,
    follow: bool = False,
) -> AsyncIterator[Msg]:
    """Recorded messages from ``since`` (or only new ones, when None and following)."""
    if since is None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW if follow else DeliverPolicy.ALL)
    else:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since.astimezone(UTC),
        )
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = 30.0
    try:
        sub = await js.pull_subscribe(
            selection.subject, stream=selection.stream.name, config=config
        )
    except NotFoundError:
        raise SystemExit(
            f"medbay: stream {selection.stream.name} does not exist on this NATS server; it is "
            f"declared when the {selection.stream.owner} first starts (is MEDBAY_NATS_URL right?)"
        ) from None
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                if follow:
                    continue
                return
            for msg in msgs:
                stamp = msg.metadata.timestamp
                if until is not None and stamp is not None and stamp > until:
                    return
                yield msg
            if not follow and msgs and msgs[-1].metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()
