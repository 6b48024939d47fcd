"""Detector state that survives restarts and moves between replicas, in JetStream KV.

Choice: snapshots in KV plus replay, per METRICS partition. Every few seconds
(and when it stops or hands a partition over) the replica holding a partition
writes each changed host's state to ``snapshot.<partition>.<host>`` and then the
partition's watermark, ``watermark.<partition>``: the METRICS sequence up to
which the partition's snapshots are complete. Whoever takes the partition next
(the same replica restarted, or another when this one died) loads its snapshots
and replays the partition from the watermark, skipping per host what its snapshot
already holds. Issue events re-derived by the replay have the same ids as the
first time (they come from the issue's fingerprint and episode), so JetStream
drops them as duplicates: a crash loses no issue and opens none twice.

The single detector of earlier releases kept ``host.<host>`` and one
``watermark``; a partition with no watermark of its own starts from those (and
likewise from another partition count's keys), replaying every METRICS subject
from that watermark and keeping its own hosts' batches, and then removes them.

A snapshot is a small JSON header followed by the raw bytes of its arrays;
nothing is unpickled. ``export_host`` and ``import_host`` turn one host's engine
state into a ``HostSnapshot`` and back; what is read back is checked field by
field (``SnapshotError``) before the engine is touched, so an unreadable snapshot
is skipped with a warning and that host starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from medbay.common.access import DETECTOR_STATE
from medbay.common.bus import NotHeld
from medbay.common.events import Severity
from medbay.common.kv import entries as kv_entries
from medbay.common.kv import keys as kv_keys
from medbay.common.kv import open_key_value
from medbay.common.streams import metrics_partition, token
from medbay.detector.anomaly import StateArray
from medbay.detector.engine import (
    GAP_HISTORY,
    INTERVAL_HISTORY,
    DetectionEngine,
    Episode,
    HostState,
    NoTrafficIssue,
    OpenIssue,
    SeriesKey,
    ServiceTraffic,
    SilentIssue,
)

log = logging.getLogger(__name__)

BUCKET = DETECTOR_STATE.name
WATERMARK = "watermark"
"""The single detector's watermark (before METRICS was partitioned)."""
FORMAT = 2


class SnapshotError(ValueError):
    """A stored snapshot is not what ``export_host`` writes; the message says where."""


@dataclass
class HostSnapshot:
    """Everything the engine knows about one host, as plain data and arrays."""

    meta: dict[str, object]
    arrays: dict[str, StateArray]


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
    if not isinstance(meta, dict):
        raise SnapshotError("snapshot header is not a JSON object")
    if meta.pop("format", None) != FORMAT:
        raise SnapshotError("unknown snapshot format")
    arrays: dict[str, StateArray] = {}
    offset = 4 + size
    for name, dtype_str, shape in meta.pop("arrays"):
        dtype = np.dtype(dtype_str)
        if dtype.kind not in "fiu":
            raise SnapshotError(f"unexpected dtype {dtype_str} in snapshot")
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        offset += count * dtype.itemsize
    return HostSnapshot(meta, arrays)


# -- engine state <-> snapshot -----------------------------------------------------


