"""Signed callback data: genuine buttons verify; anything altered, forged or late does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from medbay.approver.callbacks import (
    MAX_BYTES,
    CallbackExpired,
    CallbackSigner,
    InvalidCallback,
    to_base36,
)

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(minutes=15)
PLAN_ID = "0123456789abcdef0123456789abcdef"
SIGNER = CallbackSigner("a secret of sixteen+ chars")


def test_a_genuine_button_verifies_and_fits_telegrams_limit():
    for choice in ("approve", "reject"):
        data = SIGNER.sign(PLAN_ID, choice, DEADLINE)
        assert len(data.encode()) <= MAX_BYTES
        signed = SIGNER.verify(data, NOW)
        assert (signed.plan_id, signed.choice, signed.deadline) == (PLAN_ID, choice, DEADLINE)


def test_the_format_is_readable():
    data = SIGNER.sign(PLAN_ID, "approve", DEADLINE)
    version, plan_id, letter, deadline, mac = data.split(":")
    assert (version, plan_id, letter) == ("m1", PLAN_ID, "a")
    assert int(deadline, 36) == int(DEADLINE.timestamp())
    assert len(mac) == 16


def swap(data: str, index: int, value: str) -> str:
    parts = data.split(":")
    parts[index] = value
    return ":".join(parts)


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda d: swap(d, 1, "f" * 32), id="other plan id"),
        pytest.param(lambda d: swap(d, 2, "r"), id="other decision"),
        pytest.param(lambda d: swap(d, 3, to_base36(int(DEADLINE.timestamp()) + 3600)), id="later"),
        pytest.param(lambda d: d[:-1] + ("A" if d[-1] != "A" else "B"), id="bad MAC"),
        pytest.param(lambda d: d[:-1], id="MAC too short"),
        pytest.param(lambda d: d + "A", id="MAC too long"),
        pytest.param(lambda d: d + "x" * 10, id="over 64 bytes"),
        pytest.param(lambda d: "m2" + d[2:], id="other version"),
        pytest.param(lambda d: d.replace(":", "", 1), id="missing separator"),
        pytest.param(lambda d: "", id="empty"),
        pytest.param(lambda d: "approve", id="not ours"),
    ],
)
def test_altered_or_forged_data_is_rejected(alter):
    data = SIGNER.sign(PLAN_ID, "approve", DEADLINE)
    with pytest.raises(InvalidCallback) as caught:
        SIGNER.verify(alter(data), NOW)
    assert not isinstance(caught.value, CallbackExpired)


def test_another_secret_does_not_verify():
    data = CallbackSigner("another secret, also long").sign(PLAN_ID, "approve", DEADLINE)
    with pytest.raises(InvalidCallback, match="bad MAC"):
        SIGNER.verify(data, NOW)


def test_a_genuine_button_expires_at_its_deadline():
    data = SIGNER.sign(PLAN_ID, "reject", DEADLINE)
    SIGNER.verify(data, DEADLINE - timedelta(seconds=1))
    with pytest.raises(CallbackExpired):
        SIGNER.verify(data, DEADLINE)


def test_plan_ids_that_do_not_fit_get_no_buttons():
    assert SIGNER.fits("a" * 35, DEADLINE)
    assert len(SIGNER.sign("a" * 35, "reject", DEADLINE)) == MAX_BYTES
    assert not SIGNER.fits("a" * 36, DEADLINE)
    assert not SIGNER.fits("has:colon", DEADLINE)
    with pytest.raises(ValueError):
        SIGNER.sign("a" * 36, "approve", DEADLINE)
