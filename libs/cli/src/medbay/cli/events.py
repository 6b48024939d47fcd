"""``medbay events tail``: recorded and live events, one readable line (or JSON object) each."""

from __future__ import annotations

import argparse
import asyncio
import sys

from medbay.cli.names import STREAM_NAMES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="look at events on the bus")
    events = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    tail = events.add_parser(
        "tail",
        help="print events, then follow new ones",
        description=f"Print events of a stream ({', '.join(STREAM_NAMES)}: all it holds) or "
        "subject pattern (medbay.alerts.>: only those), one readable line each with its trace "
        "id, or one JSON object each with --json.",
    )
    tail.add_argument("target", nargs="?", help="stream name or subject (default: ISSUES)")
    tail.add_argument(
        "--since",
        help="start this far back: 10m, 2h, 1d, or an ISO time (default: all, or "
        "only new events when following)",
    )
    tail.add_argument("--until", help="stop at this time (implies --no-follow)")
    tail.add_argument("--no-follow", action="store_true", help="print what is recorded, then exit")
    tail.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: the event plus subject, stream, seq and trace_id",
    )
    tail.set_defaults(func=run)


async def tail(args: argparse.Namespace) -> int:
    from medbay.cli.eventlog import (
        as_json,
        parse_range,
        read_range,
        select,
        show_time,
        summarize,
    )
    from medbay.cli.nats_url import connect
    from medbay.cli.output import OutputClosed, emit

    try:
        selection = select(args.target)
        since, until = parse_range(args.since, args.until)
    except ValueError as exc:
        raise SystemExit(f"medbay events tail: {exc}") from None
    show = as_json if args.json else summarize
    follow = not args.no_follow and until is None
    nc = await connect()
    count = 0
    try:
        async for msg in read_range(
            nc.jetstream(), selection, since=since, until=until, follow=follow
        ):
            emit(show(msg))
            count += 1
    except OutputClosed:
        return 0
    finally:
        await nc.close()
    if not count:
        start = show_time(since) if since else "it began"
        end = f" until {show_time(until)}" if until else ""
        print(f"medbay: no events on {selection.describe()} since {start}{end}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0
