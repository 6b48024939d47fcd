"""`medbay bench security` against a real `medbay up`: every attack is refused.

`medbay up` runs on free ports (NATS, services, gateway, demo-web), so this runs beside
any other Medbay on the machine; the bench finds them in the data directory's up.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medbay.cli.bench import load
from tests.helpers import free_port


def in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.mark.timeout(480)
def test_every_attack_on_a_running_medbay_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    data_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBAY_")}
    log_path = tmp_path / "up.log"
    up = [sys.executable, "-m", "medbay.cli.main", "up", "--port", str(port)]
    any_free = ["--service-ports", "0", "--gateway-port", "0", "--demo-port", "0"]
    with open(log_path, "wb") as log:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(
            [*up, *any_free, "--otlp-port", str(free_port()), "--data-dir", str(data_dir)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        ports: dict[str, int] = {}
        while not ports or not all(healthy(p) for p in ports.values()):
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(1)
            if (data_dir / "up.json").exists():
                ports = json.loads((data_dir / "up.json").read_text())["http_ports"]

        args = argparse.Namespace(  # where NATS and the gateway are: from up.json
            data_dir=data_dir, nats_url=None, gateway_url=None, results_dir=tmp_path / "results"
        )
        code = load("security").main(args)
        out = capsys.readouterr().out
        print(out)
        lines = [x for x in out.splitlines() if re.match(r"\s*\d+\. ", x)]
        assert len(lines) == 18, out
        assert all(" refused " in x for x in lines), out
        assert "18 attacks: 18 refused, 0 accepted" in out, out
        assert code == 0, out
        for p in ports.values():  # nothing broke
            assert healthy(p), p
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    output = log_path.read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    assert "Medbay stopped." in output
    assert not in_use(port)  # the embedded server is gone
