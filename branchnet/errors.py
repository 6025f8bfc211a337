"""Errors a user can act on.

Every library function raises :class:`BadInput` when its input is wrong in a way the
user can fix; the command line turns it into one line on stderr and exit code 2
(docs/design.md, "Errors"). Anything else is an internal fault (exit 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BadInput(ValueError):
    """Input that is wrong in a way the user can fix: the message says what and how."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A `` (did you mean 'x'?)`` suffix for a mistyped name, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, word: str, choices: Iterable[str]) -> BadInput:
    """A :class:`BadInput` for an unknown name of some ``kind``, listing the valid ones."""
    choices = sorted(choices)
    shown = ", ".join(choices[:40]) + (", ..." if len(choices) > 40 else "")
    return BadInput(f"unknown {kind} '{word}'{did_you_mean(word, choices)}; valid: {shown}")
