"""Which replica owns which METRICS partition, and who a replica is (no NATS)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from medbay.detector.partitions import assign, holder_name, replica_id

P = 16


def members(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"detector-{rng.randrange(10**6)}" for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 16, 20])
def test_every_partition_has_one_owner_and_loads_differ_by_one_at_most(n: int):
    live = members(n)
    owners = assign(P, live)
    assert sorted(owners) == list(range(P))
    assert set(owners.values()) <= set(live)
    loads = Counter(owners.values())
    held = [loads.get(m, 0) for m in live]
    assert max(held) - min(held) <= 1
    assert max(held) == -(-P // n)


def test_every_replica_computes_the_same_assignment_whatever_order_it_lists_members_in():
    live = members(5)
    shuffled = live[:]
    random.Random(1).shuffle(shuffled)
    assert assign(P, live) == assign(P, shuffled) == assign(P, [*live, live[0]])


def test_no_members_no_owners():
    assert assign(P, []) == {}


@pytest.mark.parametrize("seed", range(20))
def test_a_member_joining_or_leaving_moves_little_besides_its_share(seed: int):
    live = members(4, seed)
    before = assign(P, live[:3])
    after = assign(P, live)
    moved = [p for p in range(P) if before[p] != after[p]]
    joined = [p for p in range(P) if after[p] == live[3]]
    assert len(joined) == P // 4
    # the newcomer's share, and a few more to even out the loads
    assert len(moved) <= 2 * len(joined)
    gone = assign(P, live[1:])
    left = [p for p in range(P) if after[p] == live[0]]
    assert len([p for p in range(P) if gone[p] != after[p]]) <= 2 * len(left)


def test_partitions_of_a_dead_member_go_to_the_others():
    live = members(3)
    owners = assign(P, live[1:])
    assert set(owners.values()) == set(live[1:])


def test_the_replica_id_comes_from_the_config_then_the_environment():
    env = {"MEDBAY_REPLICA_ID": "from-env", "POD_NAME": "detector-7f9c-x2"}
    assert replica_id("configured", env) == "configured"
    assert replica_id(None, env) == "from-env"
    assert replica_id(None, {"POD_NAME": "detector-7f9c-x2"}) == "detector-7f9c-x2"
    made = replica_id(None, {})
    assert made != replica_id(None, {})  # random: two unnamed replicas never collide
    with pytest.raises(ValueError, match="letters, digits"):
        replica_id(None, {"MEDBAY_REPLICA_ID": "a.b"})


def test_a_holder_names_its_replica_and_is_unique_per_process_start():
    first, second = holder_name("a"), holder_name("a")
    assert first.startswith("a/") and first != second
