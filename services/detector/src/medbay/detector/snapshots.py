"""Detector state that survives restarts, kept in a JetStream key-value bucket.

Choice: snapshots in KV plus replay. Every few seconds (and when it stops) the
detector writes each changed host's state to key ``host.<host>`` and then the
``watermark``: the METRICS sequence up to which all snapshots are complete. On
start it loads the snapshots and replays METRICS from the watermark, skipping
per host what its snapshot already holds. Issue events re-derived by the replay
have the same deterministic ids as the first time, so JetStream drops them as
duplicates: a crash loses no issue and opens none twice.

A snapshot is a small JSON header followed by a compressed numpy archive; nothing
is unpickled.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from medbay.common.streams import token
from medbay.detector.engine import HostSnapshot

BUCKET = "medbay_detector_state"
WATERMARK = "watermark"
FORMAT = 1


def encode(snap: HostSnapshot) -> bytes:
    header = json.dumps({"format": FORMAT, **snap.meta}).encode()
    buf = io.BytesIO()
    np.savez(buf, **snap.arrays)  # type: ignore[arg-type]  # numpy stubs miss **arrays
    return struct.pack(">I", len(header)) + header + zlib.compress(buf.getvalue(), 1)


def decode(data: bytes) -> HostSnapshot:
    (size,) = struct.unpack(">I", data[:4])
    meta = json.loads(data[4 : 4 + size])
    if meta.pop("format", None) != FORMAT:
        raise ValueError("unknown snapshot format")
    with np.load(io.BytesIO(zlib.decompress(data[4 + size :])), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
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
                if entry.value:
                    snaps.append(decode(entry.value))
        return watermark, snaps
