"""One executor's tenure as the runner of one plan: a lease it keeps renewed.

Executor replicas share their consumers as work queues, and any of them may come
across a ``running`` plan: the one that received it or its approval, and every
replica following the plan book (``PlanBook.follow``), which is how the plans of
an executor that died are taken over. Whoever holds the plan's lease
(``rails.run_key``, in ``medbay_executor``) runs it; the others leave it alone.

The runner renews the lease every ``lease.renew_seconds`` in the background, so a
step may take minutes (its action, then its verification) without anyone else
touching the plan: a second replica starting meanwhile (a rolling update) sees the
lease held and waits. If the runner dies, the server drops the lease
``lease.ttl_seconds`` after the last renewal, another replica takes it, finds the
step that was running claimed with no outcome (``rails.claim_step``: a permanent
record) and reports it ``interrupted``: it is never run twice.

A runner cut off from NATS for longer than the TTL (or starved that long) may
find on its return that another took its plan over and reported its step
interrupted. Its own result then still counts: its ``ActionResult`` has an event
id of its own (``interrupted`` results and plan ends are derived differently),
its outcome replaces the ``interrupted`` one in the step's claim and in the plan
book, and it goes on with the plan once the lease is its again
(``ExecutorService._carry_on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from medbay.common.lease import Lease

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
"""How soon a failed renewal is tried again."""


class PlanRun:
    """The lease of one plan's run, as held by this executor.

    Every use of the lease goes through one lock, so the background renewal and a
    check between steps never race each other's compare-and-swap.
    """

    def __init__(self, lease: Lease, renew_seconds: float) -> None:
        self.lease = lease
        self.renew_seconds = renew_seconds
        self._lock = asyncio.Lock()
        self._renewing: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Take the lease if nobody holds it, and keep it renewed. False: another runs it."""
        async with self._lock:
            if not await self.lease.try_acquire():
                return False
        self._keep_renewing()
        return True

    async def regain(self) -> bool:
        """Make sure the lease is ours before the next move; True if it has been ours all
        along, False if it lapsed and was taken back (anything may have happened to the
        plan meanwhile). While another replica holds it, wait for it to let go."""
        tenure = self.lease.acquired_revision
        waiting = False
        while True:
            async with self._lock:
                try:
                    if await self.lease.try_acquire():
                        break
                except Exception as exc:  # NATS away: as long as it takes
                    log.debug("lease %s: %r", self.lease.key, exc)
            if not waiting:
                log.warning("lease %s lapsed; waiting to take it back", self.lease.key)
                waiting = True
            await asyncio.sleep(self.renew_seconds)
        self._keep_renewing()
        return self.lease.acquired_revision == tenure

    async def end(self) -> None:
        """Stop renewing and give the lease up, so that nobody need wait for it to lapse
        (another replica, after a stop in the middle of a plan)."""
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        async with self._lock:
            with contextlib.suppress(Exception):  # NATS away: it lapses by itself
                await self.lease.release()

    def _keep_renewing(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew(), name=f"renew {self.lease.key}")

    async def _renew(self) -> None:
        """Renew every ``renew_seconds``. After a failed attempt (NATS away, e.g. while
        a new leader of the bucket is elected) try again sooner, and take a lease that
        lapsed meanwhile back at once unless another replica did: the first to write
        once the bucket is back should be the executor still running the plan."""
        wait = self.renew_seconds
        while True:
            await asyncio.sleep(wait)
            async with self._lock:
                try:
                    held = await self.lease.try_acquire() or await self.lease.try_acquire()
                except Exception as exc:  # NATS away: ours until its time is up
                    log.warning("lease %s not renewed: %r", self.lease.key, exc)
                    wait = min(RETRY_SECONDS, self.renew_seconds)
                    continue
            if not held:  # another executor holds it now
                return
            wait = self.renew_seconds
