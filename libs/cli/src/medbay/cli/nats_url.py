"""Where the CLI finds NATS: ``MEDBAY_NATS_URL`` or the embedded server's default."""

from __future__ import annotations

import asyncio
import os

import nats
from nats.aio.client import Client

DEFAULT_URL = "nats://127.0.0.1:4222"


def nats_url() -> str:
    return os.environ.get("MEDBAY_NATS_URL", DEFAULT_URL)


async def connect() -> Client:
    url = nats_url()

    async def quiet(_: Exception) -> None:
        """Connection errors are reported once, below, not as tracebacks."""

    try:
        return await asyncio.wait_for(
            nats.connect(
                url.split(","),
                connect_timeout=3,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=quiet,
            ),
            timeout=5,
        )
    except Exception as exc:
        raise SystemExit(
            f"medbay: cannot reach NATS at {url} ({exc.__class__.__name__}). "
            "Is Medbay up? Start it with `medbay up`, or set MEDBAY_NATS_URL."
        ) from None
