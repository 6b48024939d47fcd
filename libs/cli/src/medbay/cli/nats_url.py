"""Where the CLI finds NATS: ``MEDBAY_NATS_URL`` or the embedded server's default."""

from __future__ import annotations

import os

import nats
from nats.aio.client import Client

DEFAULT_URL = "nats://127.0.0.1:4222"


def nats_url() -> str:
    return os.environ.get("MEDBAY_NATS_URL", DEFAULT_URL)


async def connect() -> Client:
    url = nats_url()
    try:
        return await nats.connect(
            url.split(","), connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False
        )
    except Exception as exc:
        raise SystemExit(
            f"medbay: cannot reach NATS at {url} ({exc.__class__.__name__}). "
            "Is Medbay up? Start it with `medbay up`, or set MEDBAY_NATS_URL."
        ) from None
