"""``medbay plans``, ``medbay approve PLAN_ID``, ``medbay reject PLAN_ID``.

``medbay plans`` shows where each plan stands (pending, approved, running) and, for
a plan that is over, how it ended: its outcome in the plan book (verified,
not_fixed, failed, refused, dry_run, alerted, interrupted, rejected, expired; see
``medbay.common.events.PlanOutcome``) and the executor's note on why.

Approving publishes an ``Approval`` (channel ``cli``) that the executor acts on,
exactly as the Telegram approver and the gateway do. The executor decides each
plan once: a plan that is already decided says so and nothing changes. A plan
id that is neither in the executor's plan book nor among the last
``RECENT_PLANS`` plans on PLANS is refused (a typo), unless ``--force`` says it
is a plan still on its way.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

    from medbay.common.records import PlanRecord

RECENT_PLANS = 10_000
"""How many of the latest PLANS messages a decision looks through for an unknown id."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plans", help="plans the executor knows: where each stands, or how it ended")
    p.add_argument("--all", action="store_true", help="include plans that are over")
    p.set_defaults(func=lambda a: asyncio.run(list_plans(a)))
    for decision in ("approve", "reject"):
        d = sub.add_parser(decision, help=f"{decision} a plan that awaits approval")
        d.add_argument("plan_id")
        d.add_argument("--by", default=None, help="who decides (default: user@host)")
        d.add_argument("--reason", default="", help="why, for the audit trail")
        d.add_argument(
            "--force",
            action="store_true",
            help="decide even if the plan is not known yet (a plan still on its way)",
        )
        d.set_defaults(func=lambda a, decision=decision: asyncio.run(decide(a, decision)))


async def open_book(nc: Client) -> KeyValue:
    """The executor's plan book, read-only."""
    from nats.js.errors import NotFoundError

    from medbay.common.records import PLAN_BOOK

    try:
        return await nc.jetstream().key_value(PLAN_BOOK.name)
    except NotFoundError:
        raise SystemExit("medbay: no executor has run yet (no plan records)") from None


async def list_plans(args: argparse.Namespace) -> int:
    from medbay.cli.nats_url import connect
    from medbay.common.records import read_plans

    nc = await connect()
    try:
        records = await read_plans(await open_book(nc))
    finally:
        await nc.close()
    shown = 0
    for plan_id, record in sorted(records.items(), key=lambda kv: kv[1].decided_at):
        if is_over(record) and not args.all:
            continue
        print(plan_line(plan_id, record))
        shown += 1
    if not shown:
        print("no plans" + ("" if args.all else " waiting or running (--all shows finished ones)"))
    return 0


def is_over(record: PlanRecord) -> bool:
    return record.outcome is not None or record.state in ("done", "rejected")


def plan_line(plan_id: str, record: PlanRecord) -> str:
    """Id, where it stands or how it ended, who decided, the plan, the executor's note."""
    plan = record.parsed_plan()
    what = (
        "(plan not seen yet)"
        if plan is None
        else f"{plan.issue_kind} on {plan.host}: "
        + ", then ".join(f"{s.action} {s.target}" for s in plan.steps)
        + f" (confidence {plan.confidence:.2f}, risk {plan.risk.value})"
    )
    who = f" by {record.decided_by}" if record.decided_by else ""
    note = record.note.strip().splitlines()[0] if record.note.strip() else ""
    return f"{plan_id}  {record.outcome or record.state:<11}{who}  {what}" + (
        f" | {note}" if note else ""
    )


async def recently_planned(nc: Client, plan_id: str, last: int = RECENT_PLANS) -> bool:
    """Whether a plan with this id is among the ``last`` messages of PLANS."""
    from nats.js.errors import NotFoundError

    from medbay.common.reading import read
    from medbay.common.streams import PLANS

    needle = json.dumps(plan_id).encode()
    try:
        async for batch in read(nc.jetstream(), PLANS, last=last):
            for msg in batch:
                if needle not in msg.data:  # cheap test before parsing
                    continue
                try:
                    body = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(body, dict) and body.get("plan_id") == plan_id:
                    return True
    except NotFoundError:
        return False
    return False


async def decide(args: argparse.Namespace, decision: str) -> int:
    from medbay.cli.nats_url import connect
    from medbay.common.bus import event_headers
    from medbay.common.events import Approval
    from medbay.common.records import read_plan
    from medbay.common.streams import APPROVALS, approval_subject

    nc = await connect()
    try:
        record, _ = await read_plan(await open_book(nc), args.plan_id)
        if record is not None and record.state != "pending":
            who = f" by {record.decided_by}" if record.decided_by else ""
            print(f"plan {args.plan_id} is already {record.state}{who}; nothing changed")
            return 1
        if record is None and not args.force and not await recently_planned(nc, args.plan_id):
            raise SystemExit(
                f"medbay {decision}: no plan {args.plan_id!r}: it is not in the executor's "
                f"plan book nor among the last {RECENT_PLANS:,} plans on PLANS. "
                "`medbay plans --all` lists the known ones; --force decides it anyway "
                "(for a plan still on its way)."
            )
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
