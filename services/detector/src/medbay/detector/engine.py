"""Turning metric batches into issue events: thresholds, anomalies, silence, lifecycle.

Everything here is plain Python and numpy, with no knowledge of NATS.

The state of every series of every host lives in flat arrays (one row per
series), so a whole fetched set of scrapes is evaluated with a handful of
vectorised operations: the scrapes are grouped into *waves* holding at most one
scrape per host (so per-series order is kept), and each wave is one pass. Only
the rare state changes are handled one by one. An issue is opened once per
fingerprint, updated when its severity changes and resolved when the condition
clears: never re-emitted per sample.

An issue event's id comes from the issue itself, never from the batch that
caused it: (fingerprint, episode, change), where the episode counts the
fingerprint's openings in the host's state (``Episode``, kept in snapshots).
Whichever replica re-derives an event, from whichever batch, after a restore
and replay, gets the same id, and JetStream's duplicate window drops it.

Series that come and go (a rule with ``absent_clears``, e.g. the top processes)
count as normal while missing from their host's scrape, and their rows are
forgotten and reused once they are, so passing processes do not pile up.

A host whose batches stop arriving opens a ``host_silent`` issue when
``check_silence`` is called with the time; its next batch resolves it. The hosts
an engine holds can be judged in groups, each with its own ``SilenceClock`` (a
detector replica's engine holds the hosts of several partitions, restored at
different times), and a group can be dropped (``drop_hosts``) when another
replica takes it over.

A service whose series of the traffic metric (``span_service_requests_per_second``)
stops showing up in its host's batches, while they keep coming, opens a
``no_traffic`` issue; judged on each batch by its ``collected_at``, so a replay
finds the same. Its return resolves it.

Issues about a service (``resource_label: service``) carry, when opened or
updated, the service's trace figures from the same batch (``signals``).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import OrderedDict, defaultdict, deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medbay.common.events import (
    IssueChange,
    IssueOpened,
    IssueResolved,
    IssueUpdated,
    MetricBatch,
    Severity,
    derived_event_id,
    issue_fingerprint,
)
from medbay.detector.anomaly import AnomalyDetector, make_detector
from medbay.detector.config import AnomalyRule, DetectorConfig, ThresholdRule

IntArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]
LabelItems = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, LabelItems]  # (metric name, sorted labels) within one host
_Columns = tuple[list[str], list[int], list[dict[str, str]], list[LabelItems]]
_LayoutKey = tuple[tuple[str, ...], tuple[int, ...], tuple[LabelItems, ...]]

LEVEL_SEVERITY = {1: Severity.WARNING, 2: Severity.CRITICAL}
SILENCE_METRIC = "metrics_age_seconds"
SILENCE_DETECTOR = "silence"
TRAFFIC_DETECTOR = "traffic"
GAP_HISTORY = 16
"""Gaps between a service's appearances kept; the longest is its usual gap."""
SIGNAL_LABEL = "service"
SIGNAL_METRICS = {
    "span_service_requests_per_second": "requests_per_second",
    "span_service_errors_per_second": "errors_per_second",
    "span_service_error_ratio": "error_ratio",
    "span_service_latency_p95_ms": "latency_p95_ms",
}
"""The samples an issue about a service takes its ``signals`` from, and their names there."""
SHARED_LAYOUTS = 64
"""How many recent distinct scrape layouts ``DetectionEngine`` keeps one copy of."""
INTERVAL_HISTORY = 9
"""Batch intervals kept per host; their median is the host's usual interval."""
STALL_CHECKS = 3
"""A silence check later than this many check intervals after the last one means the
detector was not watching in between (NATS unreachable, a backlog, the detector
stalled): its window starts again."""
MAX_DETAIL = 1000
EPISODE_MEMORY_SECONDS = 3600.0
"""How long a fingerprint's episode count outlives its last event (by the batches'
``collected_at``): far longer than the ISSUES stream's duplicate window, so an id
counted again from 1 can no longer be taken for a repeat."""
PROCESS_RESOURCE = {"process_cpu_percent": "% CPU", "process_memory_percent": "% memory"}
_FREE_ROW: tuple[str, str, LabelItems] = ("", "", ())


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _cat(parts: list[NDArray[Any]], dtype: type) -> NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _number(value: float) -> str:
    """A value for people: one decimal at most, small values to two significant digits."""
    text = f"{value:.1f}" if abs(value) >= 1 else f"{value:.2g}"
    return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text


