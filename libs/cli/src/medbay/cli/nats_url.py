"""Where and as whom the CLI reaches NATS.

``MEDBAY_NATS_URL`` (default the embedded server's), and the credentials of
``medbay.common.settings.BusSettings`` (``MEDBAY_NATS_USER`` and its password).
Without any, the CLI uses the ``cli`` identity that ``medbay up`` made under
``.medbay/nats/`` in the current directory, if there is one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from nats.aio.client import Client

from medbay.common.access import CLI
from medbay.common.settings import BusSettings, ConfigError, load_bus_settings

DEFAULT_URL = "nats://127.0.0.1:4222"
LOCAL_CREDENTIALS = Path(".medbay/nats") / f"{CLI}.password"
"""Where `medbay up` (with its default --data-dir) keeps the CLI's password."""


def settings() -> BusSettings:
    try:
        found = load_bus_settings()
    except ConfigError as exc:
        raise SystemExit(f"medbay: {exc}") from None
    if found.nats_user is None and found.password() is None and LOCAL_CREDENTIALS.exists():
        found = found.model_copy(
            update={"nats_user": CLI, "nats_password_file": LOCAL_CREDENTIALS.resolve()}
        )
    return found


def nats_url() -> str:
    """The server's URL, safe to print (no password)."""
    return settings().safe_nats_url()


async def connect() -> Client:
    found = settings()
    url = found.safe_nats_url()

    async def quiet(_: Exception) -> None:
        """Connection errors are reported once, below, not as tracebacks."""

    try:
        options = found.connect_options()
    except ConfigError as exc:
        raise SystemExit(f"medbay: {exc}") from None
    try:
        return await asyncio.wait_for(
            nats.connect(
                found.servers,
                connect_timeout=3,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=quiet,
                **options,
            ),
            timeout=5,
        )
    except Exception as exc:
        text = str(exc) or exc.__class__.__name__
        if "authorization" in text.lower():
            who = f"as {found.nats_user!r}" if found.nats_user else "without credentials"
            raise SystemExit(
                f"medbay: NATS at {url} refused the connection {who} ({text}). Run the "
                "command where `medbay up` runs (it keeps the CLI's password in "
                f"{LOCAL_CREDENTIALS}), or set MEDBAY_NATS_USER=cli and "
                "MEDBAY_NATS_PASSWORD_FILE (see `medbay auth init`)."
            ) from None
        raise SystemExit(
            f"medbay: cannot reach NATS at {url} ({text}). "
            "Is Medbay up? Start it with `medbay up`, or set MEDBAY_NATS_URL."
        ) from None
