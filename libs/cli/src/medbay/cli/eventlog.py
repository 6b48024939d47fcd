"""Reading recorded events: time ranges, stream selection, and each event as one
readable line (or one JSON object, for scripts).

Imported when a command runs (it needs nats and the event catalogue), never to
build the parsers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from medbay.common.bus import DL_REASON, DL_SEQUENCE, DL_STREAM, DL_SUBJECT
from medbay.common.reading import read
from medbay.common.streams import (
    STREAMS_BY_NAME,
    StreamSpec,
    stored_pattern,
    stream_for_subject,
)
from medbay.common.telemetry import trace_id_of

Getter = Callable[[str], Any]
"""An event's ``dict.get``."""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
FALLBACK_WIDTH = 200
"""An event of a type without its own line is shown as key=value, cut at this width."""
WHOLE_STREAM = ">"
"""The subject filter for everything a stream holds (RESULTS holds step results, plan
ends and alerts, each under subjects of their own)."""


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


def parse_range(
    since: str | None, until: str | None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """``--since`` and ``--until`` as times; ValueError naming both if reversed."""
    now = now or datetime.now(UTC)
    start = parse_time(since, now) if since else None
    end = parse_time(until, now) if until else None
    if start is not None and end is not None and end < start:
        raise ValueError(
            f"--until {until} ({show_time(end)}) is before --since {since} "
            f"({show_time(start)}): the range is reversed"
        )
    return start, end


def show_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class Selection:
    stream: StreamSpec
    subject: str

    def describe(self) -> str:
        if self.subject == WHOLE_STREAM:
            return self.stream.name
        return f"{self.subject} ({self.stream.name})"


def select(target: str | None) -> Selection:
    """A stream name (all it holds), a subject or subject pattern, or nothing (ISSUES).
    A subject is the one events are published on; METRICS stores a host's batches
    under its partition, which the selection then covers (``stored_pattern``)."""
    target = target or "ISSUES"
    spec = STREAMS_BY_NAME.get(target.upper())
    if spec is not None:
        return Selection(spec, WHOLE_STREAM)
    spec = stream_for_subject(target)
    if spec is None:
        names = ", ".join(STREAMS_BY_NAME)
        raise ValueError(f"{target!r} is neither a stream ({names}) nor a subject in one")
    return Selection(spec, stored_pattern(target))


def trace_id(msg: Msg) -> str:
    return trace_id_of((msg.headers or {}).get("traceparent")) or "-"


def _num(value: Any) -> str:
    return (
        f"{value:g}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def _first_line(text: Any, width: int = 160) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _because(reason: Any) -> str:
    text = _first_line(reason)
    return f": {text}" if text else ""


def _metric_batch(get: Getter) -> str:
    samples = get("samples")
    if isinstance(samples, dict):  # version 2: columns, one name per sample
        samples = samples.get("names")
    count = len(samples) if isinstance(samples, list) else 0
    return f"metric.batch {get('host')}: {count} samples"


def _issue(get: Getter) -> str:
    threshold = get("threshold")
    limit = f"threshold {_num(threshold)}, " if threshold is not None else ""
    detail = _first_line(get("detail"))
    return (
        f"{get('type')} {get('severity')} {get('kind')} on {get('host')} {get('resource')}: "
        f"{get('metric')}={_num(get('value'))} ({limit}{get('detector')})"
    ) + (f" | {detail}" if detail else "")


def _plan(get: Getter) -> str:
    steps = ", then ".join(
        f"{s.get('action')} {s.get('target')}" for s in get("steps") or [] if isinstance(s, dict)
    )
    confidence = get("confidence")
    conf = f"{confidence:.2f}" if isinstance(confidence, int | float) else str(confidence)
    approval = "needs approval" if get("requires_approval") else "no approval needed"
    why = _first_line(get("reason"), 120)
    return (
        f"plan {get('plan_id')} for {get('issue_kind')} on {get('host')}: {steps} "
        f"(confidence {conf}, risk {get('risk')}, {approval}{': ' + why if why else ''})"
    )


def _result(get: Getter) -> str:
    index = get("step_index")
    step = index + 1 if isinstance(index, int) else index
    if get("status") == "started":
        state = "started"
    else:
        state = str(get("outcome") or "finished").replace("_", "-")
        verified = get("verified")
        if verified is not None:
            state += ", verified" if verified else ", not verified"
    dry = " (dry-run)" if get("dry_run") else ""
    out = _first_line(get("output"))
    return f"step {step} {get('action')} {get('target')} on {get('host')}: {state}{dry}" + (
        f" | {out}" if out else ""
    )


def _plan_finished(get: Getter) -> str:
    steps = get("steps_run")
    how = [f"{steps} step{'' if steps == 1 else 's'} run"]
    if get("escalated"):
        how.append("a person alerted")
    if get("dry_run") and get("outcome") != "dry_run":
        how.append("dry-run")
    return (
        f"plan {get('plan_id')} for {get('issue_kind')} on {get('host')} ended "
        f"{get('outcome')} ({', '.join(how)}){_because(get('detail'))}"
    )


def _alert(get: Getter) -> str:
    return (
        f"alert {get('alert_id')} to {get('target')} for plan {get('plan_id')} "
        f"({get('issue_kind')} on {get('host')}){_because(get('message'))}"
    )


def _approval(get: Getter) -> str:
    return (
        f"{get('decision')} plan {get('plan_id')} by {get('decided_by')} "
        f"({get('channel')}){_because(get('reason'))}"
    )


def _request(get: Getter) -> str:
    return (
        f"request {get('action')} {get('target')} on {get('host')} by "
        f"{get('requested_by')} ({get('channel')}){_because(get('reason'))}"
    )


def _breaker_reset(get: Getter) -> str:
    return f"breaker reset for {get('target')} by {get('reset_by')} ({get('channel')})"


DESCRIBERS: dict[str, Callable[[Getter], str]] = {
    "metric.batch": _metric_batch,
    "issue.opened": _issue,
    "issue.updated": _issue,
    "issue.resolved": _issue,
    "plan.created": _plan,
    "action.result": _result,
    "plan.finished": _plan_finished,
    "alert.raised": _alert,
    "plan.approval": _approval,
    "action.requested": _request,
    "breaker.reset": _breaker_reset,
}
"""Each event type's line, by its ``type``."""


def describe(event: dict[str, Any]) -> str:
    """What one event says, in words (without time, subject or trace)."""
    kind = str(event.get("type", "?"))
    line = DESCRIBERS.get(kind)
    if line is not None:
        return line(event.get)
    fields = (f"{k}={v}" for k, v in event.items() if k not in ("type", "timestamp"))
    return f"{kind} " + " ".join(fields)[:FALLBACK_WIDTH]


def summarize(msg: Msg) -> str:
    """One readable line: time, sequence, subject, what happened, trace id."""
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
    return f"{head} {describe(event)} trace={trace_id(msg)}"


def as_json(msg: Msg) -> str:
    """One JSON object: the event's fields, plus subject, stream, seq and trace_id.

    A dead letter gives its payload as ``data`` (text) and why it was rejected as
    ``rejected``; a payload that is not a JSON object is given as ``data`` too.
    """
    meta = msg.metadata
    headers = msg.headers or {}
    try:
        event = json.loads(msg.data)
    except ValueError:
        event = None
    body: dict[str, Any] = (
        dict(event)
        if isinstance(event, dict) and DL_REASON not in headers
        else {"data": msg.data.decode(errors="replace")}
    )
    if DL_REASON in headers:
        body["rejected"] = {
            "reason": headers[DL_REASON],
            "stream": headers.get(DL_STREAM),
            "seq": headers.get(DL_SEQUENCE),
            "subject": headers.get(DL_SUBJECT),
        }
    body.update(
        subject=msg.subject,
        stream=meta.stream,
        seq=meta.sequence.stream,
        stored_at=meta.timestamp.astimezone(UTC).isoformat() if meta.timestamp else None,
        trace_id=trace_id_of(headers.get("traceparent")),
    )
    return json.dumps(body, default=str)


async def read_range(
    js: JetStreamContext,
    selection: Selection,
    *,
    since: datetime | None,
    until: datetime | None = None,
    follow: bool = False,
) -> AsyncIterator[Msg]:
    """Recorded messages from ``since`` (from the first, or with ``follow`` only new
    ones, when None), up to ``until``; read without consuming anything."""
    start_seq: int | None = None
    try:
        if since is None and follow:
            start_seq = (await js.stream_info(selection.stream.name)).state.last_seq + 1
        # a generator: closed here, before the caller closes the connection
        batches = cast(
            AsyncGenerator[list[Msg], None],
            read(
                js,
                selection.stream,
                selection.subject,
                start_seq=start_seq,
                since=since,
                until=until,
                follow=follow,
            ),
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for msg in batch:
                    yield msg
    except NotFoundError:
        raise SystemExit(
            f"medbay: stream {selection.stream.name} does not exist on this NATS server; it is "
            f"declared when the {selection.stream.owner} first starts (is it the right server?)"
        ) from None
