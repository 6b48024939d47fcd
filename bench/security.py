"""Attacks on a running Medbay: each identity may do only what it owns, and no input
breaks a service.

``medbay bench security [--data-dir .medbay] [--nats-url URL] [--gateway-url URL]``
runs against a RUNNING ``medbay up``: it reads the NATS passwords from
``<data-dir>/nats/<identity>.password``, the gateway's viewer token from
``<data-dir>/gateway-viewer-token``, and where NATS, the gateway and the detector's
health port are from ``<data-dir>/up.json`` (the URLs given override it; with neither,
``medbay up``'s defaults). An attacker
holding an identity's password is that service compromised or misused; the
question each attack asks is whether that identity can do more than it owns.

Each attack prints ``refused`` or ``ACCEPTED`` and how it was refused (the server's
permission violation, a dead letter and its reason, an HTTP status and how long it
took, a plan held for approval), then a summary line; the exit status is 1 if any
attack was accepted (or could not be run). The figures are also written to
``bench/results/security-<timestamp>.json``.

Everything the attacks leave is unique to the run (hosts ``bench-sec-<run>``,
plan ids ``bsec-<run>-...``), and they clean up what they can: the held plan is
rejected as the CLI, the pickled "model" is deleted, the re-routing consumer is
removed. The attacks never touch the executor's own consumer or records unless an
earlier, harmless step of the same attack showed the door open; they change no
``current_model``. What stays is what the system itself keeps: the messages in
their streams and the dead letters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pickle
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, NotFoundError
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from medbay.cli import upfile
from medbay.cli.bench import load
from medbay.common.access import EXECUTOR_PLANS, EXECUTOR_RAILS, MODELS, PLAN_BOOK, inbox_prefix
from medbay.common.bus import DL_REASON, DL_SERVICE, DL_SUBJECT, DL_TRUNCATED, event_headers
from medbay.common.events import Approval, MetricBatch, MetricSample, Plan, PlanStep
from medbay.common.records import PlanRecord, read_plan, target_key
from medbay.common.settings import DEFAULT_HTTP_PORTS
from medbay.common.streams import (
    APPROVALS,
    DEADLETTER,
    METRICS,
    PLANS,
    PREFIX,
    REQUESTS,
    RESULTS,
    metrics_subject,
    published_subject,
    subject_for,
)
from medbay.planner.modelfile import RefusedModel
from medbay.planner.store import ModelStore

harness = load("harness")

Verdict = tuple[bool, str]
"""(refused, how)."""

BIG_METRICS = 1024 * 1024 - 4096
"""As large as the server takes (1 MiB max payload), headers included."""
BIG_POST = 30 * 1024 * 1024


class BenchError(Exception):
    """The attack could not be carried out (not a verdict)."""


def short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def body(msg: Msg) -> dict[str, Any]:
    """A message's JSON object, or {} if it is not one (json reads NaN as Python does)."""
    try:
        value = json.loads(msg.data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Tail:
    """Messages a stream stores from now on, read through a consumer of our own."""

    def __init__(self, nc: Client, stream: str, name: str, sub: Any) -> None:
        self.nc, self.stream, self.name, self.sub = nc, stream, name, sub
        self.seen: list[Msg] = []

    @classmethod
    async def open(cls, nc: Client, stream: str, subject: str, name: str) -> Tail:
        sub = await nc.jetstream().pull_subscribe(
            subject,
            stream=stream,
            config=ConsumerConfig(
                name=name,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=120.0,  # gone by itself should we not delete it
            ),
        )
        return cls(nc, stream, name, sub)

    async def find(self, match: Callable[[Msg], bool], timeout: float) -> Msg | None:
        """The first message (seen before or arriving within ``timeout``) that matches."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for msg in self.seen[checked:]:
                if match(msg):
                    return msg
            checked = len(self.seen)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self.seen += await self.sub.fetch(100, timeout=min(1.0, max(0.1, left)))
            except TimeoutError:
                continue

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.nc.jetstream().delete_consumer(self.stream, self.name)


def dead_letter_of(subject: str, service: str, **fields: Any) -> Callable[[Msg], bool]:
    """Matches the dead letter ``service`` made of a message published on ``subject``
    (a METRICS message is stored, and dead-lettered, under its partition)."""

    def match(msg: Msg) -> bool:
        headers = msg.headers or {}
        stored = published_subject(headers.get(DL_SUBJECT, ""))
        if stored != subject or headers.get(DL_SERVICE) != service:
            return False
        return not fields or all(body(msg).get(k) == v for k, v in fields.items())

    return match


class Bench:
    """The running Medbay under attack, and a NATS connection per identity used."""

    def __init__(self, data_dir: Path, nats_url: str, gateway_url: str, detector_port: int) -> None:
        self.data_dir = data_dir
        self.detector_port = detector_port
        self.nats_url = nats_url
        self.gateway_url = gateway_url.rstrip("/")
        split = urlsplit(self.gateway_url)
        self.http_host = split.hostname or "127.0.0.1"
        self.gateway_port = split.port or (443 if split.scheme == "https" else 80)
        self.run = f"{datetime.now(UTC):%H%M%S}{secrets.token_hex(3)}"
        self.host = f"bench-sec-{self.run}"
        self.clients: dict[str, Client] = {}
        self.errors: dict[str, list[str]] = {}
        self.tails: dict[str, Tail] = {}

    # --- NATS -------------------------------------------------------------------------

    def password(self, identity: str) -> str:
        path = self.data_dir / "nats" / f"{identity}.password"
        if not path.exists():
            raise BenchError(f"no {path}: point --data-dir at a running `medbay up`'s data")
        return path.read_text(encoding="utf-8").strip()

    async def nc(self, identity: str) -> Client:
        """A connection as ``identity`` (one per identity, reopened if it was closed)."""
        client = self.clients.get(identity)
        if client is not None and not client.is_closed:
            return client
        errors = self.errors.setdefault(identity, [])

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        self.clients[identity] = await nats.connect(
            self.nats_url,
            user=identity,
            password=self.password(identity),
            inbox_prefix=inbox_prefix(identity),
            name=f"medbay-bench-security-{identity}",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            error_cb=on_error,
        )
        return self.clients[identity]

    async def open(self) -> None:
        cli = await self.nc("cli")
        for spec in (DEADLETTER, RESULTS):
            name = f"bsec-{self.run}-{spec.name.lower()}"
            self.tails[spec.name] = await Tail.open(cli, spec.name, spec.subjects[0], name)

    async def close(self) -> None:
        for tail in self.tails.values():
            await tail.close()
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()

    async def violation(self, identity: str, mark: int, wait: float = 0.5) -> str | None:
        """The permission violation the server reported to ``identity`` after ``mark``."""
        deadline = time.monotonic() + wait
        while True:
            for error in self.errors.get(identity, [])[mark:]:
                if "permissions violation" in error.lower():
                    return error
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)

    async def attempt(
        self, identity: str, action: Callable[[], Awaitable[Any]], timeout: float = 2.0
    ) -> tuple[bool, str]:
        """Run ``action`` as ``identity``: (refused, how). Refused when it got no answer
        (a refused JetStream publish shows as no PubAck) or an error."""
        await self.nc(identity)
        mark = len(self.errors.get(identity, []))
        try:
            async with asyncio.timeout(timeout):
                await action()
        except (TimeoutError, nats.errors.Error) as exc:
            if await self.violation(identity, mark):
                return True, "server: permission violation"
            if isinstance(exc, nats.errors.NoRespondersError):  # e.g. no such stream
                raise BenchError(f"no responders: {exc!r}") from exc
            return True, f"no answer in {timeout:g} s ({type(exc).__name__})"
        return False, "the server took it"

    async def publish(
        self,
        identity: str,
        subject: str,
        data: bytes,
        stream: str,
        headers: dict[str, str] | None = None,
        timeout: float = 1.0,
    ) -> tuple[bool, str]:
        """A JetStream publish as ``identity``: (refused, how)."""
        nc = await self.nc(identity)
        return await self.attempt(
            identity,
            lambda: nc.jetstream().publish(
                subject, data, stream=stream, headers=headers, timeout=timeout
            ),
            timeout + 0.5,
        )

    async def must_publish(
        self, identity: str, subject: str, data: bytes, stream: str, **headers: str
    ) -> None:
        """A publish ``identity`` is allowed to make; BenchError if it was not stored."""
        nc = await self.nc(identity)
        try:
            await nc.jetstream().publish(
                subject, data, stream=stream, headers=headers or None, timeout=5
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise BenchError(f"{identity} could not publish on {subject}: {exc!r}") from exc

    async def dead_letter(self, match: Callable[[Msg], bool], timeout: float = 20) -> Msg | None:
        return await self.tails[DEADLETTER.name].find(match, timeout)

    async def plan_record(self, plan_id: str) -> PlanRecord | None:
        """The executor's plan-book record of ``plan_id``, read as the CLI."""
        book = await (await self.nc("cli")).jetstream().key_value(PLAN_BOOK.name)
        record, _ = await read_plan(book, plan_id)
        return record

    async def wait_plan(
        self, plan_id: str, done: Callable[[PlanRecord], bool], timeout: float
    ) -> PlanRecord | None:
        deadline = time.monotonic() + timeout
        record = None
        while time.monotonic() < deadline:
            record = await self.plan_record(plan_id)
            if record is not None and done(record):
                return record
            await asyncio.sleep(0.2)
        return record

    # --- what the attacks send ------------------------------------------------------------

    def id(self, what: str) -> str:
        return f"bsec-{self.run}-{what}"[:64]

    def hostname(self, what: str) -> str:
        """A host of this run's own, one per attack: no attack sees another's messages."""
        return f"{self.host}-{what}"

    def plan(self, what: str, **changes: Any) -> Plan:
        """A plan for a host of its own; its one step restarts a target nobody has."""
        fields: dict[str, Any] = {
            "plan_id": self.id(what),
            "issue_fingerprint": f"bench-security-{self.run}",
            "issue_event_id": self.id(what),
            "host": self.hostname(what),
            "issue_kind": "service_down",
            "metric": "service_up",
            "value": 0.0,
            "threshold": 1.0,
            "severity": "critical",
            "steps": [
                PlanStep(
                    action="restart_service",
                    target=f"{self.hostname(what)}-nothing",
                    risk="low",
                    estimated_seconds=5,
                )
            ],
            "confidence": 0.95,
            "risk": "low",
            "estimated_seconds": 5,
            "requires_approval": False,
            "reason": "medbay bench security",
            "model_version": "rules-v1",
        }
        return Plan(**{**fields, **changes})

    # --- HTTP -------------------------------------------------------------------------------

    def viewer_token(self) -> str:
        path = self.data_dir / "gateway-viewer-token"
        if not path.exists():
            raise BenchError(f"no {path}: point --data-dir at a running `medbay up`'s data")
        return path.read_text(encoding="utf-8").strip()

    async def healthy(self, port: int) -> int | None:
        """The status of ``/healthz`` on ``port`` of the gateway's host (None: no answer)."""
        url = f"http://{self.http_host}:{port}/healthz"
        try:
            async with httpx.AsyncClient(timeout=3) as http:
                return (await http.get(url)).status_code
        except httpx.HTTPError:
            return None


# --- the attacks --------------------------------------------------------------------------


async def anonymous_connect(b: Bench) -> Verdict:
    async def quiet(_: Exception) -> None:
        pass

    try:
        nc = await nats.connect(
            b.nats_url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            error_cb=quiet,
        )
    except Exception as exc:
        if "authorization" in f"{exc!r} {exc}".lower():
            return True, "server: authorization violation"
        raise BenchError(f"could not reach NATS: {exc!r}") from exc
    await nc.close()
    return False, "connected with no credentials"


async def gateway_publishes_plan(b: Bench) -> Verdict:
    forged = b.plan("gw-plan")
    refused, how = await b.publish(
        "gateway", subject_for(forged), forged.model_dump_json().encode(), PLANS.name
    )
    return refused, f"{how}, nothing stored in PLANS" if refused else "stored in PLANS"


async def gateway_forges_telegram_approval(b: Bench) -> Verdict:
    approval = Approval(
        plan_id=b.id("tg"), decision="approve", decided_by="the-boss", channel="telegram"
    )
    refused, how = await b.publish(
        "gateway", subject_for(approval), approval.model_dump_json().encode(), APPROVALS.name
    )
    return refused, f"{how}, nothing stored" if refused else "stored in APPROVALS"


async def telegram_claim_on_gateway_subject(b: Bench) -> Verdict:
    plan_id = b.id("claim")
    claim = Approval(plan_id=plan_id, decision="approve", decided_by="the-boss", channel="telegram")
    subject = f"{PREFIX}.approvals.gateway.{plan_id}"
    refused, how = await b.publish(
        "gateway", subject, claim.model_dump_json().encode(), APPROVALS.name
    )
    if refused:  # not even stored: refused all the same
        return True, how
    letter = await b.dead_letter(dead_letter_of(subject, "executor"))
    record = await b.plan_record(plan_id)
    counted = record is not None and record.state != "pending"
    if letter is None:
        seen = f"plan book: {record.state} by {record.decided_by}" if record else "no record"
        return False, f"not dead-lettered by the executor in 20 s ({seen})"
    reason = (letter.headers or {}).get(DL_REASON, "").replace(plan_id, "<id>")
    if counted:
        assert record is not None
        return False, f"dead-lettered, yet the plan book says {record.state} by {record.decided_by}"
    return True, f"dead-lettered by executor: {short(reason, 110)}; plan book: no approval"


async def high_risk_plan_held(b: Bench) -> Verdict:
    forged = b.plan(
        "held",
        steps=[
            PlanStep(
                action="kill_process", target=f"{b.host}-held", risk="low", estimated_seconds=5
            )
        ],
        risk="low",
        requires_approval=False,
    )
    plan_id = forged.plan_id
    await b.must_publish(
        "planner",
        subject_for(forged),
        forged.model_dump_json().encode(),
        PLANS.name,
        **event_headers(forged),
    )
    try:
        record = await b.wait_plan(plan_id, lambda r: r.plan is not None, 20)
        if record is None:
            raise BenchError(f"the executor recorded nothing about plan {plan_id} in 20 s")
        result = await b.tails[RESULTS.name].find(lambda m: body(m).get("plan_id") == plan_id, 2.0)
        if result is not None:
            return False, f"the executor ran it: action.result {body(result).get('status')}"
        if record.state != "pending":
            return False, f"plan book: {record.state}, not held"
        why = record.approval_reasons[0] if record.approval_reasons else "no reason given"
        return True, f"held for approval ({short(why, 60)}); no action.result"
    finally:  # nothing left pending: the operator rejects it
        reject = Approval(
            plan_id=plan_id,
            decision="reject",
            decided_by="medbay-bench-security",
            channel="cli",
            reason="cleaning up after medbay bench security",
        )
        await b.must_publish(
            "cli", subject_for(reject), reject.model_dump_json().encode(), APPROVALS.name
        )
        await b.wait_plan(plan_id, lambda r: r.state == "rejected", 10)


async def gateway_writes_executor_kv(b: Bench) -> Verdict:
    js = (await b.nc("gateway")).jetstream()
    rails = await js.key_value(EXECUTOR_RAILS.name)
    book = await js.key_value(PLAN_BOOK.name)
    breaker_key = target_key(f"{b.host}-target")  # a breaker "reset" for a target of our own
    plan_id = b.id("kv")
    record = PlanRecord(state="approved", decided_by="the-boss", channel="telegram")
    results = [
        await b.attempt("gateway", lambda: rails.put(breaker_key, b"{}")),
        await b.attempt(
            "gateway", lambda: book.put(f"plans.{plan_id}", record.model_dump_json().encode())
        ),
    ]
    cli = (await b.nc("cli")).jetstream()
    written = []
    with contextlib.suppress(KeyNotFoundError):
        await (await cli.key_value(EXECUTOR_RAILS.name)).get(breaker_key)
        written.append(EXECUTOR_RAILS.name)
    if await b.plan_record(plan_id) is not None:
        written.append(PLAN_BOOK.name)
    if written:  # put things back as they were, as far as we can
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await rails.delete(breaker_key)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await book.delete(f"plans.{plan_id}")
        return False, f"written: {', '.join(written)}"
    hows = sorted({how for _, how in results})
    return all(r for r, _ in results), f"{'; '.join(hows)} (both buckets); nothing written"


async def others_write_models(b: Bench) -> Verdict:
    name = f"bsec-{b.run}-evil"
    refused_by: list[str] = []
    accepted_by: list[str] = []
    hows: set[str] = set()
    for identity in ("gateway", "executor", "cli"):
        objects = await (await b.nc(identity)).jetstream().object_store(MODELS.name)
        refused, how = await b.attempt(identity, partial(objects.put, name, b"\x80\x04evil"))
        (refused_by if refused else accepted_by).append(identity)
        hows.add(how)
        if not refused:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await objects.delete(name)
    if accepted_by:
        return False, f"stored by {', '.join(accepted_by)}"
    return True, f"{'; '.join(sorted(hows))} for {', '.join(refused_by)}"


class _Trap:
    """Unpickled, it opens (creates) a file: a stand-in for any code a pickle can run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _unpickle_creates(blob: bytes, marker: Path) -> bool:
    """Whether unpickling ``blob`` creates ``marker`` (the control: the trap is live)."""
    opened = pickle.loads(blob)
    opened.close()
    created = marker.exists()
    marker.unlink(missing_ok=True)
    return created


async def pickled_model(b: Bench) -> Verdict:
    name = f"bsec-{b.run}-pickle"
    with tempfile.TemporaryDirectory(prefix="medbay-bench-security-") as tmp:
        marker = Path(tmp) / "pwned"
        blob = pickle.dumps(_Trap(str(marker)))
        store = await ModelStore.open((await b.nc("planner")).jetstream())
        await store.objects.put(name, blob)
        try:
            try:  # the planner's own loader, as the planner
                await store.load(name)
            except RefusedModel as exc:
                refusal = str(exc).replace(name, "<name>")
            else:
                return False, "the planner's loader took it as a model"
            if await asyncio.to_thread(marker.exists):
                return False, f"the planner's loader ran its code ({refusal})"
            live = await asyncio.to_thread(_unpickle_creates, blob, marker)
        finally:
            async with asyncio.timeout(5):
                await store.objects.delete(name)
    control = "pickle.loads of it does" if live else "control: the trap is inert"
    return True, f"{short(refusal, 70)}; no file created ({control}); object deleted"


async def raw_request(nc: Client, subject: str, payload: bytes, timeout: float) -> Msg:
    """Any answer on an inbox of our own: a consumer delivers a message under its
    stream subject, which ``nc.request`` would not route back to us."""
    sub = await nc.subscribe(nc.new_inbox(), max_msgs=1)
    try:
        await nc.publish(subject, payload, reply=sub.subject)
        return await sub.next_msg(timeout)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def gateway_takes_executor_consumer(b: Bench) -> Verdict:
    gateway = await b.nc("gateway")
    stream, name = PLANS.name, EXECUTOR_PLANS.name
    info = await gateway.request(f"$JS.API.CONSUMER.INFO.{stream}.{name}", b"", timeout=2)
    config = json.loads(info.data).get("config")
    if not config:
        raise BenchError(f"no consumer {stream}/{name}: is the executor running?")
    # "create" with the consumer's own config: a no-op even if the server allowed it
    same = json.dumps({"stream_name": stream, "config": config, "action": "create"}).encode()
    api = "$JS.API.CONSUMER"
    attempts = [
        ("fetch", f"{api}.MSG.NEXT.{stream}.{name}", b'{"batch": 1, "no_wait": true}'),
        ("redefine", f"{api}.CREATE.{stream}.{name}", same),
        ("redefine (durable API)", f"{api}.DURABLE.CREATE.{stream}.{name}", same),
        ("delete", f"{api}.DELETE.{stream}.{name}", b""),
    ]
    refused_steps: list[str] = []
    hows: set[str] = set()
    for step, subject, payload in attempts:
        refused, how = await b.attempt(
            "gateway", partial(raw_request, gateway, subject, payload, 1.0), 1.5
        )
        if not refused:  # the rest (delete) would break the executor: stop here
            return False, f"{step} answered: the gateway may work the executor's durable"
        refused_steps.append(step)
        hows.add(how)
    return True, f"{'; '.join(sorted(hows))} ({', '.join(refused_steps)})"


async def gateway_reroutes_requests(b: Bench) -> Verdict:
    gateway = await b.nc("gateway")
    cli = (await b.nc("cli")).jetstream()
    forged = b.plan("rerouted")
    target = subject_for(forged)
    source = f"{PREFIX}.requests.gateway.{forged.host}"
    name = f"bsec-{b.run}-redirect"
    before = (await cli.stream_info(PLANS.name)).state.last_seq
    refused, how = await b.attempt(
        "gateway",
        lambda: gateway.jetstream().add_consumer(
            REQUESTS.name,
            config=ConsumerConfig(
                name=name,
                deliver_subject=target,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                filter_subject=source,
                inactive_threshold=30.0,
            ),
            timeout=2,
        ),
        3,
    )
    if refused:
        return True, f"creating the push consumer: {how}"
    try:
        await b.must_publish("gateway", source, forged.model_dump_json().encode(), REQUESTS.name)
        await asyncio.sleep(1.5)
        after = (await cli.stream_info(PLANS.name)).state.last_seq
        try:
            stored = await cli.get_last_msg(PLANS.name, target)
        except NotFoundError:
            return True, f"PLANS stored nothing on {target} (last seq {before} -> {after})"
        return False, f"PLANS stored it: seq {stored.seq} on {target}"
    finally:
        with contextlib.suppress(Exception):
            await gateway.jetstream().delete_consumer(REQUESTS.name, name)


async def huge_metrics(b: Bench) -> Verdict:
    subject = metrics_subject(b.hostname("big"))
    big = b"x" * BIG_METRICS
    await b.must_publish("collector", subject, big, METRICS.name)
    letter = await b.dead_letter(dead_letter_of(subject, "detector"), 30)
    status = await b.healthy(b.detector_port)
    if letter is None:
        return False, f"not dead-lettered by the detector in 30 s; detector /healthz {status}"
    headers = letter.headers or {}
    truncated = headers.get(DL_TRUNCATED) == str(len(big)) and len(letter.data) < len(big)
    if not truncated or status != 200:
        return False, f"dead letter truncated: {truncated}; detector /healthz {status}"
    return True, (
        f"dead-lettered, truncated to {len(letter.data) // 1024} of {len(big) // 1024} KiB "
        f"({short(headers.get(DL_REASON, ''), 50)}); detector /healthz 200"
    )


async def nan_and_future_plans(b: Bench) -> Verdict:
    good = json.loads(b.plan("values").model_dump_json())
    cases = {
        "NaN": {**good, "plan_id": b.id("nan"), "value": float("nan")},
        "9999": {**good, "plan_id": b.id("future"), "timestamp": "9999-01-01T00:00:00Z"},
    }
    subject = subject_for(b.plan("values"))
    for case in cases.values():  # json writes NaN as such
        await b.must_publish("planner", subject, json.dumps(case).encode(), PLANS.name)
    reasons = []
    for label, case in cases.items():
        letter = await b.dead_letter(dead_letter_of(subject, "executor", plan_id=case["plan_id"]))
        if letter is None:
            return False, f"the {label} plan was not dead-lettered by the executor in 20 s"
        reason = (letter.headers or {}).get(DL_REASON, "").removeprefix("invalid Plan: ")
        reason = reason.replace("message: Value error, ", "")
        reasons.append(f"{label}: {short(reason, 60)}")
    return True, "dead-lettered: " + " | ".join(reasons)


async def misaddressed_metrics(b: Bench) -> Verdict:
    subject = metrics_subject(b.hostname("misaddressed"))
    sample: MetricSample = {"name": "cpu_percent", "value": 1.0}
    batch = MetricBatch(
        host=b.hostname("elsewhere"), collected_at=datetime.now(UTC), samples=[sample]
    )
    await b.must_publish("collector", subject, batch.model_dump_json().encode(), METRICS.name)
    letter = await b.dead_letter(dead_letter_of(subject, "detector", host=batch.host))
    if letter is None:
        return False, "not dead-lettered by the detector in 20 s"
    reason = (letter.headers or {}).get(DL_REASON, "").replace(b.host, "<host>")
    return True, f"dead-lettered: {short(reason, 110)}"


def _gateway_pid(port: int) -> int | None:
    """The gateway process listening on ``port`` (by its command line), if found."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "medbay.gateway.main" not in " ".join(proc.info["cmdline"] or []):
            continue
        found.append(proc.info["pid"])
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return int(proc.info["pid"])
    return found[0] if len(found) == 1 else None


def _rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def _big_post(host: str, port: int, path: str, size: int) -> dict[str, Any]:
    """POST ``size`` bytes without a token, sending the body while reading the answer."""
    sent = 0
    sock = socket.create_connection((host, port), timeout=10)

    def send_body() -> None:
        nonlocal sent
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):
            while sent < size:
                sent += sock.send(chunk[: size - sent])

    started = time.perf_counter()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    sock.sendall(head.encode())
    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    answer = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    ms = (time.perf_counter() - started) * 1000
    sender.join(15)
    sock.close()
    parts = answer.split(b"\r\n", 1)[0].split()
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    return {"status": status, "ms": ms, "sent": sent}


