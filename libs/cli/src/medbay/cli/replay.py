"""``medbay replay``: recorded events again, for debugging.

``--print`` shows them; ``--to PREFIX`` re-publishes each one, unchanged and with
its headers, on ``PREFIX.<original subject>`` (plain NATS, outside every stream;
the subject it was published on, for METRICS without the partition it is stored under),
so a debugging subscriber can watch a past incident unfold without touching
the live pipeline. The prefix may not start with ``medbay``.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch

from medbay.cli.names import STREAM_NAMES

PREFIX = "medbay"  # = medbay.common.streams.PREFIX


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="print or re-publish recorded events of a time range")
    p.add_argument("--stream", required=True, help=f"one of {', '.join(STREAM_NAMES)}")
    p.add_argument("--since", required=True, help="start: 10m, 2h, 1d, or an ISO time")
    p.add_argument("--until", help="end (default: now)")
    p.add_argument("--subject", help="only subjects matching this NATS pattern")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="PREFIX", help="re-publish under PREFIX.<subject>")
    where.add_argument("--print", action="store_true", help="print one line per event")
    p.set_defaults(func=run)


def subject_matches(subject: str, pattern: str) -> bool:
    """NATS wildcard match: ``*`` is one token, ``>`` the rest."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, w in enumerate(wanted):
        if w == ">":
            return len(tokens) > i
        if i >= len(tokens) or (w != "*" and not fnmatch.fnmatchcase(tokens[i], w)):
            return False
    return len(tokens) == len(wanted)


async def replay(args: argparse.Namespace) -> int:
    from medbay.cli.eventlog import parse_range, read_range, select, summarize
    from medbay.cli.nats_url import connect
    from medbay.cli.output import OutputClosed, emit

    try:
        if args.stream.upper() not in STREAM_NAMES:
            raise ValueError(f"unknown stream {args.stream!r}; one of {', '.join(STREAM_NAMES)}")
        selection = select(args.stream)
        since, until = parse_range(args.since, args.until)
        prefix = (args.to or "").strip(".")
        if args.to is not None and (
            not prefix or prefix.split(".")[0] == PREFIX or any(c in prefix for c in "*> ")
        ):
            raise ValueError(f"--to {args.to!r}: use a plain prefix that is not {PREFIX!r}")
    except ValueError as exc:
        raise SystemExit(f"medbay replay: {exc}") from None
    from medbay.common.streams import published_subject

    nc = await connect()
    count = 0
    try:
        async for msg in read_range(nc.jetstream(), selection, since=since, until=until):
            subject = published_subject(msg.subject)
            if args.subject and not (
                subject_matches(subject, args.subject) or subject_matches(msg.subject, args.subject)
            ):
                continue
            if args.print:
                emit(summarize(msg))
            else:
                headers = {
                    k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")
                }
                await nc.publish(f"{prefix}.{subject}", msg.data, headers=headers or None)
            count += 1
        await nc.flush()
        target = "printed" if args.print else f"re-published under {prefix}."
        emit(f"{count} events {target}")
    except OutputClosed:
        return 0
    finally:
        await nc.close()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(replay(args))
    except KeyboardInterrupt:
        return 130
