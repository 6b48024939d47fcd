"""Only Medbay speaks on its bus, each identity only what it owns, and no input breaks
a service: against a real nats-server running the authorization config that
`medbay auth init` generates, with real service processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from medbay.common.access import IDENTITIES, MODELS
from medbay.common.bus import DL_REASON, DL_SERVICE, DL_TRUNCATED, event_headers
from medbay.common.events import Approval, Plan
from medbay.common.records import EXECUTOR_RAILS, PLAN_BOOK, plan_key
from medbay.common.streams import ALL_STREAMS, subject_for
from medbay.executor.plan_book import PlanBook
from medbay.executor.rails import SafetyRails
from medbay.executor.safety_config import SafetyConfig
from medbay.planner.store import ModelStore
from tests import factories
from tests.factories import step

from .helpers import StreamWatch

if TYPE_CHECKING:
    from conftest import NatsServer


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


async def connect(server: NatsServer, identity: str | None, **options: Any) -> Client:
    async def quiet(_: Exception) -> None:
        pass

    credentials = server.client(identity) if identity else {}
    return await nats.connect(
        server.url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
        error_cb=quiet,
        **credentials,
        **options,
    )


async def declare_everything(server: NatsServer) -> None:
    """Every stream and bucket, each declared by its owner (as the services do)."""
    for spec in ALL_STREAMS:
        nc = await connect(server, spec.owner)
        await nc.jetstream().add_stream(config=spec.declaration())
        await nc.close()
    nc = await connect(server, "executor")
    await PlanBook.open(nc.jetstream())
    await SafetyRails.open(nc.jetstream(), SafetyConfig())
    await nc.close()
    nc = await connect(server, "planner")
    await ModelStore.open(nc.jetstream())
    await nc.close()


def plan(**changes: Any) -> Plan:
    """A plan to kill demo-web on web-1, needing no approval; ``changes`` override."""
    fields: dict[str, Any] = {
        "plan_id": f"p-{time.monotonic_ns()}",
        "issue_event_id": "i" * 32,
        "threshold": 1.0,
        "labels": {},
        "confidence": 0.95,
        "model_version": "rules-v1",
    }
    return factories.plan(step("kill_process", "demo-web", seconds=5), **{**fields, **changes})


async def publish(
    nc: Client, subject: str, data: bytes, stream: str, timeout: float, **headers: str
) -> bool:
    """Publish to JetStream; False when no PubAck came within ``timeout``."""
    try:
        await nc.jetstream().publish(
            subject, data, stream=stream, headers=headers or None, timeout=timeout
        )
    except (TimeoutError, nats.errors.Error):
        return False
    return True


async def published(nc: Client, subject: str, data: bytes, stream: str, **headers: str) -> bool:
    """Stored: a busy machine may take seconds to acknowledge."""
    return await publish(nc, subject, data, stream, 15.0, **headers)


async def refused(nc: Client, subject: str, data: bytes, stream: str) -> bool:
    """Refused by the server: a denied publish is never acknowledged."""
    return not await publish(nc, subject, data, stream, 1.0)


async def plan_record(book: KeyValue, plan_id: str) -> dict[str, Any]:
    """The plan book's record of ``plan_id``."""
    entry = await book.get(plan_key(plan_id))
    assert entry.value is not None
    record: dict[str, Any] = json.loads(entry.value)
    return record


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            status: int = resp.status
            return status == 200
    except OSError:
        return False


# --- who may connect and publish ---------------------------------------------------------------


async def test_an_unauthenticated_client_is_refused(nats_server):
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await connect(nats_server, None)
    for identity in IDENTITIES:  # and every identity gets in with its own password
        await (await connect(nats_server, identity)).close()


