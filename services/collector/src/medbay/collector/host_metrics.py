"""Host metrics from psutil: CPU, load, memory, disks, network, top processes."""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

from medbay.collector.samples import BYTES, BYTES_PER_SECOND, PERCENT, sample
from medbay.common.events import MetricSample
from medbay.common.redact import redact_argv

_SKIPPED_DISKS = ("loop", "ram", "zram")
MAX_COMMAND_CHARS = 200


@dataclass
class _Reading:
    at: float
    cpu_percent: float  # the average since the previous call
    disks: dict[str, Any]
    nics: dict[str, Any]


class HostMetrics:
    """Reads the host; keeps the previous reading so it can report rates and deltas.

    The first reading has no CPU percentages, rates or deltas: all need two points.
    ``process_cpu_percent`` is per core, as psutil gives it: 100 is one core's
    worth, and a process busy on several cores goes above 100.
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
        procs = list(psutil.process_iter(["name", "cpu_percent", "memory_percent"]))
        samples = [sample("process_count", len(procs))]
        top: list[tuple[str, psutil.Process]] = []
        if with_cpu:
            top += [("cpu_percent", p) for p in _largest(procs, "cpu_percent", self.top_processes)]
        top += [
            ("memory_percent", p) for p in _largest(procs, "memory_percent", self.top_processes)
        ]
        commands: dict[int, str | None] = {}
        for attr, proc in top:
            if proc.pid not in commands:
                commands[proc.pid] = _command(proc)
            command = commands[proc.pid]
            if command is None:  # gone since: nothing left to report
                continue
            samples.append(
                sample(
                    f"process_{attr}",
                    proc.info[attr],
                    PERCENT,
                    pid=str(proc.pid),
                    name=proc.info["name"] or "?",
                    command=command,
                )
            )
        return samples


def _largest(procs: list[psutil.Process], attr: str, n: int) -> list[psutil.Process]:
    known = (p for p in procs if p.info[attr] is not None)
    return heapq.nlargest(n, known, key=lambda p: float(p.info[attr]))


def _command(proc: psutil.Process) -> str | None:
    """The command line on one line, secrets hidden, cut to ``MAX_COMMAND_CHARS``;
    None if the process has exited.

    Read for the top processes only: one more file each, not one for every process.
    """
    try:
        argv = proc.cmdline()
    except psutil.NoSuchProcess:  # zombies too: nothing runs any more
        return None
    except psutil.AccessDenied:
        argv = []
    if not argv:  # a kernel thread, or not ours to read: shown as ps does
        return f"[{proc.info['name'] or '?'}]"
    return " ".join(" ".join(redact_argv(argv)).split())[:MAX_COMMAND_CHARS]


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
