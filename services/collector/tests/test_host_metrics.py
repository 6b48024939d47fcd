from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from medbay.collector.host_metrics import HostMetrics, mountpoints

ALWAYS = {
    "load1",
    "load5",
    "load15",
    "memory_percent",
    "memory_used_bytes",
    "memory_available_bytes",
    "swap_percent",
    "disk_percent",
    "disk_used_bytes",
    "disk_inodes_percent",
    "process_count",
    "process_memory_percent",
}
SECOND_ONLY = {
    "cpu_percent",
    "disk_read_bytes_per_second",
    "disk_write_bytes_per_second",
    "net_recv_bytes_per_second",
    "net_sent_bytes_per_second",
    "net_errors",
    "net_drops",
    "process_cpu_percent",
}


def values(samples: list[dict[str, Any]], name: str) -> list[float]:
    return [s["value"] for s in samples if s["name"] == name]


def test_two_readings(as_dicts: Callable[..., list[dict[str, Any]]]) -> None:
    host = HostMetrics(top_processes=3)
    first = as_dicts(host.read())
    time.sleep(0.2)
    second = as_dicts(host.read())

    first_names = {s["name"] for s in first}
    assert first_names >= ALWAYS
    assert not first_names & SECOND_ONLY  # rates need two readings
    assert {s["name"] for s in second} >= ALWAYS | SECOND_ONLY

    [cpu] = values(second, "cpu_percent")
    assert 0 <= cpu <= 100
    assert 0 <= values(second, "memory_percent")[0] <= 100
    assert values(second, "memory_available_bytes")[0] > 0
    assert values(second, "process_count")[0] > 1
    root = [s for s in second if s["name"] == "disk_percent" and s["labels"]["mount"] == "/"]
    assert len(root) == 1 and 0 < root[0]["value"] <= 100
    for name in SECOND_ONLY - {"cpu_percent", "process_cpu_percent"}:
        assert all(v >= 0 for v in values(second, name)), name
    assert {s["labels"]["interface"] for s in second if s["name"] == "net_errors"} >= {"lo"}

    for metric in ("process_cpu_percent", "process_memory_percent"):
        top = [s for s in second if s["name"] == metric]
        assert 0 < len(top) <= 3
        assert all(set(s["labels"]) == {"pid", "name", "command"} for s in top)
        assert all(s["labels"]["pid"].isdigit() and s["labels"]["name"] for s in top)
        assert all(s["labels"]["command"] for s in top)
        ranked = [s["value"] for s in top]
        assert ranked == sorted(ranked, reverse=True)


SPINNER = "hold = b'x' * 2**26; print('ready', flush=True)\nwhile True: pass"
"""Spins on one core, holding 64 MiB so that it ranks by memory too."""


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[str]]:
    """A process that spins on one core, with a password and a long argument in its
    command line."""
    argv = [sys.executable, "-c", SPINNER, "--password=hunter2", "--note=" + "n" * 300]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_top_processes_name_the_process_and_its_command(
    spinner: subprocess.Popen[str], as_dicts: Callable[..., list[dict[str, Any]]]
) -> None:
    host = HostMetrics(top_processes=100)  # the most allowed: the spinner is surely among them
    host.read()
    time.sleep(1)
    samples = as_dicts(host.read())
    for metric in ("process_cpu_percent", "process_memory_percent"):
        top = [s for s in samples if s["name"] == metric]
        assert len(top) <= 100
        [mine] = [s for s in top if s["labels"]["pid"] == str(spinner.pid)]
        assert mine["unit"] == "%" and mine["value"] > 0
        assert mine["labels"]["name"] == psutil.Process(spinner.pid).name()
        command = mine["labels"]["command"]
        # one line: the newline of the program is a space
        assert command.startswith(f"{sys.executable} -c hold = b'x' * 2**26; print(")
        assert "flush=True) while True: pass --password=*** --note=nnn" in command
        assert "hunter2" not in command
        assert len(command) == 200


def test_mounts_are_listed_once() -> None:
    mounts = mountpoints()
    assert mounts[0] == "/"
    assert len(mounts) == len(set(mounts))
