"""Which partitions this detector replica holds, by leases in its bucket.

Every ``poll_seconds`` a replica:

1. keeps its membership lease, ``member.<replica>``: the live members are the
   ones whose lease the server still holds (a replica killed with -9 drops out
   ``ttl`` seconds after its last renewal);
2. renews the partition leases it holds, and gives up at once (``on_lost``) a
   partition whose lease it could not renew in time or that the service found
   written by another replica;
3. works out the assignment of every partition over the live members
   (``partitions.assign``, the same in every replica), hands over the partitions
   another live member should hold (``on_hand_over``: the service saves their
   state, then the lease is released), and takes the free ones that are its own
   (``on_acquired``).

A partition whose holder died is free once its lease expires, and the member it
is assigned to takes it on its next step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from medbay.common.kv import keys as kv_keys
from medbay.common.lease import Lease, read_holder
from medbay.detector.partitions import assign
from medbay.detector.snapshots import member_key, partition_key

log = logging.getLogger("medbay.detector.ownership")

MEMBER_PREFIX = "member."


class Ownership:
    """This replica's leases: its membership and the partitions it holds."""

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        *,
        replica: str,
        holder: str,
        partitions: int,
        ttl_seconds: float,
        on_acquired: Callable[[int, Lease], Awaitable[None]],
        on_hand_over: Callable[[int], Awaitable[None]],
        on_lost: Callable[[int], Awaitable[None]],
        still_ours: Callable[[int], bool] = lambda _: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.js = js
        self.kv = kv
        self.replica = replica
        self.holder = holder
        self.partitions = partitions
        self.ttl = ttl_seconds
        self.on_acquired = on_acquired
        self.on_hand_over = on_hand_over
        self.on_lost = on_lost
        self.still_ours = still_ours
        self.clock = clock
        self.member = self._lease(member_key(replica))
        self.held: dict[int, Lease] = {}
        self._renewed: dict[str, float] = {}
        self._warned_member = False

    def _lease(self, key: str) -> Lease:
        return Lease(self.js, self.kv, key, self.holder, self.ttl, detail={"replica": self.replica})

    def _due(self, lease: Lease) -> bool:
        return self.clock() - self._renewed.get(lease.key, -1e18) >= lease.renew_interval

    async def _keep(self, lease: Lease) -> bool:
        """Acquire or renew ``lease`` when due; whether it is held now. A failed request
        (NATS away) leaves it held until its time runs out."""
        if lease.held and not self._due(lease):
            return True
        try:
            ok = await lease.try_acquire()
        except Exception as exc:
            log.debug("lease %s: %r", lease.key, exc)
            return lease.held
        if ok:
            self._renewed[lease.key] = self.clock()
        return ok and lease.held

    async def step(self) -> None:
        """One round: membership, renewals, then hand-overs and acquisitions."""
        member = await self._keep(self.member)
        if not member and not self._warned_member:
            holder = await read_holder(self.kv, self.member.key)
            if holder is not None and holder.holder != self.holder:
                log.warning(
                    "replica id %s is taken by %s (another replica with the same id, or this "
                    "one before a restart); waiting for it",
                    self.replica,
                    holder.holder,
                )
                self._warned_member = True
        elif member:
            self._warned_member = False
        held = list(self.held.items())  # renewed together: one round trip, however many
        kept = await asyncio.gather(*(self._keep(lease) for _, lease in held))
        for (partition, lease), renewed in zip(held, kept, strict=True):
            if not renewed or not self.still_ours(partition):
                log.warning("partition %d lost; dropping its state", partition)
                del self.held[partition]
                await self.on_lost(partition)
                await lease.release()
        members = await self.live_members()
        if member:
            members.add(self.replica)
        else:
            members.discard(self.replica)
        owners = assign(self.partitions, members)
        mine = {p for p, owner in owners.items() if owner == self.replica}
        leaving = {p: self.held.pop(p) for p in sorted(set(self.held) - mine)}
        for partition in leaving:
            log.info("handing partition %d over to %s", partition, owners.get(partition))
        # together: one at a time, saving each would hold up the next round's renewals
        handed = await asyncio.gather(
            *(self._hand_over(p, lease) for p, lease in leaving.items()), return_exceptions=True
        )
        for failure in handed:
            if isinstance(failure, BaseException):
                raise failure
        for partition in sorted(mine - set(self.held)):
            lease = self._lease(partition_key(partition))
            if await self._keep(lease):
                self.held[partition] = lease
                await self.on_acquired(partition, lease)

    async def _hand_over(self, partition: int, lease: Lease) -> None:
        try:
            await self.on_hand_over(partition)
        finally:
            await lease.release()

    async def live_members(self) -> set[str]:
        """The replicas whose membership lease the server holds now."""
        try:
            keys = await kv_keys(self.kv, f"{MEMBER_PREFIX}*")
        except NotFoundError:
            return set()
        return {
            key.removeprefix(MEMBER_PREFIX)
            for key in keys
            if await read_holder(self.kv, key) is not None  # not released
        }

    async def release_all(self, hand_over: bool) -> None:
        """Give up every partition (after ``on_hand_over`` if ``hand_over``) and the
        membership, so the other replicas need not wait for the leases to expire."""
        held, self.held = self.held, {}
        if hand_over:  # together, as in ``step``: the stop has a few seconds for all
            await asyncio.gather(
                *(self._hand_over(p, lease) for p, lease in held.items()), return_exceptions=True
            )
        else:
            await asyncio.gather(*(lease.release() for lease in held.values()))
        await self.member.release()
