"""Signed ``callback_data`` for the Approve and Reject buttons.

Telegram returns a button's data unchanged, but a client can send a callback
query with any data it likes, so the data carries a MAC::

    m1:<plan_id>:<a|r>:<deadline>:<mac>

- ``m1``: the format (version 1);
- ``plan_id``: as is (letters, digits, ``_`` and ``-``; the planner's are 32 hex chars);
- ``a`` approve or ``r`` reject;
- ``deadline``: when the approval expires, Unix seconds in base 36 (6 chars until 2038);
- ``mac``: HMAC-SHA256, keyed with the configured secret, over everything before
  it (``m1:<plan_id>:<a|r>:<deadline>``), truncated to its first 12 bytes (96 bits)
  and written in base64url without padding (16 chars).

With a 32-char plan id that is 61 bytes, within Telegram's 64-byte limit; plan ids
longer than 35 chars do not fit and get no buttons (see ``CallbackSigner.fits``).

Forgery resistance: HMAC-SHA256 truncated to t bits leaves an attacker without the
secret nothing better than guessing the tag, right with probability 2^-t per try
(here 2^-96). Guesses can only be tried online, one callback query each through
Telegram, and each failure is logged: even a million tries a second for a century
(about 2^51.5) would succeed with probability about 2^-44. Changing any field (another
plan, the other decision, a later deadline) needs a new tag, which is as hard as a
fresh forgery. Replaying a genuine button only repeats the decision it was made for,
which the decision book records once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Choice = Literal["approve", "reject"]

VERSION = "m1"
MAX_BYTES = 64
"""Telegram's limit on callback_data."""
MAC_BYTES = 12
MAC_CHARS = 16
"""``MAC_BYTES`` in base64url, unpadded."""

_LETTER: dict[Choice, str] = {"approve": "a", "reject": "r"}
_CHOICE: dict[str, Choice] = {letter: choice for choice, letter in _LETTER.items()}
_PLAN_ID = re.compile(r"[A-Za-z0-9_-]+")
_BASE36 = re.compile(r"[0-9a-z]{1,13}")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class InvalidCallback(ValueError):
    """The data is not a button this approver made (malformed, altered or forged)."""


class CallbackExpired(InvalidCallback):
    """A genuine button whose approval has expired."""


@dataclass(frozen=True)
class SignedChoice:
    plan_id: str
    choice: Choice
    deadline: datetime


def to_base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


def deadline_seconds(deadline: datetime) -> int:
    return math.ceil(deadline.timestamp())


class CallbackSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:MAC_BYTES]).decode().rstrip("=")

    @staticmethod
    def _payload(plan_id: str, choice: Choice, deadline: datetime) -> str:
        return f"{VERSION}:{plan_id}:{_LETTER[choice]}:{to_base36(deadline_seconds(deadline))}"

    def fits(self, plan_id: str, deadline: datetime) -> bool:
        """Whether buttons for this plan fit Telegram's limit."""
        if not _PLAN_ID.fullmatch(plan_id):
            return False
        return len(self._payload(plan_id, "approve", deadline)) + 1 + MAC_CHARS <= MAX_BYTES

    def sign(self, plan_id: str, choice: Choice, deadline: datetime) -> str:
        if not self.fits(plan_id, deadline):
            raise ValueError(f"plan id {plan_id!r} does not fit in callback data")
        payload = self._payload(plan_id, choice, deadline)
        return f"{payload}:{self._mac(payload)}"

    def verify(self, data: str, now: datetime) -> SignedChoice:
        """The choice ``data`` stands for; raises ``InvalidCallback`` or ``CallbackExpired``."""
        if len(data.encode()) > MAX_BYTES:
            raise InvalidCallback("longer than 64 bytes")
        payload, _, mac = data.rpartition(":")
        parts = payload.split(":")
        if len(parts) != 4 or parts[0] != VERSION:
            raise InvalidCallback("not an approval button")
        if len(mac) != MAC_CHARS:
            raise InvalidCallback("MAC of the wrong length")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise InvalidCallback("bad MAC")
        _, plan_id, letter, deadline_text = parts
        # Signed by us, so well-formed; checked all the same rather than trusted.
        if (
            letter not in _CHOICE
            or not _PLAN_ID.fullmatch(plan_id)
            or not _BASE36.fullmatch(deadline_text)
        ):
            raise InvalidCallback("malformed fields")
        deadline = datetime.fromtimestamp(int(deadline_text, 36), UTC)
        if now >= deadline:
            raise CallbackExpired(f"expired at {deadline.isoformat()}")
        return SignedChoice(plan_id, _CHOICE[letter], deadline)
