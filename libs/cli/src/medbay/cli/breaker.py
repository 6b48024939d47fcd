"""``medbay breaker list`` and ``medbay breaker reset TARGET``.

A breaker opens when one target needed too many fixes in a short time (see the
executor's flap protection); until a person resets it, the executor refuses
steps on that target and alerts a human instead. Resetting publishes a
``BreakerReset`` on AUDIT, which the executor applies (only it writes its rails);
the command waits a few seconds to see it done.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client

    from medbay.common.records import BreakerState

APPLY_WAIT_SECONDS = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("breaker", help="list or reset the executor's flap breakers")
    actions = p.add_subparsers(dest="breaker_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="open breakers").set_defaults(
        func=lambda a: asyncio.run(list_breakers())
    )
    reset = actions.add_parser("reset", help="close the breaker of TARGET")
    reset.add_argument("target")
    reset.add_argument("--by", default=None, help="who resets it (default: user@host)")
    reset.set_defaults(func=lambda a: asyncio.run(reset_breaker(a)))


async def breakers(nc: Client) -> dict[str, BreakerState]:
    from nats.js.errors import NotFoundError

    from medbay.common.records import EXECUTOR_RAILS, open_breakers

    try:
        kv = await nc.jetstream().key_value(EXECUTOR_RAILS.name)
    except NotFoundError:
        return {}  # no executor has run yet
    return await open_breakers(kv)


async def list_breakers() -> int:
    from medbay.cli.nats_url import connect

    nc = await connect()
    try:
        found = await breakers(nc)
    finally:
        await nc.close()
    if not found:
        print("no open breakers")
    for target, state in sorted(found.items()):
        print(f"{target}: open since {state.opened_at.isoformat()}: {state.reason}")
    return 0


async def reset_breaker(args: argparse.Namespace) -> int:
    from medbay.cli.nats_url import connect
    from medbay.common.bus import event_headers
    from medbay.common.events import BreakerReset
    from medbay.common.streams import AUDIT, subject_for

    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    nc = await connect()
    try:
        if args.target not in await breakers(nc):
            print(f"no open breaker for {args.target}")
            return 1
        event = BreakerReset(target=args.target, reset_by=by, channel="cli")
        await nc.jetstream().publish(
            subject_for(event),
            event.model_dump_json().encode(),
            headers=event_headers(event),
            stream=AUDIT.name,
            timeout=5,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLY_WAIT_SECONDS
        while args.target in await breakers(nc):
            if loop.time() > deadline:
                print(
                    f"asked the executor to reset the breaker for {args.target} (by {by}); "
                    f"it has not done so within {APPLY_WAIT_SECONDS:g} s: is it running?"
                )
                return 1
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    print(f"breaker for {args.target} reset by {by}")
    return 0
