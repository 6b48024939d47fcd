"""What the planner reads of the executor's KV bucket ``medbay_executor`` (and never
writes): the catalog of its targets, and which flap breakers are open.

The executor creates the bucket and writes the catalog when it starts; until
then there is nothing to read, and that is not an error.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from medbay.common.records import EXECUTOR_RAILS, TargetCatalog, open_breakers, read_target_catalog


class ExecutorRails:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue | None:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(EXECUTOR_RAILS.name)
            except BucketNotFoundError:
                return None
        return self._kv

    async def catalog(self) -> TargetCatalog | None:
        """The executor's target catalog; None if it has written none (or an unreadable one)."""
        kv = await self._bucket()
        return None if kv is None else await read_target_catalog(kv)

    async def open_breakers(self) -> frozenset[str]:
        """The targets whose flap breaker is open."""
        kv = await self._bucket()
        return frozenset() if kv is None else frozenset(await open_breakers(kv))
