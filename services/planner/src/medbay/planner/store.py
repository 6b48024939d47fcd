"""What the planner keeps in JetStream, and how it reads its history back.

* Object store ``medbay_models``: one object per accepted model version, named
  by the version (a ``ModelBundle`` in the format of ``modelfile``, which loads
  nothing that can run code); its description is a JSON summary with the
  validation accuracy. The latest ``keep_models`` versions are kept.
* KV bucket ``medbay_planner``: ``current_model`` holds the name of the current
  version, ``success_rates`` the raw success rates as JSON (``SuccessRates.snapshot``),
  ``initial_model`` the version of the last ``initial_model`` file judged, so
  that each file is judged once. Each is written by compare-and-swap over the
  revision this store last wrote or read (``track``): a planner replica that is no
  longer the active one cannot overwrite what its successor wrote. Key ``active``
  is the lease of the active replica (``medbay.common.active``).
* ``read_current_model`` reads the current model as any identity allowed to
  read both buckets does (the gateway, the CLI and so the lab), creating nothing.
* ``read_recent`` reads the latest messages of a stream once, through an
  ephemeral consumer that acknowledges nothing: at start-up the planner rebuilds
  its recent plans and their outcomes from PLANS and RESULTS with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    ObjectMeta,
    ObjectStoreConfig,
    StorageType,
)
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from medbay.common.access import MODELS as MODELS_BUCKET
from medbay.common.access import PLANNER_STATE
from medbay.common.active import NotActive
from medbay.common.kv import declare_object_store, open_key_value
from medbay.common.reading import read
from medbay.common.records import CURRENT_MODEL_KEY, SUCCESS_RATES_KEY
from medbay.common.streams import StreamSpec
from medbay.planner.model import ModelBundle
from medbay.planner.modelfile import RefusedModel, dumps, loads

log = logging.getLogger(__name__)

BUCKET = PLANNER_STATE.name
MODELS = MODELS_BUCKET.name
CURRENT_MODEL = CURRENT_MODEL_KEY
SUCCESS_RATES = SUCCESS_RATES_KEY
INITIAL_MODEL = "initial_model"
WRITTEN_KEYS = (CURRENT_MODEL, SUCCESS_RATES, INITIAL_MODEL)


def _always() -> bool:
    return True


class ModelStore:
    def __init__(
        self,
        kv: KeyValue,
        objects: ObjectStore,
        keep: int,
        may_write: Callable[[], bool] = _always,
    ) -> None:
        """``may_write``: whether this planner is the active one now (checked before
        every write, and when a compare-and-swap finds another writer)."""
        self.kv = kv
        self.objects = objects
        self.keep = keep
        self.may_write = may_write
        self._revisions: dict[str, int] = {}

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        keep: int = 10,
        replicas: int = 1,
        may_write: Callable[[], bool] = _always,
    ) -> ModelStore:
        """Declare the buckets (created on first use, kept in ``replicas`` copies)."""
        kv = await open_key_value(js, PLANNER_STATE, history=5, replicas=replicas)
        objects = await declare_object_store(
            js,
            MODELS,
            ObjectStoreConfig(
                bucket=MODELS,
                description="Planner model versions",
                storage=StorageType.FILE,
                replicas=replicas,
            ),
        )
        return cls(kv, objects, keep, may_write)

    async def track(self) -> None:
        """Take the records this store writes as they are now: from here on each write
        must find the revision this store last saw (what a planner does on becoming the
        active one)."""
        for key in WRITTEN_KEYS:
            self._revisions[key] = await self._revision(key)

    async def _revision(self, key: str) -> int:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):  # created anew (over a delete marker)
            return 0
        return entry.revision or 0

    def _check_active(self, what: str) -> None:
        if not self.may_write():
            raise NotActive(f"not writing {what}: this planner is no longer the active one")

    async def _write(self, key: str, value: bytes) -> None:
        """Write ``key`` over the revision this store last saw. Another revision means
        another replica wrote it: if this one is still the active one that writer was
        deposed (its write crossed the takeover) and is overwritten; otherwise this one
        was, and stops (``NotActive``)."""
        while True:
            self._check_active(key)
            last = self._revisions.get(key)
            if last is None:
                last = await self._revision(key)
            try:
                if last:
                    revision = await self.kv.update(key, value, last=last)
                else:
                    revision = await self.kv.create(key, value)
            except KeyWrongLastSequenceError:
                self._revisions.pop(key, None)
                log.warning("%s was written by another planner replica since this one read it", key)
                continue
            self._revisions[key] = revision
            return

    async def current_version(self) -> str | None:
        try:
            entry = await self.kv.get(CURRENT_MODEL)
        except KeyNotFoundError:
            return None
        return (entry.value or b"").decode() or None

    async def load(self, version: str) -> ModelBundle:
        """A stored model version, e.g. the one a plan names (``Plan.model_version``).

        Raises ``RefusedModel`` if the object is not a model this planner will load."""
        return await _load(self.objects, version)

    async def load_current(self) -> ModelBundle | None:
        """The current model, or None when there is none (or it cannot be read)."""
        version = await self.current_version()
        if version is None:
            return None
        try:
            return await self.load(version)
        except RefusedModel as exc:
            log.warning("current %s; planning by rules", exc)
        except Exception as exc:  # a missing model or a broken bucket must not stop the planner
            log.warning("current model %s is unusable (%r); planning by rules", version, exc)
        return None

    async def save(self, bundle: ModelBundle) -> None:
        """Store ``bundle`` and make it the current model; drop the oldest versions."""
        meta = ObjectMeta(name=bundle.version, description=json.dumps(bundle.description()))
        self._check_active(f"model {bundle.version}")
        await self.objects.put(bundle.version, dumps(bundle), meta=meta)
        await self._write(CURRENT_MODEL, bundle.version.encode())
        await self._prune(bundle.version)

    async def _prune(self, current: str) -> None:
        try:
            infos = await self.objects.list(ignore_deletes=True)
        except NotFoundError:
            return
        infos.sort(key=lambda i: i.mtime or "", reverse=True)
        for info in infos[self.keep :]:
            if info.name != current:
                await self.objects.delete(info.name)

    async def save_rates(self, snapshot: dict[str, Any]) -> None:
        await self._write(SUCCESS_RATES, json.dumps(snapshot, sort_keys=True).encode())

    async def judged_initial_model(self) -> str | None:
        """The version of the last ``initial_model`` file judged (adopted or not)."""
        try:
            entry = await self.kv.get(INITIAL_MODEL)
        except KeyNotFoundError:
            return None
        return (entry.value or b"").decode() or None

    async def record_judged_initial_model(self, version: str) -> None:
        await self._write(INITIAL_MODEL, version.encode())


async def _load(objects: ObjectStore, version: str) -> ModelBundle:
    result = await objects.get(version)
    try:
        bundle = loads(result.data or b"")
        if bundle.version != version:
            raise RefusedModel(f"it holds model {bundle.version}")
    except RefusedModel as exc:
        raise RefusedModel(f"model {version} refused: {exc}") from exc
    return bundle


async def read_current_model(js: JetStreamContext) -> ModelBundle | None:
    """The planner's current model, read without writing anything (so by any identity
    that may read ``medbay_planner`` and ``medbay_models``); None if there is none yet.

    Raises ``RefusedModel`` if it is not a model a planner would load."""
    try:
        kv = await js.key_value(BUCKET)
        entry = await kv.get(CURRENT_MODEL)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    version = (entry.value or b"").decode()
    if not version:
        return None
    return await _load(await js.object_store(MODELS), version)


async def read_success_rates(js: JetStreamContext) -> dict[str, Any] | None:
    """The success rates the planner last stored (see ``SuccessRates.snapshot``)."""
    kv = await js.key_value(BUCKET)
    try:
        entry = await kv.get(SUCCESS_RATES)
    except KeyNotFoundError:
        return None
    rates: dict[str, Any] = json.loads(entry.value or b"{}")
    return rates


async def read_recent(
    js: JetStreamContext, spec: StreamSpec, limit: int, batch: int = 512
) -> AsyncIterator[list[bytes]]:
    """The payloads of the latest ``limit`` messages of ``spec``'s stream, in batches,
    up to the last message stored when called."""
    async for msgs in read(js, spec, last=limit, batch=batch, idle_seconds=2):
        yield [m.data for m in msgs]