async def huge_unauthenticated_post(b: Bench) -> Verdict:
    pid = await asyncio.to_thread(_gateway_pid, b.gateway_port)
    before = await asyncio.to_thread(_rss, pid)
    r = await asyncio.to_thread(_big_post, b.http_host, b.gateway_port, "/api/actions", BIG_POST)
    await asyncio.sleep(0.5)
    after = await asyncio.to_thread(_rss, pid)
    grown = (
        f"gateway RSS {(after - before) / 2**20:+.1f} MB"
        if before is not None and after is not None
        else "gateway RSS not measured (process not found)"
    )
    mb = BIG_POST // 2**20
    cut = f"closed after {r['sent'] / 2**20:.1f} of {mb} MB sent" if r["sent"] < BIG_POST else ""
    how = f"HTTP {r['status']} in {r['ms']:.0f} ms, {cut or f'all {mb} MB taken'}; {grown}"
    return r["status"] in (401, 413) and r["sent"] < BIG_POST, how


async def websocket_from_evil_origin(b: Bench) -> Verdict:
    url = f"ws{b.gateway_url.removeprefix('http')}/ws?token={b.viewer_token()}"
    started = time.perf_counter()
    try:
        async with ws_connect(url, origin=Origin("http://evil.example"), open_timeout=5):
            pass
    except InvalidStatus as exc:
        ms = (time.perf_counter() - started) * 1000
        reason = exc.response.body.decode(errors="replace") if exc.response.body else ""
        return True, f"HTTP {exc.response.status_code} in {ms:.0f} ms: {short(reason, 70)}"
    return False, "handshake accepted (with a valid viewer token)"