class Debounce:
    """Level state machines, one per row: a row's level changes only after the new
    level has been asked for ``up`` (rising) or ``down`` (falling) samples in a row."""

    def __init__(self) -> None:
        self.level = np.zeros(0, dtype=np.intp)
        self.pending = np.zeros(0, dtype=np.intp)
        self.count = np.zeros(0, dtype=np.intp)

    def grow(self, n: int) -> None:
        zeros = np.zeros(n, dtype=np.intp)
        self.level = np.concatenate([self.level, zeros])
        self.pending = np.concatenate([self.pending, zeros])
        self.count = np.concatenate([self.count, zeros])

    def reset(self, rows: list[int]) -> None:
        self.level[rows] = 0
        self.pending[rows] = 0
        self.count[rows] = 0

    def advance(
        self, rows: IntArray, target: IntArray, up: IntArray, down: IntArray
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Move ``rows`` (unique) towards ``target``.

        Returns the positions (into ``rows``) that changed level, with old and new levels.
        """
        current = self.level[rows]
        differs = target != current
        same = differs & (self.pending[rows] == target)
        count = np.where(same, self.count[rows] + 1, np.where(differs, 1, 0))
        commit = differs & (count >= np.where(target > current, up, down))
        self.pending[rows] = np.where(differs, target, current)
        self.count[rows] = np.where(commit, 0, count)
        self.level[rows] = np.where(commit, target, current)
        changed = np.flatnonzero(commit)
        return changed, current[changed], target[changed]


class RuleParams:
    """Each row's threshold rule as arrays: its levels on the signed value (see
    ``ThresholdRule.signed_levels``), hysteresis, sign and windows. A row without a
    rule has levels that nothing passes."""

    def __init__(self) -> None:
        self.warn = np.zeros(0)
        self.crit = np.zeros(0)
        self.hyst = np.zeros(0)
        self.sign = np.zeros(0)
        self.up = np.zeros(0, dtype=np.intp)
        self.down = np.zeros(0, dtype=np.intp)

    def grow(self, n: int) -> None:
        self.warn = np.concatenate([self.warn, np.full(n, np.inf)])
        self.crit = np.concatenate([self.crit, np.full(n, np.inf)])
        self.hyst = np.concatenate([self.hyst, np.zeros(n)])
        self.sign = np.concatenate([self.sign, np.ones(n)])
        self.up = np.concatenate([self.up, np.ones(n, dtype=np.intp)])
        self.down = np.concatenate([self.down, np.ones(n, dtype=np.intp)])

    def set(self, rows: list[int], rules: list[ThresholdRule | None]) -> None:
        levels = [r.signed_levels() if r else (math.inf, math.inf) for r in rules]
        self.warn[rows] = [w for w, _ in levels]
        self.crit[rows] = [c for _, c in levels]
        self.hyst[rows] = [r.hysteresis if r else 0.0 for r in rules]
        self.sign[rows] = [-1.0 if r and r.direction == "below" else 1.0 for r in rules]
        self.up[rows] = [r.for_samples if r else 1 for r in rules]
        self.down[rows] = [r.clear_samples if r else 1 for r in rules]


class AnomalyBlock:
    """All series (of all hosts) scored by one anomaly detector."""

    def __init__(self, detector: AnomalyDetector) -> None:
        self.detector = detector
        self.rows: list[int] = []  # block row -> series row
        self.for_samples = np.zeros(0, dtype=np.intp)
        self.clear_samples = np.zeros(0, dtype=np.intp)
        self.warmup = np.zeros(0, dtype=np.intp)
        self.min_value = np.zeros(0)
        self.seen = np.zeros(0, dtype=np.intp)  # samples scored per row
        self.debounce = Debounce()
        self.last_score = np.zeros(0)
        self.free: list[int] = []  # block rows of dropped hosts, reused first

    def add(self, rows: list[int], rules: list[AnomalyRule]) -> list[int]:
        """Block rows for series ``rows``, fresh: reused ones are reset first."""
        keep = max(0, len(self.free) - len(rows))
        reused = self.free[keep:]
        del self.free[keep:]
        fresh = len(rows) - len(reused)
        start = len(self.rows)
        if fresh:
            self.detector.add_series(fresh)
            self.rows += [-1] * fresh
            self.for_samples = np.append(self.for_samples, np.zeros(fresh, dtype=np.intp))
            self.clear_samples = np.append(self.clear_samples, np.zeros(fresh, dtype=np.intp))
            self.warmup = np.append(self.warmup, np.zeros(fresh, dtype=np.intp))
            self.min_value = np.append(self.min_value, np.zeros(fresh))
            self.seen = np.append(self.seen, np.zeros(fresh, dtype=np.intp))
            self.debounce.grow(fresh)
            self.last_score = np.concatenate([self.last_score, np.zeros(fresh)])
        if reused:
            self.detector.reset(np.array(reused, dtype=np.intp))
            self.debounce.reset(reused)
            self.seen[reused] = 0
            self.last_score[reused] = 0.0
        brows = reused + list(range(start, start + fresh))
        for brow, row in zip(brows, rows, strict=True):
            self.rows[brow] = row
        self.for_samples[brows] = [r.for_samples for r in rules]
        self.clear_samples[brows] = [r.clear_samples for r in rules]
        self.warmup[brows] = [r.warmup_samples for r in rules]
        self.min_value[brows] = [-math.inf if r.min_value is None else r.min_value for r in rules]
        return brows


@dataclass
class SilenceClock:
    """From when silence counts for a group of hosts, and when they were last judged."""

    since: float | None = None
    """Epoch seconds: the group's start or restore. No host is silent before a whole
    silence window has passed from here."""
    last_check: float | None = None

    def restart(self, now: datetime) -> None:
        self.since = now.timestamp()


@dataclass
class Episode:
    """One fingerprint of a host: how many times its issue opened, and when (epoch
    seconds) its last event was."""

    count: int
    last_event: float


@dataclass
class OpenIssue:
    fingerprint: str
    row: int
    source: str  # "threshold" or the anomaly detector's name
    severity: Severity
    first_seen: datetime
    episode: int = 0
    updates: int = 0
    """Severity changes so far in this episode."""


@dataclass
class SilentIssue:
    """An open ``host_silent`` issue: since when (epoch seconds) and the limit it passed."""

    fingerprint: str
    first_seen: datetime
    since: float
    limit: float
    episode: int = 0


@dataclass
class NoTrafficIssue:
    """An open ``no_traffic`` issue and the limit its service's absence passed."""

    fingerprint: str
    first_seen: datetime
    limit: float
    episode: int = 0


@dataclass
class ServiceTraffic:
    """One watched series of the traffic metric (a service) on one host; times are
    its batches' ``collected_at`` in epoch seconds."""

    last_seen: float
    appearances: int = 1
    """Batches it was in, counted up to the config's ``min_appearances``."""
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=GAP_HISTORY))
    """Seconds between its last appearances."""
    issue: NoTrafficIssue | None = None


