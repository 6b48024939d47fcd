"""Detector state that survives restarts, kept in a JetStream key-value bucket.

Choice: snapshots in KV plus replay. Every few seconds (and when it stops) the
detector writes each changed host's state to key ``host.<host>`` and then the
``watermark``: the METRICS sequence up to which all snapshots are complete. On
start it loads the snapshots and replays METRICS from the watermark, skipping
per host what its snapshot already holds. Issue events re-derived by the replay
have the same deterministic ids as the first time, so JetStream drops them as
duplicates: a crash loses no issue and opens none twice.

A snapshot is a small JSON header followed by the raw bytes of its arrays;
nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import struct

import numpy as np
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from medbay.common.access import DETECTOR_STATE
from medbay.common.streams import token
from medbay.detector.engine import FloatArray, HostSnapshot

log = logging.getLogger(__name__)

BUCKET = DETECTOR_STATE.name
WATERMARK = "watermark"
FORMAT = 2


def encode(snap: HostSnapshot) -> bytes:
    """A JSON header (metadata and each array's dtype and shape), then the raw arrays."""
    arrays = {name: np.ascontiguousarray(a) for name, a in snap.arrays.items()}
    layout = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    header = json.dumps({"format": FORMAT, "arrays": layout, **snap.meta}).encode()
    return b"".join(
        [struct.pack(">I", len(header)), header, *(a.tobytes() for a in arrays.values())]
    )


def decode(data: bytes) -> HostSnapshot:
    (size,) = struct.unpack(">I", data[:4])
    meta = json.loads(data[4 : 4 + size])
    if meta.pop("format", None) != FORMAT:
        raise ValueError("unknown snapshot format")
    arrays: dict[str, FloatArray] = {}
    offset = 4 + size
    for name, dtype_str, shape in meta.pop("arrays"):
        dtype = np.dtype(dtype_str)
        if dtype.kind not in "fiu":
            raise ValueError(f"unexpected dtype {dtype_str} in snapshot")
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        offset += count * dtype.itemsize
    return HostSnapshot(meta, arrays)


class SnapshotStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> SnapshotStore:
        kv = await js.create_key_value(
            config=KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE)
        )
        return cls(kv)

    async def save_host(self, snap: HostSnapshot) -> None:
        await self.kv.put(f"host.{token(str(snap.meta['host']))}", encode(snap))

    async def save_watermark(self, seq: int) -> None:
        await self.kv.put(WATERMARK, str(seq).encode())

    async def load(self) -> tuple[int | None, list[HostSnapshot]]:
        """The watermark (None on a first start) and every host's snapshot."""
        try:
            entry = await self.kv.get(WATERMARK)
            watermark = int(entry.value or b"0")
        except KeyNotFoundError:
            return None, []
        snaps = []
        try:
            keys = await self.kv.keys()
        except Exception:  # nats-py raises NoKeysError for an empty bucket
            keys = []
        for key in keys:
            if key.startswith("host."):
                entry = await self.kv.get(key)
                try:
                    snaps.append(decode(entry.value or b""))
                except (ValueError, KeyError, TypeError, struct.error) as exc:
                    log.warning("snapshot %s is unreadable (%s); that host starts afresh", key, exc)
        return watermark, snaps
