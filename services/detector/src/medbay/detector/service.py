"""The detector's bus side: the partitions it holds, what it publishes, its snapshots.

METRICS is stored in partitions (``medbay.common.streams``); each detector replica
holds some of them by lease (``ownership``). For each partition it holds,
``DetectorService`` keeps a ``Partition``: its hosts, restored from the partition's
snapshots and replay (``snapshots``), and a consumer of the partition's durable
(``detector-<p>``). It publishes the issue events it finds to ISSUES, keeps each
partition's snapshots current, and checks the partitions' hosts for silence on a
clock. A partition handed over to another replica is saved first; one lost (its
lease not renewed in time, or its keys written by another replica) is dropped at
once. ``main`` wires it to the runtime.

The hosts of all the partitions a replica holds live in one
``engine.DetectionEngine``, and the sets their consumers fetch are evaluated
together, so the engine's vectorised pass covers the hosts of every partition with
work rather than one partition's (measured with 50 hosts over 16 partitions: 65 µs
of engine time per batch when each partition is evaluated alone, 20 µs together).
While partitions are behind (their last set said more batches wait), a set waits
for theirs, at most ``GATHER_SECONDS``; while they keep up, a set waits
``LINGER_SECONDS`` for the sets of the next moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from medbay.common.access import DETECTOR_SINGLE, Durable, detector_partition
from medbay.common.bus import (
    BatchConsumer,
    ConsumerSpec,
    Delivery,
    consumer,
    jetstream,
    publish_event,
    stream_position,
)
from medbay.common.events import IssueChange, MetricBatch, utc_now
from medbay.common.kv import patiently
from medbay.common.lease import Lease
from medbay.common.runtime import ServiceRuntime, current_task_cancelling
from medbay.common.streams import (
    ISSUES,
    METRICS,
    PREFIX,
    metrics_partition,
    metrics_partition_subjects,
    stream_partitions,
)
from medbay.common.telemetry import CRITICAL_SPAN_ATTRIBUTE
from medbay.detector.config import DetectorConfig
from medbay.detector.engine import DetectionEngine, SilenceClock
from medbay.detector.ownership import Ownership
from medbay.detector.partitions import holder_name
from medbay.detector.snapshots import (
    HostSnapshot,
    LostPartition,
    PartitionStore,
    SnapshotStore,
    export_host,
    import_host,
)

log = logging.getLogger("medbay.detector")

LINGER_SECONDS = 0.5
"""While the partitions keep up, how long the first set handed in waits for others
before a pass: more sets a pass, and each partition's next set is fetched no sooner,
so it brings more batches. A pass has a cost of its own besides its batches' (about
1 ms: the event loop's rounds, the consumers' socket writes), and replicas sharing a
load each make as many passes as one replica alone would: at 1,000 hosts, 20 ms took
a quarter more CPU per sample than 0.2 s, and with three replicas 0.2 s took 10-20 %
more CPU per sample than one replica, 0.5 s 0-10 % (`medbay bench faults --scaling`).
It costs up to 0.5 s from publish to issue, which a scrape interval of seconds and
the samples a rule waits for dwarf."""
GATHER_SECONDS = 0.5
"""The longest a set waits for the next sets of the partitions that are behind; one
that does not come in time is not waited for again until it hands in a set."""
POLL_SECONDS = 1.0
"""How often leases are looked after: free partitions are taken within this."""
UNPARTITIONED_WAIT_SECONDS = 5.0


@dataclass
class Partition:
    """One METRICS partition this replica holds."""

    index: int
    lease: Lease
    store: PartitionStore
    hosts: set[str] = field(default_factory=set)
    """Its hosts in the replica's engine."""
    max_seq: int = 0
    """The last of its batches applied: the watermark a full flush writes."""
    clock: SilenceClock = field(default_factory=SilenceClock)
    evaluating: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held from evaluating to publishing, so a batch and a silence check never publish
    one issue's events out of order."""
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One flush at a time: each write is a compare-and-swap on the last one."""
    task: asyncio.Task[None] | None = None
    """Restoring, then consuming."""
    ready: bool = False
    """Restored and consuming."""
    lost: bool = False
    """Its keys were written by another replica: it is no longer ours."""
    replayed_to: int = 0
    """Deliveries up to this sequence were applied by the replay."""

    @property
    def active(self) -> bool:
        """Whether this replica may act for the partition this instant."""
        return self.lease.held and not self.lost

    def check(self) -> None:
        if not self.active:
            raise LostPartition(f"partition {self.index} is no longer held")


@dataclass(frozen=True)
class Snapshots:
    """A partition's changed hosts, exported, and the watermark they complete."""

    hosts: set[str]
    snaps: list[HostSnapshot]
    watermark: int