@dataclass(frozen=True)
class Layout:
    """Where the samples of a scrape of a given shape go; computed once per shape."""

    rows: IntArray  # series row of each kept sample
    picks: IntArray  # the sample each row takes its value from
    ruled: IntArray  # positions in ``rows`` with a threshold rule
    blocks: dict[str, tuple[IntArray, IntArray]]  # detector: positions in rows, block rows
    absent: IntArray  # rows of the host's passing series (absent_clears) not in this scrape
    services: tuple[str, ...] = ()  # the services of the traffic metric's series here


@dataclass
class HostState:
    host: str
    last_seq: int = 0
    index: dict[SeriesKey, int] = field(default_factory=dict)
    open: dict[tuple[int, str], OpenIssue] = field(default_factory=dict)
    shape: tuple[list[str], list[int], list[dict[str, str]], Layout] | None = None
    """The last batch's names, label_index and label_sets, and their layout."""
    passing_rows: set[int] = field(default_factory=set)
    """Rows whose rule has ``absent_clears``."""
    last_arrival: float | None = None
    """When its last batch reached the bus (epoch seconds)."""
    last_collected: float | None = None
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=INTERVAL_HISTORY))
    """Seconds between its last batches, by their ``collected_at``."""
    silent: SilentIssue | None = None
    traffic: dict[str, ServiceTraffic] = field(default_factory=dict)
    """Watched services (series of the traffic metric), by name."""
    traffic_from: float | None = None
    """A service's absence counts from here at the earliest: the host's return after
    a silence (its ``collected_at``)."""
    episodes: dict[str, Episode] = field(default_factory=dict)
    """By fingerprint: the episodes issue event ids are derived from."""
    episodes_pruned: float = 0.0
    """When (a batch's ``collected_at``) episodes were last pruned."""

    def open_episode(self, fingerprint: str, at: float) -> int:
        """The number of a new episode of ``fingerprint``'s issue, opening at ``at``."""
        episode = self.episodes.get(fingerprint)
        if episode is None:
            episode = self.episodes[fingerprint] = Episode(0, at)
        episode.count += 1
        episode.last_event = max(episode.last_event, at)
        return episode.count

    def touch_episode(self, fingerprint: str, at: float) -> None:
        """Note an event of ``fingerprint``'s open issue at ``at``."""
        if (episode := self.episodes.get(fingerprint)) is not None:
            episode.last_event = max(episode.last_event, at)

    def prune_episodes(self, now: float) -> None:
        """Forget the episodes of fingerprints with no open issue and no event for
        ``EPISODE_MEMORY_SECONDS``; at most once per that long, on a batch's time."""
        if now - self.episodes_pruned < EPISODE_MEMORY_SECONDS:
            return
        self.episodes_pruned = now
        horizon = now - EPISODE_MEMORY_SECONDS
        open_now = {issue.fingerprint for issue in self.open.values()}
        if self.silent is not None:
            open_now.add(self.silent.fingerprint)
        open_now |= {s.issue.fingerprint for s in self.traffic.values() if s.issue is not None}
        for fingerprint in [
            f for f, e in self.episodes.items() if e.last_event < horizon and f not in open_now
        ]:
            del self.episodes[fingerprint]

    def open_issues(self) -> int:
        """Its open issues: thresholds and anomalies, its silence, its services' traffic."""
        in_traffic = sum(s.issue is not None for s in self.traffic.values())
        return len(self.open) + (self.silent is not None) + in_traffic


@dataclass
class _Item:
    index: int  # position of the batch in the call
    batch: MetricBatch
    state: HostState
    layout: Layout
    values: FloatArray
    signals: dict[str, dict[str, float]] | None = None
    """The batch's trace figures by service, indexed when an issue first needs them."""


