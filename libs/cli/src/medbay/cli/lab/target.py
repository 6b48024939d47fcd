"""A service for the lab to break: ``python -m medbay.cli.lab.target --name lab-web --port P``.

A small HTTP service, as real as any other process: the collector checks it,
the executor restarts it. It names itself (the kernel's ``comm``, what ``ps``
and the collector's process list show) after ``--name``, so issues about it and
executor targets can name it. Faults a real service has are asked of it over
HTTP, by the lab only (it listens on 127.0.0.1):

- ``POST /fault/spin``: threads spin forever on every core (busy loops outside the GIL);
- ``POST /fault/leak?mb=N``: N MiB more memory held, and touched;
- ``POST /fault/flood?mb=N``: N MiB of log lines written to ``--log`` at once.

With ``--crash-flag FILE``, while FILE exists, it serves for ``--crash-after``
seconds after each start and then dies (status 1): a service in a crash loop,
which every restart seems to fix for a while.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PR_SET_NAME = 15
MiB = 1024 * 1024
SPINNING_THREADS = 4 * (os.cpu_count() or 2)
"""A runaway process with four busy threads a core. On an idle machine it takes every
core, as two would; on a machine busy with other work (a CI runner with a load of 10 on
2 cores), the scheduler shares the cores by runnable thread, and two threads there got
less than the half core the lab's detection rule looks for, for minutes; eight get
most of a core."""
_held: list[bytearray] = []


def set_process_name(name: str) -> None:
    """Set the kernel's name of this process (at most 15 bytes), as ``ps`` shows it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def spin(raise_priority: bool) -> None:
    """Busy-loop on a core, outside the GIL (hashing a large block releases it), so that
    spinning threads can take every core. With ``raise_priority`` the thread asks for
    a higher priority (where allowed: root or CAP_SYS_NICE), so that it takes a whole
    core on a busy machine too, as the runaway process it stands for would; only one
    thread asks, so the other cores stay shared with the rest of the machine."""
    if raise_priority:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
    block = bytes(MiB)
    digest = hashlib.sha256()
    while True:
        digest.update(block)


def leak(mb: int) -> None:
    for _ in range(mb):
        block = bytearray(MiB)
        for i in range(0, MiB, 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        _held.append(block)


def flood(log: Path, mb: int) -> None:
    line = b"%.6f WARN request failed: upstream timeout, retrying (attempt 1 of 3)\n"
    chunk = b"".join(line % (time.time() + i) for i in range(12_000))
    written = 0
    while written < mb * MiB:
        with open(log, "ab") as out:  # opened per write, as a rotating logger does
            out.write(chunk)
        written += len(chunk)


class Handler(BaseHTTPRequestHandler):
    log_file: Path | None = None

    def do_GET(self) -> None:
        self._answer(200, b"ok\n")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        mb = int(parse_qs(url.query).get("mb", ["100"])[0])
        if url.path == "/fault/spin":
            for n in range(SPINNING_THREADS):
                threading.Thread(target=spin, args=(n == 0,), daemon=True).start()
        elif url.path == "/fault/leak":
            leak(mb)
        elif url.path == "/fault/flood" and self.log_file is not None:
            flood(self.log_file, mb)
        else:
            self._answer(404, b"no such fault\n")
            return
        self._answer(200, b"done\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--crash-flag", type=Path)
    parser.add_argument("--crash-after", type=float, default=6.0)
    args = parser.parse_args()
    set_process_name(args.name)
    if args.crash_flag is not None and args.crash_flag.exists():
        threading.Timer(args.crash_after, os._exit, (1,)).start()
    Handler.log_file = args.log
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