@dataclass
class Submitted:
    """A partition's fetched set waiting to be evaluated with the others."""

    work: Partition
    deliveries: list[Delivery[MetricBatch]]
    done: asyncio.Future[None]
    """Set when its events are published and saved (or failed): then it is acked."""


class DetectorService:
    """Holds the partitions' engines, publishes what they find, keeps their snapshots."""

    def __init__(self, rt: ServiceRuntime, config: DetectorConfig, replica: str) -> None:
        self.rt = rt
        self.config = config
        self.replica = replica
        self.holder = holder_name(replica)
        self.store: SnapshotStore | None = None
        self.ownership: Ownership | None = None
        self.partitions: dict[int, Partition] = {}
        self.engine = DetectionEngine(config)
        """The hosts of every partition held."""
        self.submitted: list[Submitted] = []
        self.handed_in = asyncio.Event()
        self.behind: set[int] = set()
        """Partitions whose last set said more batches wait for them."""
        self.evaluator: asyncio.Task[None] | None = None
        self.count = 0
        """METRICS's partition count, read from the stream."""
        self.tracer = trace.get_tracer("medbay.detector")
        reg = rt.registry
        self.samples = Counter("medbay_detector_samples", "Samples evaluated", registry=reg)
        self.batches = Counter("medbay_detector_batches", "Metric batches applied", registry=reg)
        self.issue_events = Counter(
            "medbay_detector_issue_events", "Issue events published", ["type"], registry=reg
        )
        self.open_issues = Gauge("medbay_detector_open_issues", "Open issues", registry=reg)
        self.handle_seconds = Histogram(
            "medbay_detector_batch_seconds",
            "Time to evaluate the fetched sets taken together, and publish what they show",
            registry=reg,
        )
        self.held = Gauge(
            "medbay_detector_partitions", "METRICS partitions this replica holds", registry=reg
        )
        self.changes = Counter(
            "medbay_detector_partition_changes",
            "Partitions taken (acquired), given to another replica (handed_over) or lost",
            ["change"],
            registry=reg,
        )
        rt.info["replica"] = replica

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        js = jetstream(self.rt.broker)
        self.store = await SnapshotStore.open(js, self.rt.settings.nats_replicas)
        self.count = await self.stream_partitions(js)
        await patiently(lambda: self.remove_single_durable(js), "the detector's durables")
        await self.ensure_durables(js)
        self.ownership = Ownership(
            js,
            self.store.kv,
            replica=self.replica,
            holder=self.holder,
            partitions=self.count,
            ttl_seconds=self.config.partitions.lease_seconds,
            on_acquired=self.acquired,
            on_hand_over=self.hand_over,
            on_lost=self.lost,
            still_ours=lambda p: p in self.partitions and not self.partitions[p].lost,
        )
        self.tune_gc()
        log.info("replica %s: %d METRICS partitions", self.replica, self.count)

    @staticmethod
    async def remove_single_durable(js: JetStreamContext) -> None:
        with contextlib.suppress(NotFoundError, APIError):
            await js.delete_consumer(METRICS.name, DETECTOR_SINGLE.name)
            log.info("removed the unpartitioned detector's durable %r", DETECTOR_SINGLE.name)

    @staticmethod
    async def stream_partitions(js: JetStreamContext) -> int:
        """METRICS's partition count, waiting while it is not partitioned (a collector
        of an earlier release declared it; the next one to start changes it)."""
        warned = False
        while True:
            info = await patiently(lambda: js.stream_info(METRICS.name), "METRICS")
            count = stream_partitions(info.config)
            if count:
                if count != METRICS.partitions:
                    log.warning(
                        "METRICS has %d partitions, this release declares %d: run the same "
                        "release of the collector and the detector",
                        count,
                        METRICS.partitions,
                    )
                return count
            if not warned:
                log.warning("METRICS is not partitioned: waiting for a collector of this release")
                warned = True
            await asyncio.sleep(UNPARTITIONED_WAIT_SECONDS)

    async def ensure_durables(self, js: JetStreamContext) -> None:
        """Create the partitions' durables that do not exist yet, starting with new
        metrics: from the moment a replica is ready, nothing published is missed, even
        in a partition nobody has taken yet."""
        for index in range(self.count):
            durable = detector_partition(index)
            await patiently(functools.partial(self._ensure_durable, js, durable), durable.name)

    @staticmethod
    async def _ensure_durable(js: JetStreamContext, durable: Durable) -> None:
        try:
            await js.consumer_info(METRICS.name, durable.name)
            return
        except NotFoundError:
            pass
        config = ConsumerSpec(
            durable.name, durable.filter_subject, METRICS, deliver_new=True
        ).consumer_config()
        try:
            await js.add_consumer(METRICS.name, config)
        except APIError:  # another replica made it just now
            await js.consumer_info(METRICS.name, durable.name)

    @staticmethod
    def tune_gc() -> None:
        """Every sample parsed is a dict the cycle collector would keep scanning; none
        form cycles, so collect far less often (measured: a third more throughput)."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    async def stop(self) -> None:
        """Save every partition and give up the leases, so the other replicas take over
        at once rather than when the leases expire."""
        try:
            if self.ownership is not None:
                await self.ownership.release_all(hand_over=True)
        finally:
            # Cut short by the stop's time bound, the partitions not handed over yet
            # stop consuming now, before the connection closes under them (their
            # leases lapse, and the next holder replays from the last watermark).
            for work in self.partitions.values():
                if work.task is not None:
                    work.task.cancel()
            if self.evaluator is not None:
                self.evaluator.cancel()

    # -- ownership ----------------------------------------------------------------------

    async def ownership_loop(self) -> None:
        assert self.ownership is not None
        while True:
            try:
                await self.ownership.step()
            except Exception as exc:
                if current_task_cancelling():
                    raise
                log.warning("partition leases: %r; trying again", exc)
            self._update_held()
            await asyncio.sleep(POLL_SECONDS)

    async def acquired(self, index: int, lease: Lease) -> None:
        assert self.store is not None
        work = Partition(index, lease, self.store.partition(index, self.count))
        self.partitions[index] = work
        work.task = asyncio.create_task(self.run_partition(work), name=f"partition-{index}")
        self.changes.labels("acquired").inc()
        log.info("partition %d acquired", index)

    async def hand_over(self, index: int) -> None:
        """Stop consuming ``index``, save its state, forget it (the lease is released next)."""
        work = self.partitions.pop(index, None)
        if work is None:
            return
        # A set being evaluated is published first: state saved ahead of its events
        # would keep the next holder from deriving them again.
        async with work.evaluating:
            await self._stop_task(work)
            if work.ready and work.active:
                try:
                    await self.flush(work)
                except Exception as exc:  # the next holder replays a little more
                    log.warning("saving partition %d before handing it over: %r", index, exc)
            self.engine.drop_hosts(work.hosts)
        self.changes.labels("handed_over").inc()
        self._update_gauges()

    async def lost(self, index: int) -> None:
        """Stop consuming ``index`` at once and forget its hosts: someone else has it."""
        work = self.partitions.pop(index, None)
        if work is not None:
            work.lost = True
            await self._stop_task(work)
            self.engine.drop_hosts(work.hosts)
            self.changes.labels("lost").inc()
            self._update_gauges()

    @staticmethod
    async def _stop_task(work: Partition) -> None:
        if work.task is not None:
            work.task.cancel()
            await asyncio.gather(work.task, return_exceptions=True)

    async def run_partition(self, work: Partition) -> None:
        """Restore the partition, then consume its durable until cancelled."""
        try:
            start = await self.restore(work)
            metrics: BatchConsumer[MetricBatch] = consumer(
                self.rt,
                detector_partition(work.index),
                lambda deliveries: self.handle(work, deliveries),
                MetricBatch,
                batch_size=self.config.batch_size,
                start_seq=start,
            )
            await metrics.open()
            work.ready = True
            self._update_held()
            await metrics.run()
        except LostPartition as exc:
            work.lost = True
            log.warning("partition %d: %s", work.index, exc)
        except Exception:
            if current_task_cancelling():
                raise
            log.exception("partition %d failed; it is given up for another try", work.index)
            work.lost = True

    # -- restore and replay ------------------------------------------------------------

    async def restore(self, work: Partition) -> int:
        """Load the partition's snapshots and replay what came after them; returns the
        sequence its durable starts at when it is first created."""
        js = jetstream(self.rt.broker)
        durable = detector_partition(work.index).name
        restored = await work.store.restore()
        engine = self.engine
        if restored.watermark is None:
            # A first start: the partition's state begins where its durable stands
            # (made with new metrics when a replica first started); a crash before the
            # first snapshot replays from here.
            try:
                floor = (await js.consumer_info(METRICS.name, durable)).ack_floor
                begin = int(floor.stream_seq if floor is not None else 0)
            except NotFoundError:
                begin = (await js.stream_info(METRICS.name)).state.last_seq
            async with work.writing:
                work.check()
                await work.store.save_watermark(begin)
            work.max_seq = begin
            work.clock.restart(utc_now())
            return begin + 1
        count = 0
        for snap in restored.snaps:
            try:
                import_host(engine, snap)  # checks it all before changing anything
                work.hosts.add(str(snap.meta["host"]))
            except ValueError as exc:  # SnapshotError: written by something else, or damaged
                log.warning(
                    "snapshot of %r is unreadable (%s); that host starts afresh",
                    snap.meta.get("host"),
                    exc,
                )
                continue
            count += 1
        work.max_seq = restored.watermark
        replayed, end = await self.replay(work, restored.watermark + 1, restored.migrating)
        work.replayed_to = end
        async with work.writing:
            if restored.migrating:
                await work.store.retire()
        log.info(
            "partition %d: restored %d hosts%s, replayed %d batches from %d",
            work.index,
            count,
            " from the earlier layout" if restored.migrating else "",
            replayed,
            restored.watermark + 1,
        )
        work.clock.restart(utc_now())  # what happened before is no host's silence
        self._update_gauges()
        return end + 1

    async def replay(self, work: Partition, start_seq: int, everything: bool) -> tuple[int, int]:
        """Re-apply the partition's batches from ``start_seq`` up to now, publishing what
        they show, then save it all. With ``everything``, read every METRICS subject
        and keep the batches of the partition's hosts (an earlier layout's state).
        Returns how many batches were applied, and the last sequence read."""
        js = jetstream(self.rt.broker)
        end = (await js.stream_info(METRICS.name)).state.last_seq
        subject = f"{PREFIX}.metrics.>" if everything else metrics_partition_subjects(work.index)
        count = 0
        last = start_seq - 1
        async for msgs in stored(js, subject, start_seq, end):
            items: list[tuple[MetricBatch, int]] = []
            received = []
            for msg in msgs:
                last, stored_at = stream_position(msg)
                host = msg.subject.rsplit(".", 1)[-1]
                if everything and metrics_partition(host, self.count) != work.index:
                    continue
                try:
                    batch = MetricBatch.model_validate_json(msg.data)
                except ValidationError:
                    continue  # dead-lettered when it was first delivered
                items.append((batch, last))
                received.append(stored_at)
            async with work.evaluating:
                work.hosts.update(batch.host for batch, _ in items)
                found = self.engine.process_many(items, received)
                work.max_seq = max(work.max_seq, last)
                for _, event in found:
                    work.check()
                    await self.publish(event)
            count += len(items)
        async with work.evaluating:
            await self.flush(work)
        return count, max(end, last)

    # -- publishing ---------------------------------------------------------------------

    async def publish_all(self, events: list[tuple[IssueChange, trace.Span]]) -> None:
        for event, span in events:
            await self.publish(event, span)

    async def publish(self, event: IssueChange, span: trace.Span | None = None) -> None:
        """Publish ``event`` in a span of its own under ``span`` (the metric batch's
        handling): the remediation path starts here, so the span is marked critical."""
        parent = None if span is None else trace.set_span_in_context(span)
        with self.tracer.start_as_current_span(
            "detector.issue",
            context=parent,
            attributes={
                CRITICAL_SPAN_ATTRIBUTE: True,
                "medbay.issue_kind": event.kind,
                "medbay.fingerprint": event.fingerprint,
            },
        ):
            fresh = await publish_event(
                self.rt.broker, event, stream=ISSUES, timeout=self.rt.settings.publish_timeout
            )
            if not fresh:
                return  # re-derived after a restart or a takeover; JetStream had it already
            self.issue_events.labels(event.type).inc()
            log.info(
                "%s %s %s on %s/%s: %s=%s (%s)",
                event.type,
                event.severity.value,
                event.kind,
                event.host,
                event.resource,
                event.metric,
                event.value,
                event.detector,
                extra={"fingerprint": event.fingerprint, "event_id": event.event_id},
            )

    # -- consuming ----------------------------------------------------------------------

    async def handle(self, work: Partition, deliveries: list[Delivery[MetricBatch]]) -> None:
        """A fetched set of the partition's batches, evaluated with the sets the other
        partitions fetched meanwhile. Not ours any more: raise, so they go back to the
        durable for the next holder."""
        work.check()
        fresh = [d for d in deliveries if d.seq > work.replayed_to]  # else replayed already
        if not fresh:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submitted.append(Submitted(work, fresh, done))
        if deliveries[-1].msg.metadata.num_pending:
            self.behind.add(work.index)
        else:
            self.behind.discard(work.index)
        self.handed_in.set()
        if self.evaluator is None or self.evaluator.done():
            self.evaluator = asyncio.create_task(self.evaluate_submitted(), name="evaluate")
        await done

    async def evaluate_submitted(self) -> None:
        """Evaluate the submitted sets, those waiting together, until none is left."""
        # keeping up: the sets of the next moments join in; behind: ``_gather`` waits
        await asyncio.sleep(0 if self.behind else LINGER_SECONDS)
        while self.submitted:
            await self._gather()
            group, self.submitted = self.submitted, []
            try:
                await self._evaluate_group(group)
            except Exception:  # passed to the sets' consumers, which report it
                pass
            finally:
                for sub in group:  # settled on every path: its consumer waits for it
                    _settle(sub.done, LostPartition("evaluation was interrupted"))

    async def _gather(self) -> None:
        """Wait for the next set of every partition that is behind, at most
        ``GATHER_SECONDS``; those that miss it are no longer waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while True:
            self.behind &= self.partitions.keys()
            missing = self.behind - {sub.work.index for sub in self.submitted}
            remaining = deadline - loop.time()
            if not missing:
                return
            if remaining <= 0:
                self.behind -= missing
                return
            self.handed_in.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.handed_in.wait()

    async def _evaluate_group(self, group: list[Submitted]) -> None:
        async with contextlib.AsyncExitStack() as locks:
            for sub in sorted(group, key=lambda s: s.work.index):
                await locks.enter_async_context(sub.work.evaluating)
            ready: list[Submitted] = []
            for sub in group:
                if sub.done.done():  # its consumer stopped while it waited
                    continue
                work = sub.work
                if not work.active or self.partitions.get(work.index) is not work:
                    _settle(sub.done, LostPartition(f"partition {work.index} is no longer held"))
                    continue
                ready.append(sub)
            if ready:
                with self.handle_seconds.time():
                    await self._evaluate(ready)

    async def _evaluate(self, ready: list[Submitted]) -> None:
        engine = self.engine
        started = time.time_ns()
        items: list[tuple[MetricBatch, int]] = []
        received = []
        owners: list[tuple[Submitted, Delivery[MetricBatch]]] = []
        for sub in ready:
            sub.work.hosts.update(d.event.host for d in sub.deliveries)
            for d in sub.deliveries:
                items.append((d.event, d.seq))
                received.append(d.stored_at)
                owners.append((sub, d))
        before = engine.samples_seen
        try:
            found = engine.process_many(items, received)
        except Exception as exc:
            for sub in ready:
                _settle(sub.done, exc)
            raise
        for sub in ready:
            sub.work.max_seq = max(sub.work.max_seq, sub.deliveries[-1].seq)
        self.samples.inc(engine.samples_seen - before)
        self.batches.inc(len(items))
        by_set: dict[int, list[tuple[IssueChange, Delivery[MetricBatch]]]] = {}
        for index, event in found:
            sub, delivery = owners[index]
            by_set.setdefault(id(sub), []).append((event, delivery))
        publishing = []
        for sub in ready:
            if (events := by_set.get(id(sub))) is None:
                _settle(sub.done)
            else:
                publishing.append(self._publish_found(sub, events, started))
        if publishing:
            await asyncio.gather(*publishing)
            self._update_gauges()

    async def _publish_found(
        self,
        sub: Submitted,
        found: list[tuple[IssueChange, Delivery[MetricBatch]]],
        started: int,
    ) -> None:
        """Publish what a set showed, each event under a span continuing the trace of the
        batch that caused it, then save its hosts. A batch that shows nothing gets no
        span of its own: a span per batch would cost as much as its evaluation."""
        work = sub.work
        spans: dict[int, trace.Span] = {}
        try:
            work.check()
            by_issue: dict[str, list[tuple[IssueChange, trace.Span]]] = {}
            for event, delivery in found:
                if (span := spans.get(delivery.seq)) is None:
                    span = spans[delivery.seq] = delivery.span("detector.evaluate", started)
                by_issue.setdefault(event.fingerprint, []).append((event, span))
            # One issue's events in order; different issues concurrently.
            await asyncio.gather(*(self.publish_all(e) for e in by_issue.values()))
            # Persist right away: a restart then never re-derives these events.
            await self.flush(work, {event.host for event, _ in found})
        except BaseException as exc:
            # The engine is ahead of what was published (and saved): it must not be
            # saved now. The partition is given up and restored afresh, and the
            # replay derives the events again (those that went out are dropped
            # as repeats).
            work.lost = True
            if isinstance(exc, asyncio.CancelledError):  # the service is stopping
                _settle(sub.done, LostPartition("evaluation was interrupted"))
                raise
            _settle(sub.done, exc)
        else:
            _settle(sub.done)
        finally:
            for span in spans.values():
                span.end()

    # -- snapshots ----------------------------------------------------------------------

    async def flush(self, work: Partition, hosts: set[str] | None = None) -> None:
        """Write snapshots of the partition's changed hosts (all of them, or just
        ``hosts``); after a full flush, also the watermark they complete. The caller
        holds ``work.evaluating``."""
        async with work.writing:
            await self._save(work, self._take_snapshots(work, hosts), full=hosts is None)

    async def flush_all(self) -> None:
        """Save every partition's changed hosts. Never while a batch is being evaluated:
        its events may not be published yet, and a snapshot that holds what they say
        would keep a restart from deriving them again if their publishing fails. The
        snapshots are taken between evaluations and written after: the evaluations
        of every partition wait for none of the writes."""
        for work in list(self.partitions.values()):
            if work.ready and work.active and self.partitions.get(work.index) is work:
                try:
                    async with work.evaluating:  # always before work.writing
                        await work.writing.acquire()
                        try:
                            taken = self._take_snapshots(work, None)
                        except BaseException:
                            work.writing.release()
                            raise
                    try:
                        await self._save(work, taken, full=True)
                    finally:
                        work.writing.release()
                except LostPartition as exc:
                    log.warning("partition %d: %s", work.index, exc)

    def _take_snapshots(self, work: Partition, hosts: set[str] | None) -> Snapshots:
        work.check()
        engine = self.engine
        names = engine.dirty & (work.hosts if hosts is None else hosts & work.hosts)
        snaps = [export_host(engine, h) for h in names]
        engine.dirty -= names
        return Snapshots(names, snaps, work.max_seq)

    async def _save(self, work: Partition, taken: Snapshots, full: bool) -> None:
        """Write ``taken`` (and with ``full``, its watermark), holding ``work.writing``."""
        try:
            await asyncio.gather(*(work.store.save_host(snap) for snap in taken.snaps))
            if full:
                await work.store.save_watermark(taken.watermark)
        except LostPartition:
            work.lost = True
            raise
        except Exception:
            self.engine.dirty |= taken.hosts  # written again next time
            raise

    async def snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval_seconds)
            try:
                await self.flush_all()
            except Exception:
                if current_task_cancelling():
                    raise
                log.exception("snapshot failed; will retry")

    # -- silence ------------------------------------------------------------------------

    async def silence_loop(self) -> None:
        """Every ``silence.check_seconds``, look for hosts whose metrics stopped."""
        js = jetstream(self.rt.broker)
        while True:
            await asyncio.sleep(self.config.silence.check_seconds)
            for work in list(self.partitions.values()):
                try:
                    await self.check_silence(js, work)
                except Exception as exc:
                    if current_task_cancelling():
                        raise
                    # the engine starts a new window after checks it missed
                    log.warning("silence check of partition %d skipped: %r", work.index, exc)

    async def check_silence(self, js: JetStreamContext, work: Partition) -> None:
        """Judge a partition's hosts only when this replica has every batch published to
        it: while it is behind, a quiet host may just be waiting in its backlog."""
        if not work.ready or not work.active:
            return
        info = await js.consumer_info(METRICS.name, detector_partition(work.index).name)
        if info.num_pending:
            return
        async with work.evaluating:
            work.check()
            found = self.engine.check_silence(utc_now(), work.hosts, work.clock)
            for done, event in enumerate(found):
                try:
                    await self.publish(event)
                except Exception:
                    for unsent in found[done:]:
                        self.engine.withdraw_silence(unsent.host)
                    raise
            if found:
                await self.flush(work, {event.host for event in found})
                self._update_gauges()

    def _update_gauges(self) -> None:
        self.open_issues.set(sum(h.open_issues() for h in self.engine.hosts.values()))

    def _update_held(self) -> None:
        works = list(self.partitions.values())
        self.held.set(len(works))
        self.rt.info["partitions"] = sorted(w.index for w in works if w.ready)