async def test_each_identity_may_publish_only_what_it_owns(nats_server):
    await declare_everything(nats_server)
    forged = plan()
    nc = {identity: await connect(nats_server, identity) for identity in IDENTITIES}
    try:
        telegram = Approval(
            plan_id="p1", decision="approve", decided_by="the-boss", channel="telegram"
        )
        as_gateway = telegram.model_copy(update={"channel": "gateway"})
        as_cli = telegram.model_copy(update={"channel": "cli"})
        data = forged.model_dump_json().encode()
        # what each owns works...
        assert await published(nc["planner"], subject_for(forged), data, "PLANS")
        assert await published(
            nc["approver"], subject_for(telegram), telegram.model_dump_json().encode(), "APPROVALS"
        )
        assert await published(
            nc["gateway"],
            subject_for(as_gateway),
            as_gateway.model_dump_json().encode(),
            "APPROVALS",
        )
        assert await published(
            nc["cli"], subject_for(as_cli), as_cli.model_dump_json().encode(), "APPROVALS"
        )
        # ...and nothing else
        for identity in ("collector", "detector", "approver", "executor", "gateway", "cli"):
            assert await refused(nc[identity], subject_for(forged), data, "PLANS"), identity
        for identity in ("planner", "gateway", "cli", "executor"):
            assert await refused(
                nc[identity], "medbay.approvals.telegram.p1", b"{}", "APPROVALS"
            ), identity
        assert await refused(nc["cli"], "medbay.approvals.gateway.p1", b"{}", "APPROVALS")
        assert await refused(nc["gateway"], "medbay.approvals.cli.p1", b"{}", "APPROVALS")
        assert await refused(nc["approver"], "medbay.results.web-1", b"{}", "RESULTS")
        assert await refused(nc["planner"], "medbay.metrics.web-1", b"{}", "METRICS")
        assert await refused(nc["gateway"], "medbay.deadletter.detector.X", b"{}", "DEADLETTER")

        # only the executor writes its KV: the gateway cannot reset a breaker there
        for identity in ("gateway", "approver", "cli", "planner"):
            kv = await nc[identity].jetstream().key_value(EXECUTOR_RAILS.name)
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await asyncio.wait_for(kv.put("targets.web", b"{}"), 2)
            kv = await nc[identity].jetstream().key_value(PLAN_BOOK.name)
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await asyncio.wait_for(kv.put(plan_key("p1"), b'{"state": "running"}'), 2)
        kv = await nc["executor"].jetstream().key_value(EXECUTOR_RAILS.name)
        await kv.put("targets.web", b"{}")

        # only the planner writes models
        for identity in ("gateway", "executor", "cli", "approver"):
            with pytest.raises((TimeoutError, nats.errors.Error)):
                objects = await nc[identity].jetstream().object_store(MODELS.name)
                await asyncio.wait_for(objects.put("rf-evil", b"\x80\x04evil"), 2)
        objects = await nc["planner"].jetstream().object_store(MODELS.name)
        await objects.put("rf-good", b"model")
        assert (await objects.get("rf-good")).data == b"model"
        assert [i.name for i in await objects.list()] == ["rf-good"]
        await objects.delete("rf-good")
        reader = await nc["gateway"].jetstream().object_store(MODELS.name)
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await reader.get_info("rf-good")
    finally:
        for client in nc.values():
            await client.close()
    assert nats_server.violations(), "the refusals are the server's own"


async def test_readers_cannot_take_over_consumers_or_redirect_messages(nats_server):
    """A reader may make consumers of its own, but not use another's durable, and a
    push consumer cannot re-deliver stored messages onto a stream (nobody listens there)."""
    await declare_everything(nats_server)
    executor = await connect(nats_server, "executor")
    gateway = await connect(nats_server, "gateway")
    try:
        await executor.jetstream().pull_subscribe(
            "medbay.plans.>", durable="executor", stream="PLANS"
        )
        gjs = gateway.jetstream()
        # its own ephemeral consumers work
        mine = await gjs.pull_subscribe("medbay.plans.>", stream="PLANS")
        await mine.unsubscribe()
        # the executor's durable is out of reach: bind, fetch, delete, redefine
        with pytest.raises((TimeoutError, nats.errors.Error)):
            sub = await gjs.pull_subscribe_bind("executor", stream="PLANS")
            await sub.fetch(1, timeout=1)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await asyncio.wait_for(gjs.delete_consumer("PLANS", "executor"), 2)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await gjs.add_consumer(
                "PLANS",
                config=ConsumerConfig(name="executor", filter_subject="medbay.plans.none"),
                timeout=1,
            )
        # a push consumer on a stream the gateway writes (REQUESTS), delivering onto PLANS
        forged = plan(host="web-9")
        await gjs.add_consumer(
            "REQUESTS",
            config=ConsumerConfig(
                name="redirect",
                deliver_subject=subject_for(forged),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                filter_subject="medbay.requests.gateway.web-9",
            ),
        )
        assert await published(
            gateway, "medbay.requests.gateway.web-9", forged.model_dump_json().encode(), "REQUESTS"
        )
        await asyncio.sleep(1.0)
        info = await executor.jetstream().stream_info("PLANS")
        assert info.state.messages == 0
    finally:
        await executor.close()
        await gateway.close()


