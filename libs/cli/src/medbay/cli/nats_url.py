"""Where and as whom the CLI reaches NATS.

``MEDBAY_NATS_URL`` if set; else the server a ``medbay up`` in this directory
serves (``./.medbay/up.json``, see ``medbay.cli.upfile``); else the embedded
server's default. As whom: the credentials of
``medbay.common.settings.BusSettings`` (``MEDBAY_NATS_USER`` and its password),
or without any, the ``cli`` identity that ``medbay up`` made (in the directory
``up.json`` names, or ``.medbay/nats/`` here).

Every command says once, on stderr, which server it talks to (not with ``-q``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medbay.cli import upfile
from medbay.cli.output import note

if TYPE_CHECKING:
    from nats.aio.client import Client

    from medbay.common.settings import BusSettings

DEFAULT_URL = "nats://127.0.0.1:4222"
CLI = "cli"  # = medbay.common.access.CLI (a test keeps them equal)
LOCAL_CREDENTIALS = Path(".medbay/nats") / f"{CLI}.password"
"""Where `medbay up` (with its default --data-dir) keeps the CLI's password."""


@dataclass(frozen=True)
class Target:
    settings: BusSettings
    source: str
    """Where the URL came from: ``MEDBAY_NATS_URL``, ``from .medbay/up.json``, ``default``."""

    @property
    def url(self) -> str:
        """The server's URL, safe to print (no password)."""
        return self.settings.safe_nats_url()


def target() -> Target:
    from medbay.common.settings import ConfigError, load_bus_settings

    try:
        found = load_bus_settings()
    except ConfigError as exc:
        raise SystemExit(f"medbay: {exc}") from None
    credentials = LOCAL_CREDENTIALS
    if os.environ.get("MEDBAY_NATS_URL", "").strip():
        source = "MEDBAY_NATS_URL"
    else:
        up = upfile.read()
        if up is not None:
            found = found.model_copy(update={"nats_url": up.nats_url})
            source = f"from {upfile.LOCAL}"
            if up.credentials is not None:
                credentials = up.credentials / f"{CLI}.password"
        else:
            found = found.model_copy(update={"nats_url": DEFAULT_URL})
            if upfile.LOCAL.exists():
                source = f"default; {upfile.LOCAL} is stale: its medbay up has stopped"
            else:
                source = f"default; no MEDBAY_NATS_URL and no {upfile.LOCAL} here"
    if found.nats_user is None and found.password() is None and credentials.exists():
        found = found.model_copy(
            update={"nats_user": CLI, "nats_password_file": credentials.resolve()}
        )
    return Target(found, source)


def settings() -> BusSettings:
    return target().settings


def nats_url() -> str:
    """The server's URL, safe to print (no password)."""
    return target().url


async def connect(*, announce: bool = True) -> Client:
    """Connect as the CLI; say which server on stderr unless ``announce`` is False."""
    import nats

    from medbay.common.settings import ConfigError

    where = target()
    found, url = where.settings, where.url
    if announce:
        note(f"NATS {url} ({where.source})")

    async def quiet(_: Exception) -> None:
        """Connection errors are reported once, below, not as tracebacks."""

    try:
        options = found.connect_options()
    except ConfigError as exc:
        raise SystemExit(f"medbay: {exc}") from None
    try:
        async with asyncio.timeout(5):
            return await nats.connect(
                found.servers,
                connect_timeout=3,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=quiet,
                **options,
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
            f"medbay: cannot reach NATS at {url} ({where.source}: {text}). "
            "Is Medbay up? Start it with `medbay up`, or set MEDBAY_NATS_URL."
        ) from None
