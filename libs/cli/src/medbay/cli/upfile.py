"""``<data-dir>/up.json``: what a running ``medbay up`` serves, for the other commands.

``medbay up`` writes it (mode 0600) once NATS is ready and removes it when it
stops: the NATS URL it serves, the directory of the NATS credentials, the
gateway's URL, its own pid and the port of each service's /healthz. Every other
``medbay`` command that talks to NATS reads ``./.medbay/up.json`` when
``MEDBAY_NATS_URL`` is unset, so ``medbay up --port 4310`` and ``medbay status`` in
the same directory agree.
A file whose ``medbay up`` is no longer running is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

NAME = "up.json"
LOCAL = Path(".medbay") / NAME
"""Where the commands look: the default data directory, in the current directory."""


@dataclass(frozen=True)
class UpInfo:
    nats_url: str
    credentials: Path | None
    gateway_url: str
    pid: int
    http_ports: dict[str, int] = field(default_factory=dict)
    """Each service's /healthz and /metrics port (empty: the defaults)."""


def write(data_dir: Path, info: UpInfo) -> Path:
    from medbay.cli.auth import write_private

    path = data_dir / NAME
    body = {
        "nats_url": info.nats_url,
        "credentials": str(info.credentials) if info.credentials is not None else None,
        "gateway_url": info.gateway_url,
        "pid": info.pid,
        "http_ports": info.http_ports,
    }
    write_private(path, json.dumps(body, indent=2) + "\n")
    return path


def remove(data_dir: Path, pid: int) -> None:
    """Remove ``up.json`` if it is still the one ``pid`` wrote."""
    path = data_dir / NAME
    found = read(path, check_alive=False)
    if found is not None and found.pid == pid:
        path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(path: Path = LOCAL, *, check_alive: bool = True) -> UpInfo | None:
    """What ``path`` says, or None: no such file, unreadable, or its ``medbay up`` is gone."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        credentials = body.get("credentials")
        info = UpInfo(
            nats_url=str(body["nats_url"]),
            credentials=Path(credentials) if credentials else None,
            gateway_url=str(body.get("gateway_url", "")),
            pid=int(body["pid"]),
            http_ports={str(k): int(v) for k, v in body.get("http_ports", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if check_alive and not alive(info.pid):
        return None
    return info
