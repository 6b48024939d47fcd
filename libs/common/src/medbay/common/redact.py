"""Secrets out of command lines before they go into a step's output or a log.

A value is hidden (``***``) when it follows a name that says it is secret:
``--password=x``, ``--password x``, ``PGPASSWORD=x``, ``token=x`` in a query
string or a DSN, ``"api_key": "x"``, ``X-Auth-Token: x``; the password of a URL
(``scheme://user:***@host``); and a bearer token (``Authorization: Bearer ***``).

Short options are left alone: ``-p`` is a port to ssh, redis-cli and docker,
and a password only to a few tools (``mysql -pSECRET``, which no option parser
could tell from a bundle of short flags). Put such secrets in the target's
``env`` or in a file instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

HIDDEN = "***"

SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "credential",
)
"""A name containing one of these names a secret: db_password, clientSecret, X-Api-Key."""

SECRET_WORDS = frozenset({"auth", "authorization", "pwd", "pass"})
"""A name with one of these as a whole word names a secret: basic-auth, DB_PASS (not author)."""

OPTION = re.compile(r"-{1,2}[A-Za-z][\w.-]*")
"""An option given alone, whose value is the next element: ``--password``."""

ASSIGNMENT = re.compile(r"(-{0,2}[A-Za-z_][\w.-]*=)(.*)", re.DOTALL)
"""An element that is one assignment, ``--password=x`` or ``PGPASSWORD=x``: value and all."""

URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s]*@")

PAIR = re.compile(
    r"""(?P<key>[A-Za-z_][\w.-]*)
        (?P<sep>["']?\s*(?:=|:(?!//))\s*["']?)
        (?P<scheme>(?:bearer|basic|token|digest)\s+)?
        (?P<value>[^\s"'&;,]+)""",
    re.IGNORECASE | re.VERBOSE,
)
"""``key=value`` or ``key: value`` inside a text (a DSN, a query string, a header, JSON)."""

BEARER = re.compile(r"\b(bearer\s+)[^\s\"']+", re.IGNORECASE)


def secret_name(name: str) -> bool:
    """Whether an option, variable or field name says its value is a secret."""
    words = name.lower().lstrip("-").replace("-", "_").replace(".", "_")
    return any(part in words for part in SECRET_PARTS) or not SECRET_WORDS.isdisjoint(
        words.split("_")
    )


def redact_text(text: str) -> str:
    """The text with URL passwords, bearer tokens and values of secret names hidden."""
    text = URL_PASSWORD.sub(rf"\1:{HIDDEN}@", text)
    out = []
    pos = 0
    while (pair := PAIR.search(text, pos)) is not None:
        if secret_name(pair["key"]):
            out.append(text[pos : pair.start("value")] + HIDDEN)
            pos = pair.end()
        else:  # its value may itself hold a pair (--opt=token=x): look there too
            out.append(text[pos : pair.end("sep")])
            pos = pair.end("sep")
    out.append(text[pos:])
    return BEARER.sub(rf"\1{HIDDEN}", "".join(out))


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The argv with the values of secret options and the secrets inside arguments hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        assignment = ASSIGNMENT.fullmatch(arg)
        if hide_next and not arg.startswith("--"):
            out.append(HIDDEN)
        elif assignment is not None and secret_name(assignment[1].rstrip("=")):
            out.append(assignment[1] + HIDDEN)
        else:
            out.append(redact_text(arg))
        hide_next = OPTION.fullmatch(arg) is not None and secret_name(arg)
    return out