class DetectionEngine:
    """Applies metric batches, in stream order per host, and returns issue events."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.hosts: dict[str, HostState] = {}
        self.dirty: set[str] = set()
        self.samples_seen = 0
        # one entry per series row
        self.series: list[tuple[str, str, LabelItems]] = []  # host, metric, labels
        self.rule_of: list[ThresholdRule | None] = []
        self.block_of: list[tuple[str, int] | None] = []
        self.last_value = np.zeros(0)
        self.thresholds = Debounce()
        self.params = RuleParams()
        self.blocks: dict[str, AnomalyBlock] = {}
        self.free_rows: list[int] = []  # rows of forgotten series, reused first
        self._thresholds_of: dict[str, list[ThresholdRule]] = defaultdict(list)
        for rule in config.thresholds:
            self._thresholds_of[rule.metric].append(rule)
        self._anomaly_of: dict[str, list[AnomalyRule]] = defaultdict(list)
        for arule in config.anomaly:
            self._anomaly_of[arule.metric].append(arule)
        self.clock = SilenceClock()
        """The silence clock of the hosts not judged as a group of their own."""
        self._layouts: OrderedDict[_LayoutKey, _Columns] = OrderedDict()
        """Recent distinct scrape layouts, each kept once for every host that sends it."""

    # -- series ---------------------------------------------------------------

    def host(self, name: str) -> HostState:
        state = self.hosts.get(name)
        if state is None:
            state = self.hosts[name] = HostState(name)
        return state

    def add_series(self, host: str, keys: Sequence[SeriesKey]) -> list[int]:
        """Create rows for new series (reusing forgotten ones), with their rules and detectors."""
        keep = max(0, len(self.free_rows) - len(keys))
        reused = self.free_rows[keep:]
        del self.free_rows[keep:]
        fresh = len(keys) - len(reused)
        if fresh:
            self.series += [_FREE_ROW] * fresh
            self.rule_of += [None] * fresh
            self.block_of += [None] * fresh
            self.thresholds.grow(fresh)
            self.params.grow(fresh)
            self.last_value = np.concatenate([self.last_value, np.zeros(fresh)])
        if reused:
            self.thresholds.reset(reused)
            self.last_value[reused] = 0.0
        rows = reused + list(range(len(self.series) - fresh, len(self.series)))
        state = self.host(host)
        by_block: dict[str, tuple[list[int], list[AnomalyRule]]] = defaultdict(lambda: ([], []))
        for row, (name, items) in zip(rows, keys, strict=True):
            labels = dict(items)
            self.series[row] = (host, name, items)
            rule = next(
                (r for r in self._thresholds_of.get(name, ()) if _matches(labels, r.labels)),
                None,
            )
            self.rule_of[row] = rule
            if rule is not None and rule.absent_clears:
                state.passing_rows.add(row)
            arule = next(
                (r for r in self._anomaly_of.get(name, ()) if _matches(labels, r.labels)), None
            )
            self.block_of[row] = None
            if arule is not None:
                by_block[arule.detector][0].append(row)
                by_block[arule.detector][1].append(arule)
        for detector, (brows_of, rules) in by_block.items():
            block = self.blocks.get(detector)
            if block is None:
                block = self.blocks[detector] = AnomalyBlock(make_detector(detector))
            for row, brow in zip(brows_of, block.add(brows_of, rules), strict=True):
                self.block_of[row] = (detector, brow)
        state.index.update(zip(keys, rows, strict=True))
        self.params.set(rows, [self.rule_of[row] for row in rows])
        return rows

    def drop_hosts(self, names: Collection[str]) -> None:
        """Forget these hosts entirely (another replica holds them now): their rows,
        and their anomaly detectors' rows, are reused by the next series added."""
        for name in names:
            self.dirty.discard(name)
            state = self.hosts.pop(name, None)
            if state is None:
                continue
            rows = list(state.index.values())
            for row in rows:
                if (where := self.block_of[row]) is not None:
                    self.blocks[where[0]].free.append(where[1])
                self.series[row] = _FREE_ROW
                self.rule_of[row] = None
                self.block_of[row] = None
            self.free_rows += rows

    def _forget(self, state: HostState, rows: list[int]) -> None:
        """Drop series that went and are back to normal; their rows are reused.

        Only passing series are forgotten, and the config keeps anomaly rules off
        them, so a forgotten row never has a detector block."""
        for row in rows:
            _, name, items = self.series[row]
            del state.index[(name, items)]
            state.passing_rows.discard(row)
            self.series[row] = _FREE_ROW
            self.rule_of[row] = None
        self.free_rows += rows
        state.shape = None  # its cached layout still lists them as absent

    def layout(self, state: HostState, batch: MetricBatch) -> Layout:
        """Where the batch's samples go.

        A host sends the same series in the same order scrape after scrape, so the
        layout is cached per host and checked by comparing the batch's columns of
        names and labels with the last one's, in C.
        """
        columns = batch.samples
        names, label_index, label_sets = columns.names, columns.label_index, columns.label_sets
        shape = state.shape
        if (
            shape is not None
            and shape[0] == names
            and shape[1] == label_index
            and shape[2] == label_sets
        ):
            return shape[3]
        names, label_index, label_sets, items = self._shared(names, label_index, label_sets)
        positions: dict[SeriesKey, int] = {}
        for i, (name, index) in enumerate(zip(names, label_index, strict=True)):
            positions[(name, items[index])] = i  # last one wins
        new = [key for key in positions if key not in state.index]
        if new:
            self.add_series(state.host, new)
        row_list = [state.index[key] for key in positions]
        rows = np.array(row_list, dtype=np.intp)
        picks = np.fromiter(positions.values(), dtype=np.intp, count=len(positions))
        ruled = np.flatnonzero([self.rule_of[r] is not None for r in row_list])
        members: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for pos, row in enumerate(row_list):
            if (where := self.block_of[row]) is not None:
                members[where[0]][0].append(pos)
                members[where[0]][1].append(where[1])
        blocks = {
            name: (np.array(pos, dtype=np.intp), np.array(brows, dtype=np.intp))
            for name, (pos, brows) in members.items()
        }
        absent = np.array(sorted(state.passing_rows.difference(row_list)), dtype=np.intp)
        traffic = self.config.traffic
        services = tuple(
            dict.fromkeys(
                dict(items)[traffic.resource_label]
                for name, items in positions
                if name == traffic.metric and any(k == traffic.resource_label for k, _ in items)
            )
        )
        layout = Layout(rows, picks, ruled.astype(np.intp), blocks, absent, services)
        state.shape = (names, label_index, label_sets, layout)
        return layout

    def _shared(
        self, names: list[str], label_index: list[int], label_sets: list[dict[str, str]]
    ) -> tuple[list[str], list[int], list[dict[str, str]], list[LabelItems]]:
        """The one copy of a scrape's layout (its columns of names and labels, and each
        label set as sorted items), its strings interned. Hosts sent the same layout by
        the same collector config hold one copy of it, and their series' keys the same
        strings, instead of each host its own (measured at 50 series a host: 240 bytes
        per series). The most recent ``SHARED_LAYOUTS`` layouts are kept; an older one is
        still held by the hosts that send it."""
        interned = [sys.intern(name) for name in names]
        items = [
            tuple((sys.intern(k), sys.intern(v)) for k, v in sorted(labels.items()))
            for labels in label_sets
        ]
        key = (tuple(interned), tuple(label_index), tuple(items))
        found = self._layouts.get(key)
        if found is None:
            found = (interned, list(label_index), [dict(pairs) for pairs in items], items)
            self._layouts[key] = found
            if len(self._layouts) > SHARED_LAYOUTS:
                self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(key)
        return found

    # -- processing -----------------------------------------------------------

    def process(
        self, batch: MetricBatch, seq: int, received_at: float | None = None
    ) -> list[IssueChange]:
        received = None if received_at is None else [received_at]
        return [event for _, event in self.process_many([(batch, seq)], received)]

    def process_many(
        self,
        batches: Sequence[tuple[MetricBatch, int]],
        received_at: Sequence[float] | None = None,
    ) -> list[tuple[int, IssueChange]]:
        """Apply batches given in stream order with their stream sequence numbers.

        ``received_at`` says when each reached the bus (its stream time, in seconds
        since the epoch; by default its ``collected_at``): what host silence is
        measured from. Returns the
        issue events, each with the position of the batch that caused it. A batch
        at or below its host's last applied sequence was applied already (a
        redelivery, or a replay after restart) and is skipped.
        """
        waves: list[list[_Item]] = []
        depth: dict[str, int] = defaultdict(int)
        events: list[tuple[int, IssueChange]] = []
        for index, (batch, seq) in enumerate(batches):
            state = self.host(batch.host)
            if seq <= state.last_seq:
                continue
            state.last_seq = seq
            self.dirty.add(batch.host)
            received = batch.collected_at.timestamp() if received_at is None else received_at[index]
            if (back := self._heard_from(state, batch, received)) is not None:
                events.append((index, back))
            if not batch.samples:
                if state.traffic and (found := self._traffic(state, batch, ())):
                    events += [(index, e) for e in found]
                continue
            layout = self.layout(state, batch)
            if (layout.services or state.traffic) and (
                found := self._traffic(state, batch, layout.services)
            ):
                events += [(index, e) for e in found]
            values = np.array(batch.samples.values, dtype=np.float64)[layout.picks]
            wave = depth[batch.host]
            depth[batch.host] += 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(_Item(index, batch, state, layout, values))
        for items in waves:
            self._wave(items, events)
        if waves:  # every host with a scrape here has one in the first wave
            self._forget_gone([it.state for it in waves[0]])
        return events

    def _wave(self, items: list[_Item], events: list[tuple[int, IssueChange]]) -> None:
        """Evaluate scrapes of distinct hosts in one vectorised pass."""
        rows = np.concatenate([it.layout.rows for it in items])
        values = np.concatenate([it.values for it in items])
        self.last_value[rows] = values
        self.samples_seen += len(values)

        # Ruled samples, then each host's missing passing series as NaN: a NaN is
        # past no level, so it counts as back to normal.
        r_rows_parts: list[IntArray] = []
        r_value_parts: list[FloatArray] = []
        counts: list[int] = []
        for it in items:
            ruled, absent = it.layout.ruled, it.layout.absent
            r_rows_parts.append(it.layout.rows[ruled])
            r_value_parts.append(it.values[ruled])
            if len(absent):
                r_rows_parts.append(absent)
                r_value_parts.append(np.full(len(absent), np.nan))
            counts.append(len(ruled) + len(absent))
        r_rows = _cat(r_rows_parts, np.intp)
        if len(r_rows):
            r_values = _cat(r_value_parts, np.float64)
            owners = np.repeat(np.arange(len(items)), counts)
            self._thresholds(items, r_rows, r_values, owners, events)
        collected: FloatArray | None = None
        for name, block in self.blocks.items():
            parts = [it.layout.blocks.get(name) for it in items]
            if not any(p is not None for p in parts):
                continue
            if collected is None:
                collected = np.array([it.batch.collected_at.timestamp() for it in items])
            brows = _cat([p[1] for p in parts if p is not None], np.intp)
            b_values = _cat(
                [it.values[p[0]] for it, p in zip(items, parts, strict=True) if p is not None],
                np.float64,
            )
            owners = np.repeat(
                np.arange(len(items)), [0 if p is None else len(p[0]) for p in parts]
            )
            self._anomalies(items, name, block, brows, b_values, collected[owners], owners, events)

    def _forget_gone(self, states: list[HostState]) -> None:
        """Forget the missing passing series of these hosts that are back to normal."""
        th = self.thresholds
        for state in states:
            if state.shape is None or not len(absent := state.shape[3].absent):
                continue
            quiet = absent[(th.level[absent] == 0) & (th.count[absent] == 0)].tolist()
            with_issue = {row for row, _ in state.open}
            gone = [row for row in quiet if row not in with_issue]
            if gone:
                self._forget(state, gone)

    def _thresholds(
        self,
        items: list[_Item],
        rows: IntArray,
        values: FloatArray,
        owners: IntArray,
        events: list[tuple[int, IssueChange]],
    ) -> None:
        params = self.params
        warn, crit, hyst = params.warn[rows], params.crit[rows], params.hyst[rows]
        v = values * params.sign[rows]
        raised = np.where(v > crit, 2, np.where(v > warn, 1, 0))
        holding = np.where(v > crit - hyst, 2, np.where(v > warn - hyst, 1, 0))
        current = self.thresholds.level[rows]
        target = np.where(raised > current, raised, np.minimum(current, holding))
        changed, old, new = self.thresholds.advance(
            rows, target, params.up[rows], params.down[rows]
        )
        for pos, before, after in zip(changed.tolist(), old.tolist(), new.tolist(), strict=True):
            row = int(rows[pos])
            rule = self.rule_of[row]
            assert rule is not None
            item = items[owners[pos]]
            absent = bool(np.isnan(values[pos]))
            events.append(
                (
                    item.index,
                    self._transition(
                        item,
                        row,
                        "threshold",
                        rule.kind,
                        before,
                        after,
                        rule.level(max(before, after)),
                        None,
                        rule.resource_label,
                        self._threshold_detail(rule, row, before, after, absent),
                    ),
                )
            )

    def _threshold_detail(
        self, rule: ThresholdRule, row: int, before: int, after: int, absent: bool
    ) -> str:
        """The change in words: value against threshold, and for how many samples."""
        _, metric, items = self.series[row]
        value = float(self.last_value[row])
        rising = after > before
        count = rule.for_samples if rising else rule.clear_samples
        samples = f"{count} sample" if count == 1 else f"{count} samples"
        if rule.kind == "runaway_process":
            labels = dict(items)
            who = f"pid {labels.get('pid', '?')} ({labels.get('command') or labels.get('name')})"
            if absent:
                return f"{who} no longer among the top processes"
            amount = f"{value:.0f}{PROCESS_RESOURCE.get(metric, ' ' + metric)}"
            if after:
                return f"{who} at {amount} for {samples}"
            return f"{who} back to {amount} for {samples}"
        if absent:
            return f"{metric} no longer reported, for {samples}"
        above = rule.direction == "above"
        if rising:
            crossed = rule.level(after)
            return (
                f"{metric} {_number(value)} {'over' if above else 'under'} {_number(crossed)} "
                f"for {samples}"
            )
        held = rule.level(before)
        limit = held - rule.hysteresis if above else held + rule.hysteresis
        return (
            f"{metric} {_number(value)}, back {'under' if above else 'over'} {_number(limit)} "
            f"for {samples}"
        )

    def _anomalies(
        self,
        items: list[_Item],
        name: str,
        block: AnomalyBlock,
        brows: IntArray,
        values: FloatArray,
        times: FloatArray,
        owners: IntArray,
        events: list[tuple[int, IssueChange]],
    ) -> None:
        scores = block.detector.step(brows, values, times)
        block.last_score[brows] = scores
        seen = block.seen[brows] + 1
        block.seen[brows] = seen
        warm = seen > block.warmup[brows]
        anomalous = (scores >= block.detector.threshold) & (values >= block.min_value[brows])
        target = (warm & anomalous).astype(np.intp)
        changed, old, new = block.debounce.advance(
            brows, target, block.for_samples[brows], block.clear_samples[brows]
        )
        for pos, before, after in zip(changed.tolist(), old.tolist(), new.tolist(), strict=True):
            item = items[owners[pos]]
            brow = int(brows[pos])
            row = block.rows[brow]
            score = float(scores[pos])
            metric = self.series[row][1]
            value = _number(float(values[pos]))
            if after:
                samples = int(block.for_samples[brow])
                reason = block.detector.explain(brow)
                said = f"{name}: {reason}" if reason else name
                detail = f"{metric} {value} anomalous (score {score:.6g}, {said})"
            else:
                samples = int(block.clear_samples[brow])
                detail = f"{metric} {value} normal again (score {score:.6g}, {name})"
            events.append(
                (
                    item.index,
                    self._transition(
                        item,
                        row,
                        name,
                        "anomaly",
                        before,
                        after,
                        None,
                        score,
                        None,
                        f"{detail} for {samples} samples",
                    ),
                )
            )

    # -- lifecycle ------------------------------------------------------------

    def _transition(
        self,
        item: _Item,
        row: int,
        source: str,
        kind: str,
        before: int,
        after: int,
        threshold: float | None,
        score: float | None,
        resource_label: str | None,
        detail: str,
    ) -> IssueChange:
        host, metric, label_items = self.series[row]
        labels = dict(label_items)
        fingerprint = issue_fingerprint(host, kind, metric, labels)
        resource = (labels.get(resource_label) if resource_label else None) or (
            metric + ("{" + ",".join(f"{k}={v}" for k, v in label_items) + "}" if labels else "")
        )
        batch = item.batch
        if after and (reason := batch.check_errors.get(labels.get("service", ""))):
            detail = reason  # the failed check says best what is wrong with its service
        signals: dict[str, float] = {}
        if after and resource_label == SIGNAL_LABEL:
            if item.signals is None:
                item.signals = _signals_by_service(batch)
            signals = item.signals.get(resource, {})
        now = batch.collected_at
        at = now.timestamp()
        common = {
            "fingerprint": fingerprint,
            "host": host,
            "kind": kind,
            "resource": resource,
            "metric": metric,
            "labels": labels,
            "value": float(self.last_value[row]),
            "threshold": threshold,
            "detector": source,
            "score": score,
            "detail": detail[:MAX_DETAIL],
            "last_seen": now,
        }
        open_issues = item.state.open
        key = (row, source)
        if before == 0:
            episode = item.state.open_episode(fingerprint, at)
            issue = OpenIssue(fingerprint, row, source, LEVEL_SEVERITY[after], now, episode)
            open_issues[key] = issue
            return IssueOpened(
                event_id=derived_event_id(fingerprint, episode, "opened"),
                severity=issue.severity,
                first_seen=now,
                signals=signals,
                **common,
            )
        item.state.touch_episode(fingerprint, at)
        if after == 0:
            issue = open_issues.pop(key)
            return IssueResolved(
                event_id=derived_event_id(fingerprint, issue.episode, "resolved"),
                severity=issue.severity,
                first_seen=issue.first_seen,
                **common,
            )
        issue = open_issues[key]
        previous, issue.severity = issue.severity, LEVEL_SEVERITY[after]
        issue.updates += 1
        return IssueUpdated(
            event_id=derived_event_id(
                fingerprint, issue.episode, "updated", issue.updates, issue.severity.value
            ),
            severity=issue.severity,
            previous_severity=previous,
            first_seen=issue.first_seen,
            signals=signals,
            **common,
        )

    # -- silence --------------------------------------------------------------

    def watch(self, now: datetime) -> None:
        """Start judging silence afresh from ``now`` (the detector started or restored):
        no host is silent before a whole silence window has passed."""
        self.clock.restart(now)

    def silence_limit(self, state: HostState) -> float:
        """Seconds without a batch after which ``state``'s host is silent."""
        silence = self.config.silence
        if not state.intervals:
            return silence.min_seconds
        usual = statistics.median(state.intervals)
        return max(silence.intervals * usual, silence.min_seconds)

    def check_silence(
        self, now: datetime, hosts: Iterable[str] | None = None, clock: SilenceClock | None = None
    ) -> list[IssueChange]:
        """Open a ``host_silent`` issue for each host that has sent nothing for longer
        than its limit: of all hosts, or of the group ``hosts`` judged on ``clock``.
        Call it only while every batch published to them has been applied."""
        silence = self.config.silence
        clock = self.clock if clock is None else clock
        t = now.timestamp()
        stalled = STALL_CHECKS * silence.check_seconds
        if clock.last_check is not None and t - clock.last_check > stalled:
            clock.restart(now)
        clock.last_check = t
        start = clock.since
        events: list[IssueChange] = []
        states = self.hosts.values() if hosts is None else map(self.hosts.get, hosts)
        for state in states:
            if state is None:
                continue
            heard = state.last_arrival if state.last_arrival is not None else start
            if state.silent is not None or heard is None:
                continue
            watched = heard if start is None else max(heard, start)
            if t - watched <= silence.min_seconds:
                continue
            limit = self.silence_limit(state)
            if t - watched <= limit:
                continue
            events.append(self._silent(state, now, heard, limit))
        return events

    def withdraw_silence(self, host: str) -> None:
        """Take back a ``host_silent`` issue whose opening could not be published: the
        next check judges the host again, and its event has the same id."""
        state = self.hosts[host]
        silent, state.silent = state.silent, None
        if silent is not None and (episode := state.episodes.get(silent.fingerprint)):
            episode.count -= 1

    def _silent(self, state: HostState, now: datetime, heard: float, limit: float) -> IssueOpened:
        fingerprint = issue_fingerprint(state.host, "host_silent", SILENCE_METRIC, {})
        episode = state.open_episode(fingerprint, now.timestamp())
        state.silent = SilentIssue(fingerprint, now, heard, limit, episode)
        self.dirty.add(state.host)
        age = now.timestamp() - heard
        usual = (
            f"; usually one every {_number(statistics.median(state.intervals))} s"
            if state.intervals
            else ""
        )
        return IssueOpened(
            # the same silence re-judged after a restart has the same id
            event_id=derived_event_id(fingerprint, episode, "opened"),
            fingerprint=fingerprint,
            host=state.host,
            kind="host_silent",
            resource=state.host,
            metric=SILENCE_METRIC,
            value=age,
            threshold=limit,
            severity=Severity.CRITICAL,
            detector=SILENCE_DETECTOR,
            detail=f"no metrics for {age:.0f} s (limit {limit:.0f} s{usual})",
            first_seen=now,
            last_seen=now,
        )

    def _heard_from(
        self, state: HostState, batch: MetricBatch, received: float
    ) -> IssueResolved | None:
        """Note a batch's times; if its host was silent, the event resolving that."""
        collected = batch.collected_at.timestamp()
        if state.last_collected is None or collected > state.last_collected:
            if state.last_collected is not None:
                gap = collected - state.last_collected
                # the limit is never under min_seconds: the median of the intervals is
                # worked out only for a gap that long
                if gap > self.config.silence.min_seconds and gap > self.silence_limit(state):
                    state.traffic_from = collected  # its services were silent with it
                state.intervals.append(gap)
            state.last_collected = collected
        state.last_arrival = received
        if state.episodes:
            state.prune_episodes(collected)
        issue, state.silent = state.silent, None
        if issue is None:
            return None
        state.touch_episode(issue.fingerprint, collected)
        gap = max(0.0, received - issue.since)
        return IssueResolved(
            event_id=derived_event_id(issue.fingerprint, issue.episode, "resolved"),
            fingerprint=issue.fingerprint,
            host=state.host,
            kind="host_silent",
            resource=state.host,
            metric=SILENCE_METRIC,
            value=gap,
            threshold=issue.limit,
            severity=Severity.CRITICAL,
            detector=SILENCE_DETECTOR,
            detail=f"metrics again after {gap:.0f} s without",
            first_seen=issue.first_seen,
            last_seen=batch.collected_at,
        )

    # -- service silence --------------------------------------------------------

    def traffic_limit(self, series: ServiceTraffic) -> float:
        """Seconds a watched service may be absent before it has no traffic."""
        traffic = self.config.traffic
        if not series.gaps:
            return traffic.min_seconds
        return max(traffic.intervals * max(series.gaps), traffic.min_seconds)

    def _traffic(
        self, state: HostState, batch: MetricBatch, present: tuple[str, ...]
    ) -> list[IssueChange]:
        """Note which watched services are in a host's batch and judge the others.

        With the check off, nothing new is watched or opened, but what is open still
        resolves."""
        events: list[IssueChange] = []
        here = self._traffic_seen(state, batch, present, events)
        if here < len(state.traffic):
            self._traffic_missing(state, batch, set(present), events)
        return events

    def _traffic_seen(
        self,
        state: HostState,
        batch: MetricBatch,
        present: tuple[str, ...],
        events: list[IssueChange],
    ) -> int:
        """Note the services in the batch (resolving their issues); returns how many
        of them are watched."""
        config = self.config.traffic
        now = batch.collected_at.timestamp()
        watched, since = state.traffic, state.traffic_from
        here = 0
        for name in present:
            series = watched.get(name)
            if series is None:
                if config.enabled and (
                    len(watched) < config.max_services or _make_room(state, now)
                ):
                    watched[name] = ServiceTraffic(now)
                    here += 1
                continue
            here += 1
            last = series.last_seen
            if now <= last:
                continue  # collected before what it has seen (a clock stepped back)
            if since is None or last >= since:
                series.gaps.append(now - last)  # not across its host's silence
            series.last_seen = now
            if series.appearances < config.min_appearances:
                series.appearances += 1
            if series.issue is not None:
                absent = now - (last if since is None else max(last, since))
                events.append(self._traffic_back(state, batch, name, series.issue, absent))
                series.issue = None
        return here

    def _traffic_missing(
        self, state: HostState, batch: MetricBatch, present: set[str], events: list[IssueChange]
    ) -> None:
        """Judge the watched services missing from the batch; forget those gone too long."""
        config = self.config.traffic
        now = batch.collected_at.timestamp()
        since = -math.inf if state.traffic_from is None else state.traffic_from
        forgotten = []
        for name, series in state.traffic.items():
            if name in present:
                continue
            if now - series.last_seen > config.forget_after_seconds:
                forgotten.append(name)
                continue
            absent = now - max(series.last_seen, since)
            if (
                config.enabled
                and series.issue is None
                and series.appearances >= config.min_appearances
                and absent > (limit := self.traffic_limit(series))
            ):
                events.append(self._no_traffic(state, batch, name, series, absent, limit))
        for name in forgotten:
            series = state.traffic.pop(name)
            if series.issue is not None:
                age = now - series.last_seen
                events.append(self._traffic_forgotten(state, batch, name, series.issue, age))

    def _traffic_event(
        self, state: HostState, name: str, fingerprint: str, value: float, threshold: float
    ) -> dict[str, Any]:
        """The fields every event about a service's traffic has."""
        label = self.config.traffic.resource_label
        return {
            "fingerprint": fingerprint,
            "host": state.host,
            "kind": "no_traffic",
            "resource": name,
            "metric": self.config.traffic.metric,
            "labels": {label: name},
            "value": value,
            "threshold": threshold,
            "severity": Severity.WARNING,
            "detector": TRAFFIC_DETECTOR,
        }

    def _no_traffic(
        self,
        state: HostState,
        batch: MetricBatch,
        name: str,
        series: ServiceTraffic,
        absent: float,
        limit: float,
    ) -> IssueOpened:
        metric, label = self.config.traffic.metric, self.config.traffic.resource_label
        fingerprint = issue_fingerprint(state.host, "no_traffic", metric, {label: name})
        episode = state.open_episode(fingerprint, batch.collected_at.timestamp())
        series.issue = NoTrafficIssue(fingerprint, batch.collected_at, limit, episode)
        usual = f"; at most {_number(max(series.gaps))} s apart before" if series.gaps else ""
        return IssueOpened(
            event_id=derived_event_id(fingerprint, episode, "opened"),
            detail=f"no spans from {name} for {absent:.0f} s (limit {limit:.0f} s{usual})"[
                :MAX_DETAIL
            ],
            first_seen=batch.collected_at,
            last_seen=batch.collected_at,
            **self._traffic_event(state, name, fingerprint, absent, limit),
        )

    def _traffic_back(
        self, state: HostState, batch: MetricBatch, name: str, issue: NoTrafficIssue, absent: float
    ) -> IssueResolved:
        state.touch_episode(issue.fingerprint, batch.collected_at.timestamp())
        return IssueResolved(
            event_id=derived_event_id(issue.fingerprint, issue.episode, "resolved"),
            detail=f"spans from {name} again after {absent:.0f} s without"[:MAX_DETAIL],
            first_seen=issue.first_seen,
            last_seen=batch.collected_at,
            **self._traffic_event(state, name, issue.fingerprint, absent, issue.limit),
        )

    def _traffic_forgotten(
        self, state: HostState, batch: MetricBatch, name: str, issue: NoTrafficIssue, age: float
    ) -> IssueResolved:
        forget = self.config.traffic.forget_after_seconds
        state.touch_episode(issue.fingerprint, batch.collected_at.timestamp())
        return IssueResolved(
            event_id=derived_event_id(issue.fingerprint, issue.episode, "resolved"),
            detail=f"no spans from {name} for {age:.0f} s, over forget_after_seconds "
            f"({forget:g}): no longer watched"[:MAX_DETAIL],
            first_seen=issue.first_seen,
            last_seen=batch.collected_at,
            **self._traffic_event(state, name, issue.fingerprint, age, issue.limit),
        )


def _make_room(state: HostState, now: float) -> bool:
    """Forget the watched service of ``state`` gone longest without an open issue
    (and not seen at ``now``); False if there is none."""
    quiet = [
        (s.last_seen, n) for n, s in state.traffic.items() if s.issue is None and s.last_seen < now
    ]
    if not quiet:
        return False
    del state.traffic[min(quiet)[1]]
    return True


def _signals_by_service(batch: MetricBatch) -> dict[str, dict[str, float]]:
    """The batch's trace figures (``SIGNAL_METRICS``) by the service they are about."""
    found: dict[str, dict[str, float]] = defaultdict(dict)
    columns = batch.samples
    label_sets = columns.label_sets
    for name, value, index in zip(columns.names, columns.values, columns.label_index, strict=True):
        key = SIGNAL_METRICS.get(name)
        if key is not None and (service := label_sets[index].get(SIGNAL_LABEL)):
            found[service][key] = value
    return found
