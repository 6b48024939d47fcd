"""JetStream KV records: compare-and-swap, listing, and declaring buckets.

Every service that keeps shared state in a KV bucket (the executor's rails, the
approver's decisions) changes a record only through ``change``, so two writers
never overwrite each other: the loser re-reads and tries again. ``keys`` and
``entries`` list a bucket completely, which nats-py's watcher does not promise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from pydantic import BaseModel, ValidationError

from medbay.common.access import BucketSpec
from medbay.common.settings import offline_problem, peer_offline, replicas_problem

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

log = logging.getLogger(__name__)


async def read(
    kv: KeyValue, key: str, model: type[M], *, unreadable_as_none: bool = False
) -> tuple[M | None, int]:
    """The record at ``key`` and its revision; (None, 0) if never written or deleted.

    A record that does not validate raises ``ValidationError``, or with
    ``unreadable_as_none`` reads as (None, its revision), with a warning.
    """
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return None, 0
    if entry.value is None:
        return None, 0
    try:
        return model.model_validate_json(entry.value), entry.revision or 0
    except ValidationError as exc:
        if not unreadable_as_none:
            raise
        log.warning("unreadable record %s, replaced by the next write: %s", key, exc.errors()[:1])
        return None, entry.revision or 0


_READS_IN_FLIGHT = 64


async def keys(kv: KeyValue, pattern: str = ">") -> list[str]:
    """The keys matching ``pattern`` that hold a value or a delete marker (reading one
    says which), from the bucket stream's subjects. Not from a watcher: nats-py's says
    "that was all" when the server reports nothing pending, which on a busy machine can
    come before values still in flight, so a listing could miss keys."""
    prefix = kv._pre  # "$KV.<bucket>."
    info = await kv._js.stream_info(kv._stream, subjects_filter=prefix + pattern)
    return sorted(s.removeprefix(prefix) for s in info.state.subjects or {})


async def entries(kv: KeyValue, pattern: str = ">") -> list[KeyValue.Entry]:
    """The current entries of the keys matching ``pattern``, by key (deleted ones left
    out), read concurrently, at most ``_READS_IN_FLIGHT`` at a time (a plan book holds
    thousands)."""
    in_flight = asyncio.Semaphore(_READS_IN_FLIGHT)

    async def entry(key: str) -> KeyValue.Entry | None:
        async with in_flight:
            try:
                return await kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                return None

    found = await asyncio.gather(*(entry(key) for key in await keys(kv, pattern)))
    return [e for e in found if e is not None and e.value is not None]


async def change(
    kv: KeyValue,
    key: str,
    model: type[M],
    transition: Callable[[M | None], M | None],
    *,
    unreadable_as_none: bool = False,
) -> tuple[M | None, M | None, int]:
    """Apply ``transition`` to the record until no other writer gets in between.

    ``transition`` gets the current record (None if there is none) and returns the
    new one, or None to leave it as it is. Returns (old, new or None, revision).
    With ``unreadable_as_none`` a record that does not validate is given to
    ``transition`` as None, so what it returns replaces it rather than the record
    blocking its key for ever.
    """
    while True:
        old, revision = await read(kv, key, model, unreadable_as_none=unreadable_as_none)
        new = transition(old)
        if new is None:
            return old, None, revision
        data = new.model_dump_json().encode()
        try:
            if revision == 0:
                revision = await kv.create(key, data)
            else:
                revision = await kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError:
            continue
        return old, new, revision


async def patiently(declare: Callable[[], Awaitable[T]], what: str, patience: float = 120.0) -> T:
    """``declare()``, asked again while the JetStream API does not answer (a cluster
    electing its leaders, or busy) or cannot place copies on a server that is offline,
    for up to ``patience`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            return await declare()
        except (TimeoutError, NoRespondersError, APIError) as exc:
            offline = peer_offline(exc)
            if isinstance(exc, APIError) and not offline:
                raise
            if loop.time() > deadline:
                raise offline_problem(what, exc) if offline else exc from None
            log.warning("declaring %s: %r; trying again", what, exc)
            await asyncio.sleep(1.0)


async def declare_key_value(
    js: JetStreamContext, config: KeyValueConfig, patience: float = 120.0
) -> KeyValue:
    """Create the owner's bucket, or bring an existing one to ``config`` (its replicas,
    history, TTL and description): how a bucket follows ``MEDBAY_NATS_REPLICAS``."""
    return await patiently(lambda: _declare_key_value(js, config), config.bucket, patience)


async def open_key_value(
    js: JetStreamContext,
    bucket: BucketSpec,
    *,
    history: int,
    replicas: int,
    ttl_seconds: float | None = None,
) -> KeyValue:
    """The owner's KV bucket as ``bucket`` names and describes it: on file storage, in
    ``replicas`` copies, keeping ``history`` values per key (for ``ttl_seconds``, or for
    ever)."""
    return await declare_key_value(
        js,
        KeyValueConfig(
            bucket=bucket.name,
            description=bucket.description,
            history=history,
            ttl=ttl_seconds,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


async def _declare_key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    try:
        return await js.create_key_value(config=config)
    except BadRequestError as exc:  # it exists with other settings
        stream = await _update_bucket_stream(js, f"KV_{config.bucket}", config.replicas, exc)
        stream.max_msgs_per_subject = config.history
        stream.max_age = config.ttl
        stream.description = config.description
        await _apply(js, stream, config.replicas)
        return await js.key_value(config.bucket)


async def declare_object_store(
    js: JetStreamContext, bucket: str, config: ObjectStoreConfig, patience: float = 120.0
) -> ObjectStore:
    """The same for an Object Store bucket."""
    return await patiently(lambda: _declare_object_store(js, bucket, config), bucket, patience)


async def _declare_object_store(
    js: JetStreamContext, bucket: str, config: ObjectStoreConfig
) -> ObjectStore:
    try:
        return await js.create_object_store(bucket, config=config)
    except BadRequestError as exc:
        stream = await _update_bucket_stream(js, f"OBJ_{bucket}", config.replicas, exc)
        stream.description = config.description
        await _apply(js, stream, config.replicas)
        return await js.object_store(bucket)


async def _update_bucket_stream(
    js: JetStreamContext, name: str, replicas: int, exc: APIError
) -> StreamConfig:
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        raise replicas_problem(name, replicas, exc) from None
    stream = info.config
    stream.num_replicas = replicas
    return stream


async def _apply(js: JetStreamContext, stream: StreamConfig, replicas: int) -> None:
    try:
        await js.update_stream(config=stream)
    except APIError as exc:
        raise replicas_problem(stream.name or "", replicas, exc) from None
    log.info("bucket stream %s updated (%d replicas)", stream.name, replicas)