def export_host(engine: DetectionEngine, host: str) -> HostSnapshot:
    state = engine.hosts[host]
    keys = list(state.index)
    rows = np.array([state.index[k] for k in keys], dtype=np.intp)
    local = {int(r): i for i, r in enumerate(rows.tolist())}
    th = engine.thresholds
    arrays: dict[str, StateArray] = {
        "level": th.level[rows].astype(np.float64),
        "pending": th.pending[rows].astype(np.float64),
        "count": th.count[rows].astype(np.float64),
        "last_value": engine.last_value[rows],
    }
    blocks: dict[str, list[int]] = {}
    for name, block in engine.blocks.items():
        members = [
            (i, w[1])
            for i, r in enumerate(rows.tolist())
            if (w := engine.block_of[r]) is not None and w[0] == name
        ]
        if not members:
            continue
        blocks[name] = [i for i, _ in members]
        brows = np.array([b for _, b in members], dtype=np.intp)
        arrays[f"{name}/level"] = block.debounce.level[brows].astype(np.float64)
        arrays[f"{name}/pending"] = block.debounce.pending[brows].astype(np.float64)
        arrays[f"{name}/count"] = block.debounce.count[brows].astype(np.float64)
        arrays[f"{name}/last_score"] = block.last_score[brows]
        arrays[f"{name}/seen"] = block.seen[brows].astype(np.float64)
        for key, values in block.detector.get_state().items():
            arrays[f"{name}/state/{key}"] = np.asarray(values)[brows]
    meta: dict[str, object] = {
        "host": host,
        "last_seq": state.last_seq,
        "config": engine.config.fingerprint(),
        "series": [[name, [list(kv) for kv in items]] for name, items in keys],
        "blocks": blocks,
        "open": [
            {
                "row": local[issue.row],
                "source": issue.source,
                "fingerprint": issue.fingerprint,
                "severity": issue.severity.value,
                "first_seen": issue.first_seen.isoformat(),
                "episode": issue.episode,
                "updates": issue.updates,
            }
            for issue in state.open.values()
        ],
        "silence": _export_silence(state),
        "traffic": _export_traffic(state),
        "episodes": [[f, e.count, e.last_event] for f, e in state.episodes.items()],
        "episodes_pruned": state.episodes_pruned,
    }
    return HostSnapshot(meta, arrays)


def _export_silence(state: HostState) -> dict[str, object]:
    silent = state.silent
    return {
        "last_arrival": state.last_arrival,
        "last_collected": state.last_collected,
        "intervals": list(state.intervals),
        "open": None
        if silent is None
        else {
            "fingerprint": silent.fingerprint,
            "first_seen": silent.first_seen.isoformat(),
            "since": silent.since,
            "limit": silent.limit,
            "episode": silent.episode,
        },
    }


def _export_traffic(state: HostState) -> dict[str, object]:
    return {
        "from": state.traffic_from,
        "services": [
            {
                "service": name,
                "last_seen": series.last_seen,
                "appearances": series.appearances,
                "gaps": list(series.gaps),
                "open": None
                if series.issue is None
                else {
                    "fingerprint": series.issue.fingerprint,
                    "first_seen": series.issue.first_seen.isoformat(),
                    "limit": series.issue.limit,
                    "episode": series.issue.episode,
                },
            }
            for name, series in state.traffic.items()
        ],
    }


