"""One active replica of a service, the others standing by.

The planner (one learner, one writer of its model) and the approver (one Telegram
poller per bot) may run as several replicas, but only one of them acts. Each replica
holds or waits for a lease (``medbay.common.lease``) at key ``active`` of its
service's own KV bucket. The holder is the active replica: only it runs the
service's active part (its consumers, its background loops, its polling). The others
stand by, trying to take the lease every ``poll_seconds``. If the active replica
dies, even by kill -9, the server drops its lease ``ttl`` seconds after its last
renewal and a standby takes over: within ttl + poll_seconds (7 s by default).

A replica that cannot renew its lease in time, or finds it taken, stops acting at
once (its active part is cancelled) and exits with status ``LEASE_LOST_EXIT``; its
supervisor (``medbay up``, compose, Kubernetes) starts it again, and it stands by.
Exiting rather than stepping back to standby in the process is deliberate: the
active part's state in memory (a half-handled batch, a training, a poller, timers)
was built during a tenure that is over, and a fresh process rebuilds it from
JetStream when it next becomes active, as it does after any restart.

``acting`` says whether this replica may act this instant (the lease is held for
certain); writers of shared records check it and raise ``NotActive`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence

from prometheus_client import Gauge

from medbay.common.bus import jetstream
from medbay.common.lease import Lease, read_holder
from medbay.common.runtime import Hook, ServiceRuntime
from medbay.common.streams import StreamSpec

log = logging.getLogger(__name__)

ACTIVE_KEY = "active"
DEFAULT_LEASE_SECONDS = 6.0
POLL_SECONDS = 1.0
LEASE_LOST_EXIT = 3
"""Exit status of a replica that lost its lease (1 and 2 mean other things)."""
_RETRY_SECONDS = 0.5
_STOP_SECONDS = 3.0
_RELEASE_SECONDS = 1.0


class NotActive(Exception):
    """This replica is not, or no longer, the active one: it must not act."""


def replica_name() -> str:
    """This process, as a lease holder: ``MEDBAY_REPLICA_ID``, else ``POD_NAME``, else the
    host's name; then its pid and a random part, so that a restarted process never
    adopts the lease of the one before it (nor two processes given one name share it)."""
    base = os.environ.get("MEDBAY_REPLICA_ID") or os.environ.get("POD_NAME")
    return f"{(base or socket.gethostname())[:100]}/{os.getpid()}/{secrets.token_hex(3)}"


class ActiveReplica:
    """Runs a service's active part only while this replica holds the lease."""

    def __init__(
        self,
        rt: ServiceRuntime,
        bucket: str,
        *,
        ttl_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        key: str = ACTIVE_KEY,
    ) -> None:
        self.rt = rt
        self.bucket = bucket
        self.key = key
        self.lease_name = f"{bucket}.{key}"
        self.ttl = ttl_seconds
        self.poll_seconds = poll_seconds
        self.name = replica_name()
        self.lease: Lease | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._gauge = Gauge(
            "medbay_replica_active",
            "1 while this replica is the active one (holds the lease), 0 while it stands by",
            registry=rt.registry,
        )
        self._set_role("standby")

    @property
    def acting(self) -> bool:
        """Whether this replica may act now: it holds the lease for certain."""
        return (
            self._keeper is not None
            and not self._keeper.done()
            and self.lease is not None
            and self.lease.held
        )

    def _set_role(self, role: str) -> None:
        self.rt.info["role"] = role
        self.rt.info["replica"] = self.name
        self._gauge.set(1 if role == "active" else 0)

    async def run(
        self,
        *,
        needs: Sequence[StreamSpec] = (),
        on_start: Hook | None = None,
        on_active: Hook | None = None,
        tasks: Sequence[Hook] = (),
        on_stop: Hook | None = None,
    ) -> None:
        """``ServiceRuntime.run``, with ``on_active`` and ``tasks`` run only while active.

        ``on_start`` (every replica) must create the bucket. A replica that takes the
        lease at once runs ``on_active`` before it reports ready, as a single replica
        always did; a standby runs it when it takes over, then ``tasks``."""

        async def start() -> None:
            if on_start is not None:
                await on_start()
            js = jetstream(self.rt.broker)
            kv = await js.key_value(self.bucket)
            self.lease = Lease(js, kv, self.key, self.name, self.ttl)
            if not await self._acquire():
                holder = None
                with contextlib.suppress(Exception):  # only for the log line
                    holder = await read_holder(kv, self.key)
                log.info(
                    "standing by: %s is the active replica",
                    holder.holder if holder else "another replica",
                )
                return
            try:
                await self._while_held(on_active)
            except BaseException:
                await self._release()
                raise

        async def act() -> None:
            try:
                if self._keeper is None:
                    await self._stand_by()
                    await self._while_held(on_active)
                await self._while_held(lambda: _run_all(tasks))
            finally:
                await self._release()

        try:
            await self.rt.run(needs=needs, on_start=start, tasks=[act], on_stop=on_stop)
        except NotActive as lost:
            log.error("%s; exiting (status %d) to stand by", lost, LEASE_LOST_EXIT)
            raise SystemExit(LEASE_LOST_EXIT) from None
        finally:
            if self._keeper is not None:
                self._keeper.cancel()

    async def _acquire(self) -> bool:
        lease = self.lease
        assert lease is not None
        sent = lease.clock()
        try:
            async with asyncio.timeout(self.ttl):
                acquired = await lease.try_acquire()
            if not acquired:
                return False
        except Exception as exc:  # NATS away: try again later
            log.debug("taking the lease %s failed: %r", self.lease_name, exc)
            return False
        self._keeper = asyncio.create_task(self._keep(lease, sent + lease.ttl), name="keep-lease")
        self._set_role("active")
        log.info(
            "this replica (%s) is the active one now (lease %s, revision %d)",
            self.name,
            self.lease_name,
            lease.acquired_revision,
        )
        return True

    async def _stand_by(self) -> None:
        """Try to take the lease every ``poll_seconds`` until this replica has it."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if await self._acquire():
                return

    async def _keep(self, lease: Lease, valid_until: float) -> None:
        """Renew every ttl/3; return once the lease can no longer be counted on. A renewal
        may take no longer than the time left, so a hung request cannot keep us acting."""
        renew_at = lease.clock() + lease.renew_interval
        while True:
            now = lease.clock()
            if now >= valid_until:
                log.error("could not renew the lease %s within %g s", self.lease_name, lease.ttl)
                return
            if now < renew_at:
                await asyncio.sleep(min(renew_at, valid_until) - now)
                continue
            try:
                async with asyncio.timeout(valid_until - now):
                    renewed = await lease.renew()
            except Exception as exc:  # NATS away or slow: again while time is left
                log.warning("renewing the lease %s failed: %r", self.lease_name, exc)
                renew_at = lease.clock() + _RETRY_SECONDS
                continue
            if not renewed:
                log.error("the lease %s was taken by another replica", self.lease_name)
                return
            valid_until, renew_at = now + lease.ttl, now + lease.renew_interval

    async def _while_held(self, work: Hook | None) -> None:
        """Run ``work`` until it ends, or cancel it as soon as the lease is lost."""
        if work is None:
            return
        keeper = self._keeper
        assert keeper is not None
        task = asyncio.create_task(work())
        try:
            await asyncio.wait([task, keeper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=_STOP_SECONDS)
        if task.done() and not task.cancelled():
            failure = task.exception()
            if failure is None:
                return
            if not isinstance(failure, NotActive) and self.acting:
                raise failure
        raise NotActive(f"this replica ({self.name}) lost the lease {self.lease_name}")

    async def _release(self) -> None:
        """Stop renewing and give the lease up, so a standby need not wait for it to expire."""
        keeper, self._keeper = self._keeper, None
        if keeper is None:
            return
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        self._set_role("standby")
        if self.lease is not None and self.lease.held:  # else it is not ours to give up
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_RELEASE_SECONDS):
                    await self.lease.release()


async def _run_all(hooks: Sequence[Hook]) -> None:
    """Run ``hooks`` together until one ends (or fails: its error is raised); then stop
    the rest."""
    tasks = [asyncio.create_task(hook(), name=hook.__name__) for hook in hooks]
    if not tasks:
        await asyncio.Event().wait()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and (failure := task.exception()) is not None:
                raise failure
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=_STOP_SECONDS)
