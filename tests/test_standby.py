"""One active replica, the others standing by (``medbay.common.active``): replicas run
in this process on a real nats-server, each with its own runtime and connection.

Each replica's active part is one task that counts while it runs; the tests check
who counts, that two never count at once, and what a replica does when it loses its
lease: it stops counting at once and exits with ``LEASE_LOST_EXIT``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.js.api import KeyValueConfig
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import generate_latest

from conftest import NatsServer
from medbay.common import runtime
from medbay.common.active import LEASE_LOST_EXIT, ActiveReplica
from medbay.common.bus import jetstream
from medbay.common.kv import declare_key_value
from medbay.common.lease import Lease, read_holder
from medbay.common.settings import BusSettings

BUCKET = "standby_test"
TTL = 3.0
WAIT = 60.0
"""Seconds to wait for anything: generous, for a busy shared machine."""


class Acting:
    """Who runs its active part now, and whether two ever did at once."""

    def __init__(self) -> None:
        self.now: set[str] = set()
        self.overlaps: list[set[str]] = []


class Replica:
    """A service whose active part is one counting task, run by ``ActiveReplica``."""

    def __init__(self, name: str, url: str, acting: Acting) -> None:
        self.name = name
        self.rt = runtime.ServiceRuntime("standby-test", BusSettings(nats_url=url, http_port=0))
        self.active = ActiveReplica(self.rt, BUCKET, ttl_seconds=TTL, poll_seconds=0.2)
        self.acting = acting
        self.activations = 0
        self.ticks = 0
        self.exit_code: object = None
        self.task: asyncio.Task[None] | None = None

    async def create_bucket(self) -> None:
        await declare_key_value(jetstream(self.rt.broker), KeyValueConfig(bucket=BUCKET))

    async def on_active(self) -> None:
        self.activations += 1

    async def count(self) -> None:
        if self.acting.now:
            self.acting.overlaps.append({*self.acting.now, self.name})
        self.acting.now.add(self.name)
        try:
            while True:
                self.ticks += 1
                await asyncio.sleep(0.05)
        finally:
            self.acting.now.discard(self.name)

    async def _run(self) -> None:
        try:
            await self.active.run(
                on_start=self.create_bucket, on_active=self.on_active, tasks=[self.count]
            )
        except SystemExit as exit:  # kept here: out of a task it would end the test run
            self.exit_code = exit.code

    def start(self) -> Replica:
        self.task = asyncio.create_task(self._run())
        return self

    def role(self) -> object:
        return self.rt.info.get("role")

    def gauge(self) -> str:
        [line] = [
            line
            for line in generate_latest(self.rt.registry).decode().splitlines()
            if line.startswith("medbay_replica_active ")
        ]
        return line

    async def finish(self) -> None:
        """Until its ``run`` has returned (after a stop, or on its own)."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), WAIT)


async def until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        await asyncio.sleep(0.05)


@pytest.fixture
def quiet_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runtimes in this process: keep pytest's log capture and the global tracer."""
    monkeypatch.setattr(runtime, "setup_logging", lambda *args: None)
    monkeypatch.setattr(runtime, "setup_tracing", lambda name: TracerProvider())


@pytest.fixture
async def replicas(
    nats_server: NatsServer, quiet_runtime: None
) -> AsyncIterator[tuple[Acting, list[Replica]]]:
    acting = Acting()
    started: list[Replica] = []
    yield acting, started
    for replica in started:
        replica.rt.stop()
    for replica in started:
        await replica.finish()


def start(nats_server: NatsServer, replicas: tuple[Acting, list[Replica]], name: str) -> Replica:
    acting, started = replicas
    replica = Replica(name, nats_server.url, acting).start()
    started.append(replica)
    return replica


async def test_one_replica_acts_and_a_standby_takes_over_when_it_stops(
    nats_server: NatsServer, replicas: tuple[Acting, list[Replica]]
) -> None:
    acting, _ = replicas
    a = start(nats_server, replicas, "a")
    await until("a acting", lambda: a.ticks > 0)
    assert a.role() == "active" and a.activations == 1
    assert a.gauge() == "medbay_replica_active 1.0"
    b = start(nats_server, replicas, "b")
    await until("b ready", lambda: b.rt.ready)
    healthy, body = b.rt.health()
    assert healthy and body["info"] == {"role": "standby", "replica": b.active.name}
    assert b.gauge() == "medbay_replica_active 0.0"

    # while a renews (for twice its TTL), b only stands by
    lease = a.active.lease
    assert lease is not None
    renewed_from = lease.revision
    await until("a's renewals", lambda: lease.revision >= renewed_from + 2 * 3)
    assert b.role() == "standby" and b.ticks == 0 and b.activations == 0

    a.rt.stop()  # a gives the lease up as it stops: b need not wait for it to expire
    await a.finish()
    assert a.exit_code is None and "a" not in acting.now
    await until("b acting", lambda: b.ticks > 0)
    assert b.role() == "active" and b.activations == 1
    assert b.gauge() == "medbay_replica_active 1.0"
    assert acting.overlaps == []


async def test_a_replica_that_loses_its_lease_stops_acting_at_once_and_exits(
    nats_server: NatsServer,
    replicas: tuple[Acting, list[Replica]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another holder takes the key over (as after a lapse the replica did not see): the
    replica's next renewal fails, its active part is cancelled, it exits 3."""
    caplog.set_level(logging.INFO)
    acting, _ = replicas
    a = start(nats_server, replicas, "a")
    await until("a acting", lambda: a.ticks > 0)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        kv = await js.key_value(BUCKET)
        await kv.purge("active")
        intruder = Lease(js, kv, "active", "intruder", TTL)
        assert await intruder.try_acquire()
        await a.finish()
        assert a.exit_code == LEASE_LOST_EXIT
        assert acting.now == set() and not a.active.acting
        holder = await read_holder(kv, "active")
        assert holder is not None and holder.holder == "intruder"  # a left it alone
    finally:
        await nc.close()
    assert "was taken by another replica" in caplog.text
    assert f"exiting (status {LEASE_LOST_EXIT}) to stand by" in caplog.text


async def test_a_replica_cut_off_from_nats_stops_acting_before_its_lease_can_lapse(
    nats_server: NatsServer,
    replicas: tuple[Acting, list[Replica]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server stops answering (SIGSTOP): renewals hang, and the replica stops on its
    own clock, not waiting for NATS to come back or for its connection to drop."""
    caplog.set_level(logging.INFO)
    acting, _ = replicas
    a = start(nats_server, replicas, "a")
    await until("a acting", lambda: a.ticks > 0)
    assert nats_server.proc is not None
    nats_server.proc.send_signal(signal.SIGSTOP)
    try:
        await until("a no longer acting", lambda: "a" not in acting.now)
        assert not a.active.acting
    finally:
        nats_server.proc.send_signal(signal.SIGCONT)  # and a closes its connection
    await a.finish()
    assert a.exit_code == LEASE_LOST_EXIT
    assert f"could not renew the lease {BUCKET}.active within {TTL:g} s" in caplog.text