# --- the executor's own approval policy -----------------------------------------------------------


EXECUTOR_YAML = (
    "targets:\n"
    "  demo-web: {kind: process_name, names: [medbay-security-none]}\n"
    "safety:\n"
    "  allow: {kill_process: [demo-web]}\n"
)


async def test_a_forged_plan_waits_for_a_real_approval(nats_server, services, tmp_path):
    (tmp_path / "executor.yaml").write_text(EXECUTOR_YAML)
    await declare_everything(nats_server)
    executor = services("executor", "--config", str(tmp_path / "executor.yaml"))
    planner = await connect(nats_server, "planner")
    gateway = await connect(nats_server, "gateway")
    cli = await connect(nats_server, "cli")
    try:
        watch = await StreamWatch(cli.jetstream()).open("RESULTS", "DEADLETTER")
        # a high-risk step that calls itself low-risk, in a plan that says no approval is needed
        forged = plan()
        assert await published(
            planner,
            subject_for(forged),
            forged.model_dump_json().encode(),
            "PLANS",
            **event_headers(forged),
        )
        with pytest.raises(AssertionError):
            await watch.next_event("action.result", time.monotonic() + 3, plan_id=forged.plan_id)
        book = await cli.jetstream().key_value(PLAN_BOOK.name)
        record = await plan_record(book, forged.plan_id)
        assert record["state"] == "pending"
        assert any("high-risk kill_process" in r for r in record["approval_reasons"])

        # an approval claiming to come from Telegram, on the gateway's own subject: rejected
        claim = Approval(
            plan_id=forged.plan_id, decision="approve", decided_by="the-boss", channel="telegram"
        )
        subject = f"medbay.approvals.gateway.{forged.plan_id}"
        assert await published(gateway, subject, claim.model_dump_json().encode(), "APPROVALS")
        with pytest.raises(AssertionError):
            await watch.next_event("action.result", time.monotonic() + 2, plan_id=forged.plan_id)
        assert (await plan_record(book, forged.plan_id))["state"] == "pending"

        # a real approval through the gateway's channel runs it
        real = Approval(
            plan_id=forged.plan_id, decision="approve", decided_by="alice", channel="gateway"
        )
        assert await published(
            gateway, subject_for(real), real.model_dump_json().encode(), "APPROVALS"
        )
        result, _ = await watch.next_event(
            "action.result", time.monotonic() + 15, plan_id=forged.plan_id, status="finished"
        )
        assert result["outcome"] == "dry_run" and result["action"] == "kill_process"
        record = await plan_record(book, forged.plan_id)
        assert record["decided_by"] == "alice" and record["channel"] == "gateway"
    finally:
        for client in (planner, gateway, cli):
            await client.close()
    assert executor.stop() == 0


# --- no message can break a consumer ---------------------------------------------------


CONSUMED = (
    # (publisher, subject, stream, consumers that dead-letter it)
    ("collector", "medbay.metrics.web-1", "METRICS", ("detector",)),
    ("detector", "medbay.issues.opened.web-1", "ISSUES", ("planner",)),
    ("planner", "medbay.plans.web-1", "PLANS", ("executor", "approver")),
    ("gateway", "medbay.approvals.gateway.p1", "APPROVALS", ("executor", "approver")),
    ("executor", "medbay.results.web-1", "RESULTS", ("planner",)),
    ("executor", "medbay.alerts.web-1", "RESULTS", ("approver",)),
    ("gateway", "medbay.requests.gateway.web-1", "REQUESTS", ("planner",)),
    ("gateway", "medbay.audit.breaker.gateway.web", "AUDIT", ("executor",)),
)


