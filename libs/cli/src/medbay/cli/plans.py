"""``medbay plans``, ``medbay approve PLAN_ID``, ``medbay reject PLAN_ID``.

Approving publishes an ``Approval`` (channel ``cli``) that the executor acts on,
exactly as the Telegram approver and the gateway do. The executor decides each
plan once: a plan that is already decided says so and nothing changes.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket

from nats.aio.client import Client
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from medbay.cli.nats_url import connect
from medbay.common.bus import event_headers
from medbay.common.events import Approval
from medbay.common.records import PLAN_BOOK, read_plan, read_plans
from medbay.common.streams import APPROVALS, approval_subject


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plans", help="plans the executor knows, and where each stands")
    p.add_argument("--all", action="store_true", help="include finished plans")
    p.set_defaults(func=lambda a: asyncio.run(list_plans(a)))
    for decision in ("approve", "reject"):
        d = sub.add_parser(decision, help=f"{decision} a plan that awaits approval")
        d.add_argument("plan_id")
        d.add_argument("--by", default=None, help="who decides (default: user@host)")
        d.add_argument("--reason", default="", help="why, for the audit trail")
        d.set_defaults(func=lambda a, decision=decision: asyncio.run(decide(a, decision)))


async def open_book(nc: Client) -> KeyValue:
    """The executor's plan book, read-only."""
    try:
        return await nc.jetstream().key_value(PLAN_BOOK.name)
    except NotFoundError:
        raise SystemExit("medbay: no executor has run yet (no plan records)") from None


async def list_plans(args: argparse.Namespace) -> int:
    nc = await connect()
    try:
        records = await read_plans(await open_book(nc))
    finally:
        await nc.close()
    shown = 0
    for plan_id, record in sorted(records.items(), key=lambda kv: kv[1].decided_at):
        if record.state == "done" and not args.all:
            continue
        plan = record.parsed_plan()
        what = (
            "(plan not seen yet)"
            if plan is None
            else f"{plan.issue_kind} on {plan.host}: "
            + ", then ".join(f"{s.action} {s.target}" for s in plan.steps)
            + f" (confidence {plan.confidence:.2f}, risk {plan.risk.value})"
        )
        who = f" by {record.decided_by}" if record.decided_by else ""
        print(f"{plan_id}  {record.state:<9}{who}  {what}")
        shown += 1
    if not shown:
        print("no plans" + ("" if args.all else " waiting or running (--all shows finished ones)"))
    return 0


async def decide(args: argparse.Namespace, decision: str) -> int:
    nc = await connect()
    try:
        record, _ = await read_plan(await open_book(nc), args.plan_id)
        if record is not None and record.state != "pending":
            who = f" by {record.decided_by}" if record.decided_by else ""
            print(f"plan {args.plan_id} is already {record.state}{who}; nothing changed")
            return 1
        approval = Approval(
            plan_id=args.plan_id,
            decision="approve" if decision == "approve" else "reject",
            decided_by=args.by or f"{getpass.getuser()}@{socket.gethostname()}",
            channel="cli",
            reason=args.reason,
        )
        await nc.jetstream().publish(
            approval_subject(approval),
            approval.model_dump_json().encode(),
            headers=event_headers(approval),
            stream=APPROVALS.name,
            timeout=5,
        )
    finally:
        await nc.close()
    note = "" if record is not None else " (the executor has not seen this plan yet)"
    done = "approved" if decision == "approve" else "rejected"
    print(f"{done} plan {args.plan_id} as {approval.decided_by}{note}")
    return 0