async def foreign_host_header(b: Bench) -> Verdict:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.get(
            f"{b.gateway_url}/api/incidents",
            headers={"Host": "evil.example", "Authorization": f"Bearer {b.viewer_token()}"},
        )
    ms = resp.elapsed.total_seconds() * 1000
    how = f"HTTP {resp.status_code} in {ms:.0f} ms: {short(resp.text, 50)}"
    return resp.status_code == 400, how if resp.status_code == 400 else f"{how} (valid token sent)"


async def incidents_without_token(b: Bench) -> Verdict:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.get(f"{b.gateway_url}/api/incidents")
    ms = resp.elapsed.total_seconds() * 1000
    return resp.status_code == 401, f"HTTP {resp.status_code} in {ms:.0f} ms"


def _long_request_line(host: str, port: int) -> str:
    """What a 64 KiB request line gets: the status line, or how the connection ended."""
    request = b"GET /" + b"a" * (64 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = b""
    connection = socket.create_connection((host, port), timeout=6)  # failing: no verdict
    try:
        with connection as sock:
            with contextlib.suppress(OSError):  # it may answer and close before we are done
                sock.sendall(request)
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
    except TimeoutError:
        return "no answer in 6 s"
    except OSError as exc:
        if not answer:
            return f"connection {type(exc).__name__}"
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return line or "closed without an answer"


async def long_request_line(b: Bench) -> Verdict:
    port = b.detector_port
    started = time.perf_counter()
    answer = await asyncio.to_thread(_long_request_line, b.http_host, port)
    ms = (time.perf_counter() - started) * 1000
    status = await b.healthy(port)
    parts = answer.split()
    error = not answer.startswith("HTTP/") or (
        len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) >= 400
    )
    how = f"{short(answer, 50)} in {ms:.0f} ms; detector /healthz {status} afterwards"
    return error and status == 200 and "no answer" not in answer, how


