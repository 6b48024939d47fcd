"""The lab test's ``medbay lab`` run, as a process of its own.

It mostly waits on real faults, so tests/conftest.py starts it as the session
starts (when the lab test is selected) and the rest of the suite runs meanwhile;
the test, moved last, only waits for it and checks its report. What is still
running when the session ends is stopped, and the temp directory removed.

With test workers (pytest-xdist), the process that runs the session starts the
lab once and tells every worker its directory; the worker that gets the test
waits there for the exit status that the starting process records.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

QUIET = "120s"
"""The quiet period before the faults (the 30-minute soak, `medbay lab --quiet 30m`,
is the long one). It costs the suite nothing: the lab runs beside the rest."""
TIMEOUT = 1800.0
PR_SET_PDEATHSIG = 1


def lab_argv(report: Path, data_dir: Path) -> list[str]:
    argv = [sys.executable, "-m", "medbay.cli.main", "lab", "--rounds", "1", "--seed", "11"]
    return [*argv, "--quiet-period", QUIET, "--json", str(report), "--data-dir", str(data_dir)]


@dataclass(frozen=True)
class LabRun:
    root: Path
    """The temp directory holding the rest; it is also the lab's data directory."""
    proc: subprocess.Popen[bytes] | None = None
    """None in a test worker: the process that runs the session started the lab."""

    @property
    def report(self) -> Path:
        return self.root / "lab.json"

    @property
    def data_dir(self) -> Path:
        return self.root

    @property
    def stdout_path(self) -> Path:
        return self.root / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.root / "stderr.log"

    @property
    def returncode_path(self) -> Path:
        return self.root / "returncode"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """The lab's exit status, once it has ended."""
        if self.proc is not None:
            return self.proc.wait(timeout)
        if not self.stdout_path.exists():
            raise AssertionError(f"no lab was started in {self.root}")
        deadline = time.monotonic() + timeout
        while not self.returncode_path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the lab in {self.root} did not end in {timeout:.0f} s")
            time.sleep(1)
        return int(self.returncode_path.read_text())

    def record_returncode(self) -> None:
        """Write the exit status to ``returncode`` when the lab ends (for the workers)."""
        proc = self.proc
        assert proc is not None

        def record() -> None:
            partial = self.root / "returncode.partial"
            partial.write_text(str(proc.wait()))
            partial.replace(self.returncode_path)

        threading.Thread(target=record, name="lab-returncode", daemon=True).start()

    def stop(self) -> None:
        """Stop the lab if it still runs (SIGTERM: it tears its sandbox down; SIGKILL
        after 30 s: its processes die with it), then remove the temp directory. A
        worker's view of a run started elsewhere leaves both alone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def stopped_with_the_suite() -> None:
    """In the lab's process: get SIGTERM when the process that started it (pytest's
    main thread) ends, however it ends, so that no lab outlives the suite."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def lab_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="medbay-lab-"))


def start_lab(root: Path | None = None) -> LabRun:
    run = LabRun(root or lab_root())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDBAY_", "OTEL_"))}
    with open(run.stdout_path, "wb") as out, open(run.stderr_path, "wb") as err:
        proc = subprocess.Popen(
            lab_argv(run.report, run.data_dir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
            preexec_fn=stopped_with_the_suite,  # prctl only: safe beside threads
        )
    return LabRun(run.root, proc)


LAB_RUN = pytest.StashKey[LabRun]()
"""Where tests/conftest.py keeps the run it started (or, in a worker, the one it was told of)."""
