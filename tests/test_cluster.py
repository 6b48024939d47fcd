"""Medbay on a real 3-node NATS cluster: copies kept, a node lost, and the clear refusal
of more copies than servers."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from conftest import NatsServer, SecuredCluster, StartReplica, StartService
from medbay.common.access import BUCKETS
from medbay.common.bus import event_headers
from medbay.common.events import MetricBatch, MetricSample, Plan
from medbay.common.reading import read
from medbay.common.streams import ALL_STREAMS, METRICS, PLANS, metrics_subject
from tests.helpers import wait_for


def outage(host: str, service: str, up: bool) -> MetricBatch:
    sample: MetricSample = {
        "name": "service_up",
        "value": 1.0 if up else 0.0,
        "labels": {"service": service},
    }
    return MetricBatch(host=host, collected_at=datetime.now(UTC), samples=[sample])


async def publish(js: JetStreamContext, batch: MetricBatch) -> None:
    """As a collector does, through a node's loss: the client reconnects, we retry."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await js.publish(
                metrics_subject(batch.host),
                batch.model_dump_json().encode(),
                headers=event_headers(batch),
                timeout=5,
            )
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def connect(cluster: SecuredCluster, identity: str) -> Client:
    return await nats.connect(
        **cluster.client(identity), max_reconnect_attempts=-1, reconnect_time_wait=0.5
    )


async def plans_for(js: JetStreamContext, service: str) -> list[Plan]:
    found = []
    async for msgs in read(js, PLANS):
        for msg in msgs:
            plan = Plan.model_validate_json(msg.data)
            if plan.labels.get("service") == service:
                found.append(plan)
    return found


async def test_services_keep_three_copies_and_go_on_when_a_node_dies(
    nats_cluster: SecuredCluster, cluster_services: StartReplica, tmp_path: Any
) -> None:
    collector = await connect(nats_cluster, "collector")
    js = collector.jetstream()
    await js.add_stream(config=METRICS.declaration(3))  # its owner, the collector, is not run
    executor = tmp_path / "executor.yaml"
    executor.write_text(
        "mode: dry-run\ntargets:\n"
        "  api: {kind: process, command: ['true', api]}\n"
        "  db: {kind: process, command: ['true', db]}\n"
        "safety:\n  allow:\n    restart_service: [api, db]\n"
    )
    # A planner that cannot renew its lease in time exits for its supervisor to restart it;
    # none runs here, and a node's loss on a busy machine can take longer than the default.
    planner = tmp_path / "planner.yaml"
    planner.write_text("active_lease_seconds: 60\n")
    # each waits for the others' streams: start them together
    started = [
        cluster_services("detector", wait_healthy=False),
        cluster_services("planner", "--config", str(planner), wait_healthy=False),
        cluster_services("executor", wait_healthy=False, MEDBAY_EXECUTOR_CONFIG=str(executor)),
    ]
    for service in started:
        await asyncio.to_thread(service.wait_healthy, 120.0)
    gateway = await connect(nats_cluster, "gateway")
    reader = gateway.jetstream()

    # every stream and bucket the running owners declared is kept on all three nodes
    owned = {"collector", "detector", "planner", "executor"}
    for spec in ALL_STREAMS:
        if spec.owner in owned:
            info = await reader.stream_info(spec.name)
            assert info.config.num_replicas == 3, spec.name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, spec.name
    for bucket in BUCKETS:
        if bucket.owner in owned and bucket.kind == "kv":
            owner = await connect(nats_cluster, bucket.owner)
            info = await owner.jetstream().stream_info(bucket.stream)
            assert info.config.num_replicas == 3, bucket.name
            await owner.close()

    # the pipeline works: an outage becomes a plan
    for _ in range(2):  # two failed checks: an outage
        await publish(js, outage("web-1", "api", up=False))
    await wait_for("plan for the first outage", lambda: plans_for(reader, "api"))

    # kill -9 the node that leads METRICS: clients move to the others and go on
    leader = (await reader.stream_info("METRICS")).cluster
    assert leader is not None
    victim = next(n.index for n in nats_cluster.cluster.nodes if n.name == leader.leader)
    nats_cluster.cluster.kill(victim)
    for _ in range(2):
        await publish(js, outage("web-2", "db", up=False))
    await wait_for("plan for the outage after the node died", lambda: plans_for(reader, "db"))

    # the node comes back and catches up; nothing published meanwhile is missing on it
    nats_cluster.cluster.start_node(victim)
    await asyncio.to_thread(nats_cluster.cluster.wait_ready, 180.0, [victim])

    async def current() -> bool:
        info = await reader.stream_info("METRICS")
        peers = info.cluster.replicas if info.cluster else []
        return bool(peers) and all(p.current for p in peers or [])

    await wait_for("every METRICS copy current again", current)
    metrics = await reader.stream_info("METRICS")
    assert metrics.state.messages == 4
    await collector.close()
    await gateway.close()


def test_more_copies_than_servers_is_refused_with_what_to_do(
    nats_server: NatsServer, services: StartService
) -> None:
    detector = services("detector", wait_healthy=False, MEDBAY_NATS_REPLICAS="3")
    assert detector.proc is not None
    assert detector.proc.wait(60) == 2
    logs = detector.logs()
    assert "MEDBAY_NATS_REPLICAS" in logs and "at most the number of JetStream servers" in logs


def test_auth_init_makes_the_route_password_once(tmp_path: Path) -> None:
    from medbay.cli.auth import ROUTE_ENV, init

    init(tmp_path)
    route = tmp_path / ROUTE_ENV
    first = route.read_text()
    assert re.fullmatch(r"password=[0-9a-f]{64}\n", first)
    assert route.stat().st_mode & 0o777 == 0o600
    init(tmp_path, {"detector"})
    assert route.read_text() == first  # kept: changing it means restarting every server
    init(tmp_path, {"route"})
    assert route.read_text() != first


def test_copies_that_wait_for_an_offline_server_are_retried_not_refused() -> None:
    from nats.js.errors import BadRequestError

    from medbay.common.settings import ConfigError, peer_offline, replicas_problem

    offline = BadRequestError(
        code=400, err_code=10005, description="no suitable peers for placement, peer offline"
    )
    too_many = BadRequestError(
        code=400, err_code=10074, description="replicas > 1 not supported in non-clustered mode"
    )
    assert peer_offline(offline) and not peer_offline(too_many)
    assert replicas_problem("ISSUES", 3, offline) is offline  # for the caller to retry
    assert isinstance(replicas_problem("ISSUES", 3, too_many), ConfigError)
