"""``medbay breaker list`` and ``medbay breaker reset TARGET``.

A breaker opens when one target needed too many fixes in a short time (see the
executor's flap protection); until a person resets it, the executor refuses
steps on that target and alerts a human instead.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket

from medbay.cli.nats_url import connect
from medbay.common.bus import event_headers
from medbay.common.events import BreakerReset
from medbay.common.streams import AUDIT, subject_for
from medbay.executor.safety import SafetyConfig, SafetyRails


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


async def list_breakers() -> int:
    nc = await connect()
    try:
        rails = await SafetyRails.open(nc.jetstream(), SafetyConfig())
        breakers = await rails.breakers()
    finally:
        await nc.close()
    if not breakers:
        print("no open breakers")
    for target, state in sorted(breakers.items()):
        print(f"{target}: open since {state.opened_at.isoformat()}: {state.reason}")
    return 0


async def reset_breaker(args: argparse.Namespace) -> int:
    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    nc = await connect()
    try:
        rails = await SafetyRails.open(nc.jetstream(), SafetyConfig())
        was_open = await rails.reset_breaker(args.target, by=by)
        if was_open:  # on the record, like every change a person makes
            event = BreakerReset(target=args.target, reset_by=by, channel="cli")
            await nc.jetstream().publish(
                subject_for(event),
                event.model_dump_json().encode(),
                headers=event_headers(event),
                stream=AUDIT.name,
                timeout=5,
            )
    finally:
        await nc.close()
    if not was_open:
        print(f"no open breaker for {args.target}")
        return 1
    print(f"breaker for {args.target} reset by {by}")
    return 0
