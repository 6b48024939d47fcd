"""Leases in JetStream KV: one holder at a time, freed by the server when it dies.

A lease is a KV record written with a per-message TTL (JetStream's ``Nats-TTL``).
Its holder renews it (compare-and-swap on the revision it wrote) every
``ttl / 3``; if the holder dies, the server itself removes the record ``ttl``
seconds after the last renewal and the next ``try_acquire`` anywhere succeeds.
No clock but the server's decides expiry, so replicas with skewed clocks
cannot both believe they hold it.

The holder's own view is conservative: it counts ``ttl`` from the moment it
*sent* its last successful renewal (``held``), so it stops acting before the
server could have let anyone else in. Each acquisition has a distinct
``revision`` (the KV sequence), usable as a fencing token.

Used for: the detector's partitions, the planner's and approver's single active
replica, the executor's step claims. Each service keeps its leases in its own
bucket (all KV buckets allow per-message TTLs), so ownership stays one writer
per bucket.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medbay.common.events import utc_now

log = logging.getLogger(__name__)

MIN_TTL_SECONDS = 2.0
"""JetStream's per-message TTL has whole-second resolution; below 2 s a renewal every
ttl/3 would not leave room for one slow round trip."""

_WRONG_LAST_SEQUENCE = (10071, 10164)


class LeaseRecord(BaseModel):
    """What a lease key holds: who holds it, since when, and what it is for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holder: str = Field(min_length=1, max_length=200)
    acquired_at: datetime
    ttl_seconds: float = Field(gt=0)
    detail: dict[str, str] = Field(default_factory=dict, max_length=20)


async def read_holder(kv: KeyValue, key: str) -> LeaseRecord | None:
    """Who holds ``key`` now (None: nobody, or an unreadable record)."""
    found = await _read_record(kv, key)
    return None if found is None else found[0]


async def _read_record(kv: KeyValue, key: str) -> tuple[LeaseRecord, int] | None:
    """The record of ``key`` and its revision (None: none, or an unreadable one)."""
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    if not entry.value or entry.revision is None:
        return None
    try:
        return LeaseRecord.model_validate_json(entry.value), entry.revision
    except ValidationError:
        return None


class Lease:
    """One lease key, as seen by one would-be holder."""

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        key: str,
        holder: str,
        ttl_seconds: float,
        *,
        detail: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < MIN_TTL_SECONDS:
            raise ValueError(f"a lease lasts at least {MIN_TTL_SECONDS:g} s")
        self.js = js
        self.kv = kv
        self.key = key
        self.holder = holder
        self.ttl = ttl_seconds
        self.detail = detail or {}
        self.clock = clock
        self.revision = 0
        """The revision of our record while held: the fencing token of this tenure."""
        self.acquired_revision = 0
        self._valid_until = 0.0
        self._subject = f"{kv._pre}{key}"  # the bucket's subject prefix, "$KV.<bucket>."

    @property
    def held(self) -> bool:
        """Whether we hold it for certain: renewed less than ``ttl`` ago, counting from
        when the renewal was sent."""
        return self.revision > 0 and self.clock() < self._valid_until

    @property
    def renew_interval(self) -> float:
        return self.ttl / 3

    def _record(self) -> bytes:
        record = LeaseRecord(
            holder=self.holder,
            acquired_at=utc_now(),
            ttl_seconds=self.ttl,
            detail=self.detail,
        )
        return record.model_dump_json().encode()

    async def _write(self, last: int) -> int:
        """Write our record if the key's last revision is ``last`` (0: absent)."""
        ack = await self.js.publish(
            self._subject,
            self._record(),
            headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)},
            msg_ttl=math.ceil(self.ttl),  # never shorter than the tenure we count
        )
        return ack.seq

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it (or we already do). True if held now."""
        if self.held:
            return await self.renew()
        sent = self.clock()
        try:
            revision = await self._write(0)
        except APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                raise
            return await self._take_deleted_or_own(sent)
        self._held_from(revision, sent, acquired=True)
        return True

    async def _take_deleted_or_own(self, sent: float) -> bool:
        """The key has a record: ours from an earlier tenure of this holder (adopt it),
        a delete marker (take it), or someone else's (not ours)."""
        try:
            entry = await self.kv.get(self.key)
        except (KeyNotFoundError, KeyDeletedError) as missing:
            marker = getattr(missing, "entry", None)  # a delete or purge marker, if any
            if marker is None or not marker.revision:
                return False  # expired just now: the next attempt takes it
            try:
                revision = await self._write(marker.revision)
            except APIError:
                return False
            self._held_from(revision, sent, acquired=True)
            return True
        current = None
        if entry.value:
            try:
                current = LeaseRecord.model_validate_json(entry.value)
            except ValidationError:
                current = None
        if current is None or current.holder != self.holder or entry.revision is None:
            return False
        try:
            revision = await self._write(entry.revision)
        except APIError:
            return False
        self._held_from(revision, sent, acquired=True)
        return True

    def _held_from(self, revision: int, sent: float, *, acquired: bool) -> None:
        self.revision = revision
        if acquired:
            self.acquired_revision = revision
        self._valid_until = sent + self.ttl

    async def renew(self) -> bool:
        """Extend our tenure. False (and no longer held) if someone else has it now;
        a failed request (NATS away) leaves it held until its time runs out."""
        if self.revision == 0:
            return False
        sent = self.clock()
        try:
            revision = await self._write(self.revision)
        except APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                raise
            renewed = await self._renew_from_own_record()
            if renewed is None:
                log.warning("lease %s was lost (held by another since)", self.key)
                self.revision = 0
                return False
            revision = renewed
        self._held_from(revision, sent, acquired=False)
        return True

    async def _renew_from_own_record(self) -> int | None:
        """After a renewal was refused: one whose answer was lost (a timeout on a busy
        server) may have been written all the same, so the record moved on and is still
        ours (no one else writes our holder name). Renew from it; None if not ours."""
        found = await _read_record(self.kv, self.key)
        if found is None or found[0].holder != self.holder:
            return None
        try:
            return await self._write(found[1])
        except APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return None
            raise

    async def release(self) -> None:
        """Give it up at once, so the next holder need not wait for it to expire.

        What is left is a purge marker that itself expires after ``ttl``: keys of
        leases held once (a replica's membership, a step's claim) do not pile up."""
        revision, self.revision = self.revision, 0
        if revision == 0:
            return
        with contextlib.suppress(APIError, KeyWrongLastSequenceError):  # no longer ours
            await self.js.publish(
                self._subject,
                b"",
                headers={
                    "KV-Operation": "PURGE",
                    "Nats-Rollup": "sub",
                    Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision),
                },
                msg_ttl=math.ceil(self.ttl),  # never shorter than the tenure we count
            )
