"""Bearer tokens and roles: ``viewer`` reads, ``operator`` also changes things."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from medbay.gateway.config import Role, TokenConfig

ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1}
ANONYMOUS = "anonymous"


class Unauthorized(Exception):
    """No token, or one nobody was given."""


class Forbidden(Exception):
    """A known token whose role does not allow this."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenBook:
    """Finds who a token belongs to without revealing, by timing, how close a guess was:
    the guess's digest is compared with every known digest, each in constant time."""

    def __init__(self, tokens: list[TokenConfig], allow_anonymous_viewer: bool = False) -> None:
        self._known = [(_digest(t.secret), Principal(t.name, t.role)) for t in tokens]
        self.allow_anonymous_viewer = allow_anonymous_viewer

    def identify(self, token: str | None) -> Principal:
        if not token:
            if self.allow_anonymous_viewer:
                return Principal(ANONYMOUS, "viewer")
            raise Unauthorized("a bearer token is required")
        guess = _digest(token)
        found = None
        for digest, principal in self._known:
            if hmac.compare_digest(digest, guess):
                found = principal
        if found is None:
            raise Unauthorized("unknown token")
        return found

    def authorize(self, token: str | None, role: Role) -> Principal:
        principal = self.identify(token)
        if not principal.may(role) and not token:  # anonymous: a token would help
            raise Unauthorized(f"a bearer token with the {role} role is required")
        if not principal.may(role):
            raise Forbidden(f"{principal.name} is a {principal.role}; this needs the {role} role")
        return principal
