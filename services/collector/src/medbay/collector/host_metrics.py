"""Host metrics from psutil: CPU, load, memory, disks, network, top processes."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

from medbay.collector.samples import BYTES, BYTES_PER_SECOND, PERCENT, sample
from medbay.common.events import MetricSample

_SKIPPED_DISKS = ("loop", "ram", "zram")


@dataclass
class _Reading:
    at: float
    cpu_percent: float  # the average since the previous call
    disks: dict[str, Any]
    nics: dict[str, Any]


class HostMetrics:
    """Reads the host; keeps the previous reading so it can report rates and deltas.

    The first reading has no CPU percentages, rates or deltas: all need two points.
    """

    def __init__(self, top_processes: int = 5) -> None:
        self.top_processes = top_processes
        self._previous: _Reading | None = None

    def read(self) -> list[MetricSample]:
        reading = _Reading(
            at=time.monotonic(),
            cpu_percent=psutil.cpu_percent(interval=None),
            disks=psutil.disk_io_counters(perdisk=True) or {},
            nics=psutil.net_io_counters(pernic=True) or {},
        )
        samples = [*self._load(), *self._memory(), *self._filesystems()]
        if self._previous is not None:
            samples += self._rates(self._previous, reading)
        samples += self._processes(with_cpu=self._previous is not None)
        self._previous = reading
        return samples

    def _load(self) -> list[MetricSample]:
        load1, load5, load15 = psutil.getloadavg()
        return [
            sample("load1", load1),
            sample("load5", load5),
            sample("load15", load15),
        ]

    def _memory(self) -> list[MetricSample]:
        mem = psutil.virtual_memory()
        return [
            sample("memory_percent", mem.percent, PERCENT),
            sample("memory_used_bytes", mem.used, BYTES),
            sample("memory_available_bytes", mem.available, BYTES),
            sample("swap_percent", psutil.swap_memory().percent, PERCENT),
        ]

    def _filesystems(self) -> list[MetricSample]:
        samples: list[MetricSample] = []
        for mount in mountpoints():
            try:
                usage = psutil.disk_usage(mount)
                stat = os.statvfs(mount)
            except OSError:  # unmounted meanwhile, or not readable
                continue
            samples += [
                sample("disk_percent", usage.percent, PERCENT, mount=mount),
                sample("disk_used_bytes", usage.used, BYTES, mount=mount),
            ]
            if stat.f_files > 0:
                used = 100.0 * (stat.f_files - stat.f_ffree) / stat.f_files
                samples.append(sample("disk_inodes_percent", used, PERCENT, mount=mount))
        return samples

    def _rates(self, before: _Reading, now: _Reading) -> list[MetricSample]:
        elapsed = now.at - before.at
        if elapsed <= 0:
            return []
        samples = [sample("cpu_percent", now.cpu_percent, PERCENT)]

        def rate(name: str, delta: float, **labels: str) -> None:
            if delta >= 0:  # a counter that went back (device re-added) has no rate
                samples.append(sample(name, delta / elapsed, BYTES_PER_SECOND, **labels))

        for device, io in now.disks.items():
            old = before.disks.get(device)
            if old is None or device.startswith(_SKIPPED_DISKS):
                continue
            rate("disk_read_bytes_per_second", io.read_bytes - old.read_bytes, device=device)
            rate("disk_write_bytes_per_second", io.write_bytes - old.write_bytes, device=device)
        for nic, io in now.nics.items():
            old = before.nics.get(nic)
            if old is None:
                continue
            rate("net_recv_bytes_per_second", io.bytes_recv - old.bytes_recv, interface=nic)
            rate("net_sent_bytes_per_second", io.bytes_sent - old.bytes_sent, interface=nic)
            errors = io.errin + io.errout - old.errin - old.errout
            drops = io.dropin + io.dropout - old.dropin - old.dropout
            if errors >= 0:
                samples.append(sample("net_errors", errors, interface=nic))
            if drops >= 0:
                samples.append(sample("net_drops", drops, interface=nic))
        return samples

    def _processes(self, *, with_cpu: bool) -> list[MetricSample]:
        # process_iter caches Process objects, so cpu_percent is the use since the last call.
        procs = [
            p.info for p in psutil.process_iter(["pid", "name", "cpu_percent", "memory_percent"])
        ]
        samples = [sample("process_count", len(procs))]
        n = self.top_processes
        if with_cpu:
            by_cpu = sorted(
                (p for p in procs if p["cpu_percent"] is not None),
                key=lambda p: p["cpu_percent"],
                reverse=True,
            )
            samples += [_process_sample(p, "cpu") for p in by_cpu[:n]]
        by_memory = sorted(
            (p for p in procs if p["memory_percent"] is not None),
            key=lambda p: p["memory_percent"],
            reverse=True,
        )
        samples += [_process_sample(p, "memory") for p in by_memory[:n]]
        return samples


def _process_sample(info: dict[str, Any], rank_by: str) -> MetricSample:
    return sample(
        f"process_{rank_by}_percent",
        info[f"{rank_by}_percent"],
        PERCENT,
        pid=str(info["pid"]),
        name=info["name"] or "?",
        rank_by=rank_by,
    )


def mountpoints() -> list[str]:
    """Real filesystems, each once: a device mounted at several places counts once.

    "/" is always included, even when its filesystem type (overlay in a container,
    zfs) is one psutil does not list as a physical device.
    """
    seen_devices: set[str] = set()
    mounts = ["/"]
    for part in sorted(psutil.disk_partitions(all=False), key=lambda p: len(p.mountpoint)):
        if part.device not in seen_devices and part.mountpoint not in mounts:
            mounts.append(part.mountpoint)
        seen_devices.add(part.device)
    return mounts
