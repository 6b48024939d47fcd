"""The planner's records under a change of active replica, on a real nats-server: each
is written by compare-and-swap, so a deposed planner cannot overwrite its successor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.js import JetStreamContext

from conftest import NatsServer
from medbay.common.active import NotActive
from medbay.planner.store import CURRENT_MODEL, SUCCESS_RATES, ModelStore, read_success_rates


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


def answers(*values: bool) -> Iterator[bool]:
    """What ``may_write`` says, one call after the other (the last one from then on)."""
    yield from values
    while True:
        yield values[-1]


async def test_a_deposed_planner_cannot_overwrite_what_its_successor_wrote(
    js: JetStreamContext,
) -> None:
    old_active = answers(True, True, False)
    old = await ModelStore.open(js, may_write=lambda: next(old_active))
    await old.track()
    await old.save_rates({"tries": 1})  # active: written

    new = await ModelStore.open(js)  # the successor takes over and writes
    await new.track()
    await new.save_rates({"tries": 2})

    # The old one still believed it was active when it set out to write; its write
    # finds the successor's revision, and by then it knows it is not active.
    with pytest.raises(NotActive):
        await old.save_rates({"tries": 1, "late": 1})
    assert await read_success_rates(js) == {"tries": 2}
    with pytest.raises(NotActive):  # and it writes nothing more
        await old.save_rates({"tries": 3})
    assert await read_success_rates(js) == {"tries": 2}
    entry = await new.kv.get(SUCCESS_RATES)
    await new.save_rates({"tries": 4})  # the successor goes on over its own revisions
    assert (await new.kv.get(SUCCESS_RATES)).revision == (entry.revision or 0) + 1


async def test_the_active_planner_overwrites_a_write_that_crossed_the_takeover(
    js: JetStreamContext,
) -> None:
    new = await ModelStore.open(js)
    await new.track()  # takes over; nothing written yet
    old = await ModelStore.open(js)  # the deposed one, whose write lands just after
    await old.kv.put(CURRENT_MODEL, b"rf-old")
    await old.kv.put(SUCCESS_RATES, b'{"tries": 1}')
    await new.save_rates({"tries": 2})
    await new.record_judged_initial_model("rf-lab-1")
    assert await read_success_rates(js) == {"tries": 2}
    assert await new.judged_initial_model() == "rf-lab-1"


async def test_a_planner_that_is_not_active_writes_nothing(js: JetStreamContext) -> None:
    store = await ModelStore.open(js, may_write=lambda: False)
    with pytest.raises(NotActive):
        await store.save_rates({"tries": 1})
    with pytest.raises(NotActive):
        await store.record_judged_initial_model("rf-lab-1")
    assert await read_success_rates(js) is None
    assert await store.current_version() is None
