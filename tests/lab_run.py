"""The lab test's ``medbay lab`` run, as a process of its own.

It mostly waits on real faults, so tests/conftest.py starts it as the session
starts (when the lab test is selected) and the rest of the suite runs meanwhile;
the test, moved last, only waits for it and checks its report. What is still
running when the session ends is stopped, and the temp directory removed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
    proc: subprocess.Popen[bytes]
    root: Path
    """The temp directory holding the rest."""
    report: Path
    data_dir: Path
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the lab if it still runs (SIGTERM: it tears its sandbox down; SIGKILL
        after 30 s: its processes die with it), then remove the temp directory."""
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


def start_lab() -> LabRun:
    root = Path(tempfile.mkdtemp(prefix="medbay-lab-"))
    report, stdout_path, stderr_path = root / "lab.json", root / "stdout.log", root / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDBAY_", "OTEL_"))}
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            lab_argv(report, root),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
            preexec_fn=stopped_with_the_suite,  # prctl only: safe beside threads
        )
    return LabRun(proc, root, report, root, stdout_path, stderr_path)


LAB_RUN = pytest.StashKey[LabRun]()
"""Where tests/conftest.py keeps the run it started."""
