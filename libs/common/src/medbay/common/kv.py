"""Compare-and-swap on JetStream KV records: how replicas share state safely.

Every service that keeps shared state in a KV bucket (the executor's rails, the
approver's decisions) changes a record only through ``change``, so two writers
never overwrite each other: the loser re-reads and tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

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