def _settle(done: asyncio.Future[None], exc: BaseException | None = None) -> None:
    """Tell a set's consumer how its set went, unless it stopped waiting (cancelled)."""
    if done.done():
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


async def stored(
    js: JetStreamContext, subject: str, start_seq: int, end: int
) -> AsyncIterator[list[Msg]]:
    """The messages stored on ``subject`` from ``start_seq`` through ``end``, in batches.

    An ephemeral consumer that acknowledges nothing; it ends as soon as nothing more is
    pending, and waits out slow fetches (a busy cluster) rather than stopping early."""
    if start_seq > end:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start_seq, 1),
        inactive_threshold=60.0,
    )
    sub = await js.pull_subscribe(subject, stream=METRICS.name, config=config)
    try:
        pending = (await sub.consumer_info()).num_pending
        while pending:
            try:
                msgs = await sub.fetch(512, timeout=5)
            except TimeoutError:  # nats-py raises its own or the built-in one
                if current_task_cancelling():  # a cancel nats-py's fetch turned into this
                    raise asyncio.CancelledError from None
                pending = (await sub.consumer_info()).num_pending
                continue
            kept = [m for m in msgs if m.metadata.sequence.stream <= end]
            if kept:
                yield kept
            if len(kept) < len(msgs) or msgs[-1].metadata.sequence.stream >= end:
                return
            pending = msgs[-1].metadata.num_pending
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