ATTACKS: list[tuple[str, Callable[[Bench], Awaitable[Verdict]]]] = [
    ("anonymous client connects to NATS", anonymous_connect),
    ("gateway publishes a Plan with requires_approval false", gateway_publishes_plan),
    ("gateway forges a Telegram approval (approvals.telegram)", gateway_forges_telegram_approval),
    ("gateway approval claiming telegram, on its own subject", telegram_claim_on_gateway_subject),
    ("planner: kill_process marked low risk, no approval", high_risk_plan_held),
    ("gateway writes the executor's KV (breaker, plan book)", gateway_writes_executor_kv),
    ("gateway, executor, cli write into medbay_models", others_write_models),
    ("planner stores a pickle that runs code when loaded", pickled_model),
    ("gateway takes over the executor's durable on PLANS", gateway_takes_executor_consumer),
    ("gateway re-routes REQUESTS onto PLANS (push consumer)", gateway_reroutes_requests),
    ("collector publishes a 1 MiB MetricBatch", huge_metrics),
    ("planner publishes a Plan with NaN, and one dated 9999", nan_and_future_plans),
    ("collector: MetricBatch body host differs from subject", misaddressed_metrics),
    ("unauthenticated 30 MB POST to /api/actions", huge_unauthenticated_post),
    ("WebSocket to /ws with Origin: http://evil.example", websocket_from_evil_origin),
    ("HTTP request with Host: evil.example", foreign_host_header),
    ("/api/incidents with no token", incidents_without_token),
    ("64 KiB request line to the detector's health port", long_request_line),
]


