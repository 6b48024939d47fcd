"""Which detector replica should own which METRICS partition, and who a replica is.

Plain Python: the leases that make an assignment true are in ``ownership``.

``assign`` spreads ``partitions`` over the live members by rendezvous hashing
with bounded loads: every (member, partition) pair has a score from a stable
hash, pairs are taken best score first, and a member takes a partition only
while it holds fewer than its share (``partitions // members``, one more for the
first ``partitions % members`` members to fill up). Every replica computes the
same answer from the same member list, loads differ by one at most, and a member
joining or leaving moves few partitions besides its own share.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping

REPLICA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A replica id is one KV key token (``member.<id>``)."""


def score(member: str, partition: int) -> int:
    """The rendezvous score of ``member`` for ``partition``: the same in every process."""
    digest = hashlib.blake2b(f"{member}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """The owner of each of ``partitions`` among ``members`` (empty if there are none)."""
    live = sorted(set(members))
    if not live or partitions <= 0:
        return {}
    share, extra = divmod(partitions, len(live))
    pairs = sorted(
        ((score(m, p), m, p) for m in live for p in range(partitions)),
        key=lambda pair: (-pair[0], pair[1], pair[2]),
    )
    owner: dict[int, str] = {}
    load = dict.fromkeys(live, 0)
    full = 0  # members holding share + 1
    for _, member, partition in pairs:
        if partition in owner:
            continue
        held = load[member]
        if held < share or (held == share and full < extra):
            owner[partition] = member
            load[member] = held + 1
            full += held == share
            if len(owner) == partitions:
                break
    return owner


def replica_id(configured: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """This replica's id: from the config, else ``MEDBAY_REPLICA_ID``, else ``POD_NAME``
    (a pod's name, given by the Kubernetes downward API), else this host's name and a
    random part. A stable id keeps a restarted replica's partitions its own."""
    for candidate in (configured, environ.get("MEDBAY_REPLICA_ID"), environ.get("POD_NAME")):
        if candidate:
            if not REPLICA_ID.fullmatch(candidate):
                raise ValueError(
                    f"replica id {candidate!r}: use 1 to 64 letters, digits, '_' and '-'"
                )
            return candidate
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:48] or "detector"
    return f"{host}-{secrets.token_hex(4)}"


def holder_name(replica: str) -> str:
    """The lease holder this process writes: its replica id, pid and a random part, so a
    restarted process never adopts a lease of the one before it (nor does a second
    process given the same id by mistake)."""
    return f"{replica}/{os.getpid()}/{secrets.token_hex(3)}"