def _expect(value: object, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind`` (an int is never a bool); else ``SnapshotError``."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SnapshotError(f"snapshot {what}: expected {kind.__name__}, got {value!r:.80}")
    return value


def _rows(arrays: dict[str, StateArray], name: str, count: int) -> StateArray:
    """The array ``name`` with one entry per row (``count`` of them)."""
    if name not in arrays:
        raise SnapshotError(f"snapshot has no array {name!r}")
    array = arrays[name]
    if array.ndim < 1 or array.shape[0] != count:
        raise SnapshotError(f"snapshot array {name!r} has shape {array.shape}, not {count} rows")
    return array


@dataclass(frozen=True)
class _OpenItem:
    row: int
    source: str
    fingerprint: str
    severity: Severity
    first_seen: datetime
    episode: int
    updates: int


def _count(value: object, what: str) -> int:
    """A count of at least 0; a snapshot written before it existed has none (0)."""
    count = 0 if value is None else _expect(value, int, what)
    if count < 0:
        raise SnapshotError(f"snapshot {what}: {count} is negative")
    return int(count)


def _episodes(value: object) -> dict[str, Episode]:
    """The ``episodes`` part; a snapshot written before it existed has none."""
    episodes: dict[str, Episode] = {}
    for entry in _expect(value if value is not None else [], list, "episodes"):
        items = _expect(entry, list, "episode")
        if len(items) != 3:
            raise SnapshotError(f"snapshot episode: expected 3 items, got {items!r:.80}")
        fingerprint = _expect(items[0], str, "episode fingerprint")
        count = _count(items[1], "episode count")
        episodes[fingerprint] = Episode(count, _seconds(items[2], "episode last_event"))
    return episodes


def _series(value: object) -> list[SeriesKey]:
    keys: list[SeriesKey] = []
    for entry in _expect(value, list, "series"):
        name, items = _pair(entry, "series entry")
        labels = tuple(
            (str(k), str(v))
            for k, v in (_pair(i, "series label") for i in _expect(items, list, "series labels"))
        )
        keys.append((str(name), labels))
    return keys


def _pair(value: object, what: str) -> tuple[object, object]:
    items = _expect(value, list, what)
    if len(items) != 2:
        raise SnapshotError(f"snapshot {what}: expected a pair, got {items!r:.80}")
    return items[0], items[1]


def _blocks(value: object, arrays: dict[str, StateArray], count: int) -> dict[str, list[int]]:
    blocks: dict[str, list[int]] = {}
    for name, members in _expect(value, dict, "blocks").items():
        where = f"blocks.{name}"
        indices = [_expect(i, int, f"{where} member") for i in _expect(members, list, where)]
        if any(not 0 <= i < count for i in indices):
            raise SnapshotError(f"snapshot {where}: a member is not one of its {count} series")
        for suffix in ("level", "pending", "count", "last_score", "seen"):
            _rows(arrays, f"{name}/{suffix}", len(indices))
        for key in arrays:
            if key.startswith(f"{name}/state/"):
                _rows(arrays, key, len(indices))
        blocks[str(name)] = indices
    return blocks


def _open_issue(value: object, count: int) -> _OpenItem:
    item = _expect(value, dict, "open issue")
    row = _expect(item.get("row"), int, "open issue row")
    if not 0 <= row < count:
        raise SnapshotError(f"snapshot open issue row {row}: not one of its {count} series")
    try:
        severity = Severity(item.get("severity"))
        first_seen = datetime.fromisoformat(_expect(item.get("first_seen"), str, "first_seen"))
    except ValueError as exc:
        raise SnapshotError(f"snapshot open issue: {exc}") from None
    return _OpenItem(
        row,
        _expect(item.get("source"), str, "open issue source"),
        _expect(item.get("fingerprint"), str, "open issue fingerprint"),
        severity,
        first_seen,
        _count(item.get("episode"), "open issue episode"),
        _count(item.get("updates"), "open issue updates"),
    )


def _seconds(value: object, what: str) -> float:
    """A finite number of (epoch) seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SnapshotError(f"snapshot {what}: expected a finite number, got {value!r:.80}")
    return float(value)


def _optional_seconds(value: object, what: str) -> float | None:
    return None if value is None else _seconds(value, what)


@dataclass(frozen=True)
class _Silence:
    last_arrival: float | None
    last_collected: float | None
    intervals: list[float]
    silent: SilentIssue | None


def _silence(value: object) -> _Silence:
    """The ``silence`` part; a snapshot written before it existed has none."""
    if value is None:
        return _Silence(None, None, [], None)
    item = _expect(value, dict, "silence")
    intervals = [
        _seconds(v, "silence interval") for v in _expect(item.get("intervals"), list, "intervals")
    ]
    silent = None
    if (issue := item.get("open")) is not None:
        issue = _expect(issue, dict, "silence open")
        try:
            first_seen = datetime.fromisoformat(
                _expect(issue.get("first_seen"), str, "silence first_seen")
            )
        except ValueError as exc:
            raise SnapshotError(f"snapshot silence open: {exc}") from None
        silent = SilentIssue(
            _expect(issue.get("fingerprint"), str, "silence fingerprint"),
            first_seen,
            _seconds(issue.get("since"), "silence since"),
            _seconds(issue.get("limit"), "silence limit"),
            _count(issue.get("episode"), "silence episode"),
        )
    return _Silence(
        _optional_seconds(item.get("last_arrival"), "silence last_arrival"),
        _optional_seconds(item.get("last_collected"), "silence last_collected"),
        intervals[-INTERVAL_HISTORY:],
        silent,
    )


@dataclass(frozen=True)
class _Traffic:
    since: float | None
    services: dict[str, ServiceTraffic]


def _datetime(value: object, what: str) -> datetime:
    try:
        return datetime.fromisoformat(_expect(value, str, what))
    except ValueError as exc:
        raise SnapshotError(f"snapshot {what}: {exc}") from None


def _watched(value: object) -> tuple[str, ServiceTraffic]:
    item = _expect(value, dict, "traffic service")
    name = _expect(item.get("service"), str, "traffic service name")
    where = f"traffic service {name!r:.80}"
    gaps = [_seconds(v, f"{where} gap") for v in _expect(item.get("gaps"), list, f"{where} gaps")]
    if any(g < 0 for g in gaps):
        raise SnapshotError(f"snapshot {where}: a negative gap")
    appearances = _expect(item.get("appearances"), int, f"{where} appearances")
    if appearances < 1:
        raise SnapshotError(f"snapshot {where}: {appearances} appearances")
    issue = None
    if (opened := item.get("open")) is not None:
        opened = _expect(opened, dict, f"{where} open")
        issue = NoTrafficIssue(
            _expect(opened.get("fingerprint"), str, f"{where} fingerprint"),
            _datetime(opened.get("first_seen"), f"{where} first_seen"),
            _seconds(opened.get("limit"), f"{where} limit"),
            _count(opened.get("episode"), f"{where} episode"),
        )
    series = ServiceTraffic(
        _seconds(item.get("last_seen"), f"{where} last_seen"), appearances, issue=issue
    )
    series.gaps.extend(gaps[-GAP_HISTORY:])
    return name, series


def _traffic(value: object) -> _Traffic:
    """The ``traffic`` part; a snapshot written before it existed has none."""
    if value is None:
        return _Traffic(None, {})
    item = _expect(value, dict, "traffic")
    services = dict(_watched(v) for v in _expect(item.get("services"), list, "traffic services"))
    return _Traffic(_optional_seconds(item.get("from"), "traffic from"), services)


@dataclass(frozen=True)
class _Checked:
    host: str
    keys: list[SeriesKey]
    last_seq: int
    blocks: dict[str, list[int]]
    opened: list[_OpenItem]
    silence: _Silence
    traffic: _Traffic
    episodes: dict[str, Episode]
    episodes_pruned: float


def _check(snap: HostSnapshot) -> _Checked:
    """The snapshot's parts, each checked against what ``export_host`` writes."""
    meta, arrays = snap.meta, snap.arrays
    host = _expect(meta.get("host"), str, "host")
    keys = _series(meta.get("series"))
    last_seq = _expect(meta.get("last_seq"), int, "last_seq")
    for name in ("level", "pending", "count", "last_value"):
        _rows(arrays, name, len(keys))
    blocks = _blocks(meta.get("blocks"), arrays, len(keys))
    opened = [_open_issue(item, len(keys)) for item in _expect(meta.get("open"), list, "open")]
    return _Checked(
        host,
        keys,
        last_seq,
        blocks,
        opened,
        _silence(meta.get("silence")),
        _traffic(meta.get("traffic")),
        _episodes(meta.get("episodes")),
        _seconds(meta.get("episodes_pruned", 0.0), "episodes_pruned"),
    )


def _check_detector_state(
    engine: DetectionEngine, blocks: dict[str, list[int]], arrays: dict[str, StateArray]
) -> None:
    """Each restored detector's state arrays fit it: one row per member, its shape beyond."""
    for name, members in blocks.items():
        block = engine.blocks.get(name)
        if block is None:
            continue
        for key, values in block.detector.get_state().items():
            stored = _rows(arrays, f"{name}/state/{key}", len(members))
            if stored.shape[1:] != np.asarray(values).shape[1:]:
                raise SnapshotError(f"snapshot array {name}/state/{key} has shape {stored.shape}")


def import_host(engine: DetectionEngine, snap: HostSnapshot) -> None:
    """Restore a host exported by ``export_host`` into an engine that has not seen it.

    The snapshot is checked first (``SnapshotError`` says what is wrong), so a bad
    one leaves the engine as it was. Anomaly detector state is restored only when
    the config is unchanged (a changed config may map metrics to other
    detectors); those series warm up again.
    """
    checked = _check(snap)
    host, blocks, arrays = checked.host, checked.blocks, snap.arrays
    if host in engine.hosts and engine.hosts[host].index:
        raise ValueError(f"host {host} already has state")
    same_config = snap.meta.get("config") == engine.config.fingerprint()
    if same_config:  # or nothing is changed
        _check_detector_state(engine, blocks, arrays)
    rows = np.array(engine.add_series(host, checked.keys), dtype=np.intp)
    state = engine.host(host)
    state.last_seq = checked.last_seq
    silence = checked.silence
    state.last_arrival = silence.last_arrival
    state.last_collected = silence.last_collected
    state.intervals.extend(silence.intervals)
    state.silent = silence.silent
    state.traffic_from = checked.traffic.since
    state.traffic = _within(checked.traffic.services, engine.config.traffic.max_services)
    state.episodes = checked.episodes
    state.episodes_pruned = checked.episodes_pruned
    th = engine.thresholds
    th.level[rows] = arrays["level"].astype(np.intp)
    th.pending[rows] = arrays["pending"].astype(np.intp)
    th.count[rows] = arrays["count"].astype(np.intp)
    engine.last_value[rows] = arrays["last_value"]
    for name, members in blocks.items():
        block = engine.blocks.get(name)
        if not same_config or block is None:
            continue
        brows = np.array(
            [w[1] for i in members if (w := engine.block_of[int(rows[i])])], dtype=np.intp
        )
        if len(brows) != len(members):
            continue
        block.debounce.level[brows] = arrays[f"{name}/level"].astype(np.intp)
        block.debounce.pending[brows] = arrays[f"{name}/pending"].astype(np.intp)
        block.debounce.count[brows] = arrays[f"{name}/count"].astype(np.intp)
        block.last_score[brows] = arrays[f"{name}/last_score"]
        block.seen[brows] = arrays[f"{name}/seen"].astype(np.intp)
        # a key an older release did not save is left out: the detector fills it in
        saved = {key: f"{name}/state/{key}" for key in block.detector.get_state()}
        block.detector.set_rows(
            brows, {key: arrays[path] for key, path in saved.items() if path in arrays}
        )
    for item in checked.opened:
        row = int(rows[item.row])
        if item.source != "threshold" and (not same_config or engine.block_of[row] is None):
            continue  # its detector's state was not restored; it reopens if still anomalous
        state.open[(row, item.source)] = OpenIssue(
            item.fingerprint,
            row,
            item.source,
            item.severity,
            item.first_seen,
            item.episode,
            item.updates,
        )


def _within(services: dict[str, ServiceTraffic], most: int) -> dict[str, ServiceTraffic]:
    """``services``, or if there are more than ``most`` (the config changed), those
    with an open issue and the most recently seen of the others."""
    if len(services) <= most:
        return services
    ranked = sorted(services, key=lambda n: (services[n].issue is None, -services[n].last_seen))
    kept = {n for i, n in enumerate(ranked) if i < most or services[n].issue is not None}
    return {n: s for n, s in services.items() if n in kept}


class LostPartition(NotHeld):
    """The partition's lease lapsed, or a write to its keys found someone else's revision
    there: another replica holds the partition now, and this one must stop at once."""


@dataclass(frozen=True)
class Watermark:
    """Up to which METRICS sequence a partition's snapshots are complete, and under
    which partition count (the layout) they were written."""

    seq: int
    partitions: int
    earlier: int | None = None
    """Written while other partitions may still move from an earlier layout: where
    that layout's state was complete to (the watermark this one replaced)."""

    def encode(self) -> bytes:
        record: dict[str, int] = {"seq": self.seq, "partitions": self.partitions}
        if self.earlier is not None:
            record["earlier"] = self.earlier
        return json.dumps(record).encode()


def _watermark(value: bytes | None) -> Watermark | None:
    """A stored watermark (None: unreadable); a bare number is the single detector's."""
    try:
        item = json.loads(value or b"")
    except ValueError:
        return None
    if isinstance(item, int) and not isinstance(item, bool):
        return Watermark(item, 0)
    if not isinstance(item, dict):
        return None
    seq, partitions, earlier = item.get("seq"), item.get("partitions"), item.get("earlier")
    if not isinstance(seq, int) or not isinstance(partitions, int):
        return None
    return Watermark(seq, partitions, earlier if isinstance(earlier, int) else None)


def member_key(replica: str) -> str:
    return f"member.{replica}"


def partition_key(partition: int) -> str:
    return f"partition.{partition}"


def watermark_key(partition: int) -> str:
    return f"watermark.{partition}"


def snapshot_key(partition: int, host: str) -> str:
    return f"snapshot.{partition}.{token(host)}"


@dataclass
class Restored:
    """What a partition's new holder starts from."""

    watermark: int | None
    """Replay from the sequence after it; None: nothing stored, start with new metrics."""
    snaps: list[HostSnapshot]
    migrating: bool
    """The state was written under another layout (the single detector's, or another
    partition count): replay every METRICS subject from the watermark, keeping the
    batches of this partition's hosts, and then ``retire`` the old keys."""


class SnapshotStore:
    """The bucket ``medbay_detector_state``.

    | key | what |
    |---|---|
    | ``member.<replica>`` | a replica's membership lease |
    | ``partition.<p>`` | partition ``p``'s lease: its holder consumes it |
    | ``snapshot.<p>.<host>`` | a host's state |
    | ``watermark.<p>`` | the sequence partition ``p``'s snapshots are complete to |
    | ``watermark``, ``host.<host>`` | the single detector's layout, migrated per partition |

    Only the holder of a partition's lease writes its snapshots and watermark
    (``PartitionStore``); leases are written by ``medbay.common.lease``.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> SnapshotStore:
        kv = await open_key_value(js, DETECTOR_STATE, history=1, replicas=replicas)
        return cls(kv)

    def partition(self, partition: int, partitions: int) -> PartitionStore:
        return PartitionStore(self, partition, partitions)

    async def forget_old_layouts(self, partitions: int) -> bool:
        """Once every partition has a watermark of ``partitions``, remove the watermarks
        of earlier layouts (the single detector's, other counts'): no later migration
        should replay from them. Whether every partition has."""
        marks = {e.key: e for e in await kv_entries(self.kv, "watermark.*")}
        current = {
            key
            for key, entry in marks.items()
            if (mark := _watermark(entry.value)) is not None and mark.partitions == partitions
        }
        if current != {watermark_key(p) for p in range(partitions)}:
            return False
        stale = [e for key, e in marks.items() if key not in current]
        with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
            stale.append(await self.kv.get(WATERMARK))
        for entry in stale:
            with contextlib.suppress(APIError, KeyWrongLastSequenceError):
                await self.kv.delete(entry.key, last=entry.revision)
        return True


class PartitionStore:
    """One partition's snapshots and watermark, as seen by the replica holding it.

    Every write is a compare-and-swap on the revision this holder last saw of the
    key, so a replica that lost the partition without noticing yet (a long pause)
    cannot overwrite what its successor wrote: the write fails with
    ``LostPartition`` instead."""

    def __init__(self, store: SnapshotStore, partition: int, partitions: int) -> None:
        self.store = store
        self.kv = store.kv
        self.partition = partition
        self.partitions = partitions
        self.revisions: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        """Keys of an earlier layout this partition's state came from (``retire``)."""
        self.earlier: int | None = None
        """While other partitions may still move from an earlier layout, where its
        state was complete to: kept in this partition's watermark, which replaced
        one of that layout's."""

    async def restore(self) -> Restored:
        """Read what the partition's last holder left: its watermark and snapshots, or
        (a first start under this layout) the earlier layout's state of its hosts."""
        mark_entry = await self._get(watermark_key(self.partition))
        mark = None
        if mark_entry is not None:
            self.revisions[mark_entry.key] = mark_entry.revision or 0
            mark = _watermark(mark_entry.value)
        if mark is not None and mark.partitions == self.partitions:
            self.earlier = mark.earlier  # other partitions may still need it
            snaps = []
            for entry in await kv_entries(self.store.kv, f"snapshot.{self.partition}.*"):
                self.revisions[entry.key] = entry.revision or 0
                snap = self._decoded(entry)
                if snap is not None and snap.meta.get("partitions") == self.partitions:
                    snaps.append(snap)  # else another layout's, not this partition's host
            return Restored(mark.seq, snaps, migrating=False)
        earlier = await self._earlier_watermarks()
        if not earlier:
            return Restored(None, [], migrating=False)
        self.earlier = min(earlier)
        return Restored(self.earlier, await self._earlier_snapshots(), migrating=True)

    async def _earlier_watermarks(self) -> list[int]:
        """Where the earlier layouts' state was complete to: their watermarks, and those
        that partitions already moved to this layout replaced."""
        entries = await kv_entries(self.store.kv, "watermark.*")
        legacy = await self._get(WATERMARK)
        marks = [
            mark
            for entry in [*entries, *([legacy] if legacy is not None else [])]
            if (mark := _watermark(entry.value)) is not None
        ]
        return [m.seq for m in marks if m.partitions != self.partitions] + [
            m.earlier for m in marks if m.partitions == self.partitions and m.earlier is not None
        ]

    async def _earlier_snapshots(self) -> list[HostSnapshot]:
        """The newest snapshot of each host of this partition, under any earlier key."""
        mine: dict[str, list[str]] = {}
        for pattern in ("host.*", "snapshot.*.*"):
            for key in await kv_keys(self.store.kv, pattern):
                host = key.rsplit(".", 1)[-1]
                if metrics_partition(host, self.partitions) == self.partition:
                    mine.setdefault(host, []).append(key)
        snaps = []
        for entries in mine.values():
            newest: HostSnapshot | None = None
            for key in entries:
                entry = await self._get(key)
                if entry is None:
                    continue
                if entry.key == snapshot_key(self.partition, entry.key.rsplit(".", 1)[-1]):
                    self.revisions[entry.key] = entry.revision or 0
                else:
                    self.sources[entry.key] = entry.revision or 0
                snap = self._decoded(entry)
                if snap is not None and (newest is None or _last_seq(snap) > _last_seq(newest)):
                    newest = snap
            if newest is not None:
                snaps.append(newest)
        return snaps

    async def _get(self, key: str) -> KeyValue.Entry | None:
        try:
            return await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None

    @staticmethod
    def _decoded(entry: KeyValue.Entry) -> HostSnapshot | None:
        try:
            return decode(entry.value or b"")
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            log.warning("snapshot %s is unreadable (%s); that host starts afresh", entry.key, exc)
            return None

    async def save_host(self, snap: HostSnapshot) -> None:
        meta = {**snap.meta, "partition": self.partition, "partitions": self.partitions}
        key = snapshot_key(self.partition, str(snap.meta["host"]))
        await self._write(key, encode(HostSnapshot(meta, snap.arrays)))

    async def save_watermark(self, seq: int) -> None:
        mark = Watermark(seq, self.partitions, self.earlier)
        await self._write(watermark_key(self.partition), mark.encode())

    async def _write(self, key: str, value: bytes) -> None:
        last = self.revisions.get(key)
        try:
            if last is None:
                revision = await self.kv.create(key, value)
            else:
                revision = await self.kv.update(key, value, last=last)
        except KeyWrongLastSequenceError:
            raise LostPartition(f"{key} was written by another replica") from None
        except APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                raise
            raise LostPartition(f"{key} was written by another replica") from None
        self.revisions[key] = revision

    async def retire(self) -> None:
        """Remove the earlier layout's keys this partition's state was migrated from
        (now saved under this layout's), and that layout's watermarks once no
        partition needs them."""
        for key, revision in self.sources.items():
            with contextlib.suppress(APIError, KeyWrongLastSequenceError):
                await self.kv.delete(key, last=revision)
        self.sources.clear()
        if await self.store.forget_old_layouts(self.partitions):
            self.earlier = None


_WRONG_LAST_SEQUENCE = (10071, 10164)


def _last_seq(snap: HostSnapshot) -> int:
    seq = snap.meta.get("last_seq")
    return seq if isinstance(seq, int) else 0
