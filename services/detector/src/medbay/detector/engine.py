"""Turning metric batches into issue events: thresholds, anomalies, lifecycle.

Everything here is plain Python and numpy, with no knowledge of NATS.

The state of every series of every host lives in flat arrays (one row per
series), so a whole fetched set of scrapes is evaluated with a handful of
vectorised operations: the scrapes are grouped into *waves* holding at most one
scrape per host (so per-series order is kept), and each wave is one pass. Only
the rare state changes are handled one by one. An issue is opened once per
fingerprint, updated when its severity changes and resolved when the condition
clears: never re-emitted per sample.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import itemgetter
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

LEVEL_SEVERITY = {1: Severity.WARNING, 2: Severity.CRITICAL}
_NAME = itemgetter("name")
_VALUE = itemgetter("value")


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _cat(parts: list[NDArray[Any]], dtype: type) -> NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


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


class AnomalyBlock:
    """All series (of all hosts) scored by one anomaly detector."""

    def __init__(self, detector: AnomalyDetector) -> None:
        self.detector = detector
        self.rows: list[int] = []  # block row -> series row
        self.for_samples = np.zeros(0, dtype=np.intp)
        self.clear_samples = np.zeros(0, dtype=np.intp)
        self.warmup = np.zeros(0, dtype=np.intp)
        self.seen = np.zeros(0, dtype=np.intp)  # samples scored per row
        self.debounce = Debounce()
        self.last_score = np.zeros(0)

    def add(self, rows: list[int], rules: list[AnomalyRule]) -> list[int]:
        start = len(self.rows)
        self.detector.add_series(len(rows))
        self.rows += rows
        self.for_samples = np.append(self.for_samples, [r.for_samples for r in rules])
        self.clear_samples = np.append(self.clear_samples, [r.clear_samples for r in rules])
        self.warmup = np.append(self.warmup, [r.warmup_samples for r in rules])
        self.seen = np.append(self.seen, np.zeros(len(rows), dtype=np.intp))
        self.debounce.grow(len(rows))
        self.last_score = np.concatenate([self.last_score, np.zeros(len(rows))])
        return list(range(start, start + len(rows)))


@dataclass
class OpenIssue:
    fingerprint: str
    row: int
    source: str  # "threshold" or the anomaly detector's name
    severity: Severity
    first_seen: datetime


@dataclass(frozen=True)
class Layout:
    """Where the samples of a scrape of a given shape go; computed once per shape."""

    rows: IntArray  # series row of each kept sample
    picks: IntArray  # the sample each row takes its value from
    ruled: IntArray  # positions in ``rows`` with a threshold rule
    blocks: dict[str, tuple[IntArray, IntArray]]  # detector: positions in rows, block rows


@dataclass
class HostState:
    host: str
    last_seq: int = 0
    index: dict[SeriesKey, int] = field(default_factory=dict)
    open: dict[tuple[int, str], OpenIssue] = field(default_factory=dict)
    shape: tuple[list[str], list[dict[str, str] | None], Layout] | None = None


@dataclass
class _Item:
    index: int  # position of the batch in the call
    batch: MetricBatch
    state: HostState
    layout: Layout
    values: FloatArray


class DetectionEngine:
    """Applies metric batches, in stream order per host, and returns issue events."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.hosts: dict[str, HostState] = {}
        self.dirty: set[str] = set()
        self.samples_seen = 0
        self.max_seq = 0
        # one entry per series row
        self.series: list[tuple[str, str, LabelItems]] = []  # host, metric, labels
        self.rule_of: list[ThresholdRule | None] = []
        self.block_of: list[tuple[str, int] | None] = []
        self.last_value = np.zeros(0)
        self.thresholds = Debounce()
        self.blocks: dict[str, AnomalyBlock] = {}
        self._params: tuple[NDArray[Any], ...] = ()
        self._params_rows = -1

    # -- series ---------------------------------------------------------------

    def host(self, name: str) -> HostState:
        state = self.hosts.get(name)
        if state is None:
            state = self.hosts[name] = HostState(name)
        return state

    def add_series(self, host: str, keys: Sequence[SeriesKey]) -> list[int]:
        """Create rows for new series, with their rules and detectors."""
        start = len(self.series)
        rows = list(range(start, start + len(keys)))
        by_block: dict[str, tuple[list[int], list[AnomalyRule]]] = defaultdict(lambda: ([], []))
        for row, (name, items) in zip(rows, keys, strict=True):
            labels = dict(items)
            self.series.append((host, name, items))
            self.rule_of.append(
                next(
                    (
                        r
                        for r in self.config.thresholds
                        if r.metric == name and _matches(labels, r.labels)
                    ),
                    None,
                )
            )
            arule = next(
                (r for r in self.config.anomaly if r.metric == name and _matches(labels, r.labels)),
                None,
            )
            self.block_of.append(None)
            if arule is not None:
                by_block[arule.detector][0].append(row)
                by_block[arule.detector][1].append(arule)
        for detector, (brows_of, rules) in by_block.items():
            block = self.blocks.get(detector)
            if block is None:
                block = self.blocks[detector] = AnomalyBlock(make_detector(detector))
            for row, brow in zip(brows_of, block.add(brows_of, rules), strict=True):
                self.block_of[row] = (detector, brow)
        self.thresholds.grow(len(keys))
        self.last_value = np.concatenate([self.last_value, np.zeros(len(keys))])
        self.host(host).index.update(zip(keys, rows, strict=True))
        return rows

    def _rule_params(self) -> tuple[NDArray[Any], ...]:
        """(warning, critical, hysteresis, sign, for, clear) per row, rebuilt when rows grow."""
        if self._params_rows != len(self.series):
            levels = [r.signed_levels() if r else (np.inf, np.inf) for r in self.rule_of]
            self._params = (
                np.array([w for w, _ in levels], dtype=np.float64),
                np.array([c for _, c in levels], dtype=np.float64),
                np.array([r.hysteresis if r else 0.0 for r in self.rule_of]),
                np.array([-1.0 if r and r.direction == "below" else 1.0 for r in self.rule_of]),
                np.array([r.for_samples if r else 1 for r in self.rule_of], dtype=np.intp),
                np.array([r.clear_samples if r else 1 for r in self.rule_of], dtype=np.intp),
            )
            self._params_rows = len(self.series)
        return self._params

    def layout(self, state: HostState, batch: MetricBatch) -> Layout:
        """Where the batch's samples go.

        A host sends the same series in the same order scrape after scrape, so the
        layout is cached per host and checked with two list comparisons done in C.
        """
        names = list(map(_NAME, batch.samples))
        labels: list[dict[str, str] | None] = list(
            map(dict.get, batch.samples, repeat("labels"))  # type: ignore[arg-type]
        )
        shape = state.shape
        if shape is not None and shape[0] == names and shape[1] == labels:
            return shape[2]
        positions: dict[SeriesKey, int] = {}
        for i, (name, lab) in enumerate(zip(names, labels, strict=True)):
            positions[(name, tuple(sorted(lab.items())) if lab else ())] = i  # last one wins
        new = [key for key in positions if key not in state.index]
        if new:
            self.add_series(state.host, new)
        rows = np.array([state.index[key] for key in positions], dtype=np.intp)
        picks = np.fromiter(positions.values(), dtype=np.intp, count=len(positions))
        ruled = np.flatnonzero([self.rule_of[r] is not None for r in rows.tolist()])
        members: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for pos, row in enumerate(rows.tolist()):
            if (where := self.block_of[row]) is not None:
                members[where[0]][0].append(pos)
                members[where[0]][1].append(where[1])
        blocks = {
            name: (np.array(pos, dtype=np.intp), np.array(brows, dtype=np.intp))
            for name, (pos, brows) in members.items()
        }
        layout = Layout(rows, picks, ruled.astype(np.intp), blocks)
        state.shape = (names, labels, layout)
        return layout

    # -- processing -----------------------------------------------------------

    def process(self, batch: MetricBatch, seq: int) -> list[IssueChange]:
        return [event for _, event in self.process_many([(batch, seq)])]

    def process_many(
        self, batches: Sequence[tuple[MetricBatch, int]]
    ) -> list[tuple[int, IssueChange]]:
        """Apply batches given in stream order with their stream sequence numbers.

        Returns the issue events, each with the position of the batch that caused
        it. A batch at or below its host's last applied sequence was applied
        already (a redelivery, or a replay after restart) and is skipped.
        """
        waves: list[list[_Item]] = []
        depth: dict[str, int] = defaultdict(int)
        for index, (batch, seq) in enumerate(batches):
            state = self.host(batch.host)
            if seq <= state.last_seq:
                continue
            state.last_seq = seq
            self.max_seq = max(self.max_seq, seq)
            self.dirty.add(batch.host)
            if not batch.samples:
                continue
            layout = self.layout(state, batch)
            values = np.array(list(map(_VALUE, batch.samples)), dtype=np.float64)[layout.picks]
            wave = depth[batch.host]
            depth[batch.host] += 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(_Item(index, batch, state, layout, values))
        events: list[tuple[int, IssueChange]] = []
        for items in waves:
            self._wave(items, events)
        return events

    def _wave(self, items: list[_Item], events: list[tuple[int, IssueChange]]) -> None:
        """Evaluate scrapes of distinct hosts in one vectorised pass."""
        rows = np.concatenate([it.layout.rows for it in items])
        values = np.concatenate([it.values for it in items])
        self.last_value[rows] = values
        self.samples_seen += len(values)

        ruled = [it.layout.ruled for it in items]
        r_rows = _cat([it.layout.rows[p] for it, p in zip(items, ruled, strict=True)], np.intp)
        if len(r_rows):
            r_values = _cat([it.values[p] for it, p in zip(items, ruled, strict=True)], np.float64)
            owners = np.repeat(np.arange(len(items)), [len(p) for p in ruled])
            self._thresholds(items, r_rows, r_values, owners, events)
        for name, block in self.blocks.items():
            parts = [it.layout.blocks.get(name) for it in items]
            if not any(p is not None for p in parts):
                continue
            brows = _cat([p[1] for p in parts if p is not None], np.intp)
            b_values = _cat(
                [it.values[p[0]] for it, p in zip(items, parts, strict=True) if p is not None],
                np.float64,
            )
            owners = np.repeat(
                np.arange(len(items)), [0 if p is None else len(p[0]) for p in parts]
            )
            self._anomalies(items, name, block, brows, b_values, owners, events)

    def _thresholds(
        self,
        items: list[_Item],
        rows: IntArray,
        values: FloatArray,
        owners: IntArray,
        events: list[tuple[int, IssueChange]],
    ) -> None:
        warn_all, crit_all, hyst_all, sign_all, up_all, down_all = self._rule_params()
        warn, crit, hyst = warn_all[rows], crit_all[rows], hyst_all[rows]
        v = values * sign_all[rows]
        raised = np.where(v > crit, 2, np.where(v > warn, 1, 0))
        holding = np.where(v > crit - hyst, 2, np.where(v > warn - hyst, 1, 0))
        current = self.thresholds.level[rows]
        target = np.where(raised > current, raised, np.minimum(current, holding))
        changed, old, new = self.thresholds.advance(rows, target, up_all[rows], down_all[rows])
        for pos, before, after in zip(changed.tolist(), old.tolist(), new.tolist(), strict=True):
            row = int(rows[pos])
            rule = self.rule_of[row]
            assert rule is not None
            crossed = rule.critical if max(before, after) == 2 else rule.warning
            item = items[owners[pos]]
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
                        crossed if crossed is not None else rule.critical,
                        None,
                        rule.resource_label,
                    ),
                )
            )

    def _anomalies(
        self,
        items: list[_Item],
        name: str,
        block: AnomalyBlock,
        brows: IntArray,
        values: FloatArray,
        owners: IntArray,
        events: list[tuple[int, IssueChange]],
    ) -> None:
        scores = block.detector.step(brows, values)
        block.last_score[brows] = scores
        seen = block.seen[brows] + 1
        block.seen[brows] = seen
        warm = seen > block.warmup[brows]
        target = (warm & (scores >= block.detector.threshold)).astype(np.intp)
        changed, old, new = block.debounce.advance(
            brows, target, block.for_samples[brows], block.clear_samples[brows]
        )
        for pos, before, after in zip(changed.tolist(), old.tolist(), new.tolist(), strict=True):
            item = items[owners[pos]]
            events.append(
                (
                    item.index,
                    self._transition(
                        item,
                        block.rows[int(brows[pos])],
                        name,
                        "anomaly",
                        before,
                        after,
                        None,
                        float(scores[pos]),
                        None,
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
    ) -> IssueChange:
        host, metric, label_items = self.series[row]
        labels = dict(label_items)
        fingerprint = issue_fingerprint(host, kind, metric, labels)
        resource = (labels.get(resource_label) if resource_label else None) or (
            metric + ("{" + ",".join(f"{k}={v}" for k, v in label_items) + "}" if labels else "")
        )
        batch = item.batch
        now = batch.collected_at
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
            "last_seen": now,
        }
        open_issues = item.state.open
        key = (row, source)
        if before == 0:
            issue = OpenIssue(fingerprint, row, source, LEVEL_SEVERITY[after], now)
            open_issues[key] = issue
            return IssueOpened(
                event_id=derived_event_id(batch.event_id, fingerprint, "opened"),
                severity=issue.severity,
                first_seen=now,
                **common,
            )
        if after == 0:
            issue = open_issues.pop(key)
            return IssueResolved(
                event_id=derived_event_id(batch.event_id, fingerprint, "resolved"),
                severity=issue.severity,
                first_seen=issue.first_seen,
                **common,
            )
        issue = open_issues[key]
        previous, issue.severity = issue.severity, LEVEL_SEVERITY[after]
        return IssueUpdated(
            event_id=derived_event_id(batch.event_id, fingerprint, "updated"),
            severity=issue.severity,
            previous_severity=previous,
            first_seen=issue.first_seen,
            **common,
        )
