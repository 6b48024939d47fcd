"""What the CLI prints and where: ``-q``, notes on stderr, and readers that go away.

A reader that goes away (``medbay events tail | head -2``) is not an error: the
command stops, closes its NATS connection and exits 0, with no traceback.
"""

from __future__ import annotations

import os
import sys

QUIET = False
"""Set by ``medbay -q``: no notes on stderr (errors are still reported)."""


class OutputClosed(Exception):
    """Whoever read stdout has gone away (a closed pipe)."""


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(line: str) -> None:
    """Print one line of output now; ``OutputClosed`` if nobody reads it any more."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed from None


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr (not with ``-q``)."""
    if not QUIET:
        print(f"medbay: {text}", file=sys.stderr, flush=True)