async def run_attacks(b: Bench) -> list[dict[str, Any]]:
    results = []
    await b.open()
    try:
        for n, (title, attack) in enumerate(ATTACKS, 1):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(120):
                    refused, how = await attack(b)
                verdict = "refused" if refused else "ACCEPTED"
            except Exception as exc:
                verdict, how = "ERROR", f"could not run: {short(repr(exc), 200)}"
            seconds = time.perf_counter() - started
            print(f"{n:>2}. {title:<56} {verdict:<8}  {how}", flush=True)
            results.append(
                {"n": n, "attack": title, "verdict": verdict, "how": how, "seconds": seconds}
            )
    finally:
        await b.close()
    return results


def main(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    up = upfile.read(data_dir / upfile.NAME)
    args.nats_url = args.nats_url or (up.nats_url if up else "nats://127.0.0.1:4222")
    gateway = f"http://127.0.0.1:{DEFAULT_HTTP_PORTS['gateway']}"
    args.gateway_url = args.gateway_url or (up.gateway_url if up else gateway)
    ports = {**DEFAULT_HTTP_PORTS, **(up.http_ports if up else {})}
    bench = Bench(data_dir, args.nats_url, args.gateway_url, ports["detector"])
    print(
        f"Security: {len(ATTACKS)} attacks on the Medbay at {args.nats_url} and "
        f"{args.gateway_url} (credentials from {data_dir}; run {bench.run})",
        flush=True,
    )
    try:
        results = asyncio.run(run_attacks(bench))
    except (BenchError, OSError, nats.errors.Error) as exc:
        print(f"medbay bench security: {exc}", file=sys.stderr)
        return 1
    refused = sum(r["verdict"] == "refused" for r in results)
    accepted = sum(r["verdict"] == "ACCEPTED" for r in results)
    errors = len(results) - refused - accepted
    summary = f"{len(results)} attacks: {refused} refused, {accepted} accepted"
    print(summary + (f", {errors} could not run" if errors else ""))
    out_dir = Path(getattr(args, "results_dir", None) or harness.RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"security-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    record = {
        "run": bench.run,
        "nats_url": args.nats_url,
        "gateway_url": args.gateway_url,
        "git": harness.git_state(),
        "attacks": results,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"  results: {out}")
    return 1 if accepted or errors else 0
