"""``medbay events tail``: recorded and live events, one readable line each."""

from __future__ import annotations

import argparse
import asyncio

from medbay.cli.eventlog import parse_time, read_range, select, summarize
from medbay.cli.nats_url import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="look at events on the bus")
    events = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    tail = events.add_parser(
        "tail",
        help="print events, then follow new ones",
        description="Print events of a stream (METRICS, ISSUES, PLANS, APPROVALS, RESULTS, "
        "DEADLETTER) or subject pattern, one line each with its trace id.",
    )
    tail.add_argument("target", nargs="?", help="stream name or subject (default: ISSUES)")
    tail.add_argument("--since", help="start this far back: 10m, 2h, 1d, or an ISO time")
    tail.add_argument("--no-follow", action="store_true", help="print what is recorded, then exit")
    tail.set_defaults(func=run)


async def tail(args: argparse.Namespace) -> int:
    try:
        selection = select(args.target)
        since = parse_time(args.since) if args.since else None
    except ValueError as exc:
        raise SystemExit(f"medbay events tail: {exc}") from None
    nc = await connect()
    try:
        follow = not args.no_follow
        async for msg in read_range(nc.jetstream(), selection, since=since, follow=follow):
            print(summarize(msg), flush=True)
    finally:
        await nc.close()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0