@pytest.mark.timeout(240)
async def settled(nc: Any, stream: str, info: Any, seconds: float = 5.0) -> Any:
    """The consumer's info once nothing waits for it or its ack, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (info.num_ack_pending or info.num_pending) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        info = await nc.jetstream().consumer_info(stream, info.name)
    return info


async def test_a_1mib_message_on_every_consumed_stream_is_dead_lettered(
    nats_server, services, tmp_path
):
    (tmp_path / "collector.yaml").write_text("interval_seconds: 5\ntop_processes: 0\n")
    running = {
        "collector": services("collector", "--config", str(tmp_path / "collector.yaml")),
        "detector": services("detector"),
        "planner": services("planner", wait_healthy=False),
        "executor": services("executor", wait_healthy=False),
    }
    running["planner"].wait_healthy()
    running["executor"].wait_healthy()
    running["approver"] = services("approver")
    cli = await connect(nats_server, "cli")
    letters = await StreamWatch(cli.jetstream()).open("DEADLETTER")
    big = b"x" * (1024 * 1024 - 4096)  # as large as the server takes, headers included
    try:
        for identity, subject, stream, _ in CONSUMED:
            nc = await connect(nats_server, identity)
            assert await published(nc, subject, big, stream), subject
            await nc.close()
        expected = {(stream, c) for _, _, stream, consumers in CONSUMED for c in consumers}
        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 60
        while seen != expected and time.monotonic() < deadline:
            try:
                msgs = await letters.subs["DEADLETTER"].fetch(10, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                assert msg.headers is not None
                assert int(msg.headers[DL_TRUNCATED]) == len(big)
                assert len(msg.data) < len(big) and "exceeds" in msg.headers[DL_REASON]
                seen.add((msg.subject.split(".")[-1], msg.headers[DL_SERVICE]))
        assert seen == expected
        await asyncio.sleep(2)  # still connected and healthy afterwards
        for name, proc in running.items():
            assert healthy(proc.port), f"{name}: {proc.logs()[-2000:]}"
        # the consumers moved on: nothing is redelivered (a batch the collector has just
        # published may still be in flight: a consumer that keeps up acks it soon)
        for _, _, stream, _ in CONSUMED:
            for info in await cli.jetstream().consumers_info(stream):
                if info.config.durable_name:
                    info = await settled(cli, stream, info)
                    assert info.num_ack_pending == 0 and info.num_pending == 0, info
    finally:
        await cli.close()


async def test_nan_future_and_misaddressed_events_are_dead_lettered(nats_server, services):
    await declare_everything(nats_server)
    executor = services("executor")
    planner = await connect(nats_server, "planner")
    cli = await connect(nats_server, "cli")
    letters = await StreamWatch(cli.jetstream()).open("DEADLETTER", "RESULTS")
    try:
        good = json.loads(plan().model_dump_json())
        cases = {
            "nan": {**good, "plan_id": "nan", "value": float("nan")},
            "inf": {**good, "plan_id": "inf", "confidence": float("inf")},
            "future": {**good, "plan_id": "future", "timestamp": "9999-01-01T00:00:00Z"},
            "elsewhere": {**good, "plan_id": "elsewhere", "host": "web-2"},
        }
        for name, body in cases.items():
            data = json.dumps(body).encode()  # json writes NaN and Infinity as such
            assert await published(planner, "medbay.plans.web-1", data, "PLANS"), name
        reasons: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while len(reasons) < len(cases) and time.monotonic() < deadline:
            try:
                msgs = await letters.subs["DEADLETTER"].fetch(10, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                assert msg.headers is not None
                reasons[json.loads(msg.data)["plan_id"]] = msg.headers[DL_REASON]
        assert "finite number" in reasons["nan"] and "confidence" in reasons["inf"]
        assert "in the future" in reasons["future"]
        assert "does not match" in reasons["elsewhere"]
        assert healthy(executor.port)
    finally:
        await planner.close()
        await cli.close()
    assert executor.stop() == 0


async def test_unreadable_records_do_not_stop_the_executor(nats_server, services):
    await declare_everything(nats_server)
    nc = await connect(nats_server, "executor")  # as if its own records were corrupted
    js = nc.jetstream()
    await (await js.key_value(PLAN_BOOK.name)).put(plan_key("bad"), b"{not json")
    record = {
        "state": "running",
        "plan": json.dumps({**json.loads(plan().model_dump_json()), "value": None}),
    }
    await (await js.key_value(PLAN_BOOK.name)).put(plan_key("null"), json.dumps(record).encode())
    await (await js.key_value(EXECUTOR_RAILS.name)).put("targets.web", b"[]")
    await nc.close()
    executor = services("executor")
    assert healthy(executor.port)
    deadline = time.monotonic() + 60  # it reads its records as it starts: soon after ready
    while "unreadable" not in executor.logs():
        assert time.monotonic() < deadline, executor.logs()[-2000:]
        await asyncio.sleep(0.2)
    assert healthy(executor.port)
    assert executor.stop() == 0


# --- stopping ---------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_every_service_stops_on_sigterm_after_losing_nats(nats_server, services, tmp_path):
    (tmp_path / "collector.yaml").write_text("interval_seconds: 1\ntop_processes: 0\n")
    (tmp_path / "gateway.yaml").write_text(
        "tokens: [{name: ops, token: 'a-token-of-16-chars-or-more', role: operator}]\n"
    )
    running = [
        services("collector", "--config", str(tmp_path / "collector.yaml")),
        services("detector"),
        services("planner", wait_healthy=False),
        services("executor", wait_healthy=False),
    ]
    for proc in running[2:]:
        proc.wait_healthy()
    running += [
        services("approver"),
        services("gateway", "--config", str(tmp_path / "gateway.yaml")),
    ]
    assert nats_server.proc is not None
    nats_server.proc.send_signal(signal.SIGKILL)
    nats_server.proc.wait(10)
    await asyncio.sleep(2)  # every one has noticed: reconnecting, unhealthy
    for proc in running:
        assert not healthy(proc.port), proc.name
    stopped = {}
    for proc in running:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    for proc in running:
        assert proc.proc is not None
        code = await asyncio.to_thread(proc.proc.wait, 60)
        stopped[proc.name] = (code, round(time.monotonic() - started, 1))
    print("stopped (exit code, seconds after SIGTERM):", stopped)
    # Each stopping step is bounded (a few seconds); waiting on the lost server would
    # never end. The margin is for six processes stopping at once on a busy machine.
    for name, (_, seconds) in stopped.items():
        assert seconds <= 30, f"{name} took {seconds} s: {stopped}"


async def test_a_connection_closed_for_good_ends_the_service(nats_server, services):
    """A rotated password and a server reload close the connection for good (nats-py
    stops reconnecting): the service exits 1 for its supervisor to restart it, and
    comes back with the new password."""
    from medbay.cli.auth import init

    await declare_everything(nats_server)
    detector = services("detector")
    init(nats_server.credentials, {"detector"})
    assert nats_server.proc is not None
    nats_server.proc.send_signal(signal.SIGHUP)  # reload the authorization config
    assert detector.proc is not None
    assert await asyncio.to_thread(detector.proc.wait, 30) == 1
    assert "closed" in detector.logs()
    again = services("detector")
    assert healthy(again.port)
    assert again.stop() == 0


# --- credentials, TLS ---------------------------------------------------------------------------


async def test_a_service_without_credentials_gets_a_clear_error(nats_server, tmp_path):
    from conftest import ServiceProcess

    await declare_everything(nats_server)
    for name, env in (
        ("none", {}),
        ("wrong", {"MEDBAY_NATS_USER": "detector", "MEDBAY_NATS_PASSWORD": "wrong-password-x"}),
    ):
        detector = ServiceProcess("detector", nats_server.url, tmp_path / name, **env)
        (tmp_path / name).mkdir()
        detector.start(wait_healthy=False)
        assert detector.proc is not None
        assert await asyncio.to_thread(detector.proc.wait, 30) == 2
        logs = detector.logs()
        assert "refused the connection" in logs and "MEDBAY_NATS_USER" in logs, logs[-1500:]
        assert "wrong-password-x" not in logs


def make_certificates(root: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1, with the openssl command."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (make test installs it)")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Medbay test CA",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext",
    )  # fmt: skip
    return {name: str(root / name) for name in ("ca.pem", "server.pem", "server.key")}


async def test_services_connect_over_tls_with_the_ca_file(tmp_path):
    import ssl

    from conftest import NatsServer, ServiceProcess

    certs = make_certificates(tmp_path)
    server = NatsServer(tmp_path, secured=True)
    server.tls = {"cert_file": certs["server.pem"], "key_file": certs["server.key"]}
    server.start()
    try:
        assert server.url.startswith("tls://")
        context = ssl.create_default_context(cafile=certs["ca.pem"])
        for spec in ALL_STREAMS:
            nc = await nats.connect(server.url, tls=context, **server.client(spec.owner))
            await nc.jetstream().add_stream(config=spec.declaration())
            await nc.close()
        env = {**server.env("detector"), "MEDBAY_NATS_CA_FILE": certs["ca.pem"]}
        detector = ServiceProcess("detector", server.url, tmp_path, **env).start()
        assert healthy(detector.port)
        assert detector.stop() == 0
        # without the CA the server's certificate is not trusted: it does not connect
        (tmp_path / "untrusted").mkdir()
        untrusted = ServiceProcess(
            "detector", server.url, tmp_path / "untrusted", **server.env("detector")
        ).start(wait_healthy=False)
        assert untrusted.proc is not None
        assert await asyncio.to_thread(untrusted.proc.wait, 30) != 0
        assert "certificate" in untrusted.logs().lower()
    finally:
        server.stop()


async def test_a_dead_letter_that_cannot_be_stored_terminates_the_message(nats_server):
    """No DEADLETTER stream (its owner, the detector, never ran): the bad message is
    terminated, not redelivered for ever."""
    from prometheus_client import CollectorRegistry

    from medbay.common.bus import BatchConsumer, ConsumerSpec, json_parser, make_broker
    from medbay.common.events import MetricBatch
    from medbay.common.streams import METRICS

    collector = await connect(nats_server, "collector")
    await collector.jetstream().add_stream(config=METRICS.declaration())
    assert await published(collector, "medbay.metrics.web-1", b"not json", "METRICS")
    await collector.close()
    broker = make_broker(
        "detector",
        nats_server.url,
        registry=CollectorRegistry(),
        options=nats_server.client("detector"),
    )
    await broker.connect()
    handled: list[object] = []

    async def handle(deliveries: list[Any]) -> None:
        handled.extend(deliveries)

    consumer = BatchConsumer(
        broker,
        ConsumerSpec("detector", METRICS.subjects[0], METRICS, ack_wait=1.0),
        service="detector",
        parse=json_parser(MetricBatch),
        handler=handle,
        max_bytes=1024,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.sleep(4)  # several ack waits: it would have come back by now
        js = broker.config.connection_state.stream
        info = await js.consumer_info("METRICS", "detector")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0, info
        assert info.delivered.stream_seq == 1 and not handled
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.stop()


def test_a_stop_stuck_past_its_deadline_says_where_and_exits_1() -> None:
    """Should a stopping step ignore its bound, the process does not hang for ever; a
    stop that ends in time cancels the deadline (a runtime run inside a test process)."""
    script = (
        "import asyncio, time\n"
        "from medbay.common.runtime import exit_if_stuck\n"
        "async def stuck_in_here():\n"
        "    exit_if_stuck('in-time', 0.5).cancel()\n"
        "    exit_if_stuck('demo', 0.5)\n"
        "    time.sleep(60)  # a step that blocks the loop, bounds or not\n"
        "asyncio.run(stuck_in_here())\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 50
    assert "medbay demo: still stopping after 0.5 s; exiting. Where it was:" in done.stderr
    assert "stuck_in_here" in done.stderr  # the stack it was stuck in
    assert "in-time" not in done.stderr
