"""Budgets and counts as people write them: ``120M``, ``1.5G``, ``2e6``.

Suffixes are powers of 1000 (docs/design.md, "Budgets on the command line").
"""

from __future__ import annotations

import math
import re

from branchnet.errors import BadInput

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}

#: Integer ranges (docs/design.md, "Errors"): every integer setting and count is checked with
#: :func:`check_int` before it reaches torch or numpy, whose C integers overflow past 2**63 - 1.
MAX_INT = 2**63 - 1
#: The config's ``seed``: what numpy's legacy generators take (torch takes up to 2**64 - 1),
#: leaving room for what is added to it (evaluation seeds, per-epoch and per-head seeds).
MAX_SEED = 2**32 - 1
#: ``train.epochs`` (``--epochs``): far more than any training of this tool runs.
MAX_EPOCHS = 100_000
#: ``--seeds`` of ``evaluate`` and ``search``, ``--random`` and ``--networks``: networks to train.
MAX_NETWORKS = 100_000
_BUDGET = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]?)\s*$", re.IGNORECASE)


def parse_budget(text: str | int | float, what: str = "budget") -> float:
    """Parse a positive budget such as ``"120M"``, ``"1.5G"``, ``"2e6"`` or ``120000000``.

    Returns the value as a float (parameters, FLOPs or a relative cost). Raises
    :class:`BadInput` for anything else: a negative or zero value, an unknown suffix,
    text that is not a number.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _BUDGET.match(str(text))
        if not match:
            raise BadInput(f"{what} '{text}' is not a number with an optional K/M/G/T suffix "
                           "(e.g. 120M, 1.5G, 2e6)")
        value = float(match.group(1)) * SUFFIXES[match.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} '{text}' must be a positive number (e.g. 120M, 1.5G, 2e6)")
    return value


def format_count(value: float | int | None, digits: int = 3) -> str:
    """A short human form of a count: ``11176512 -> '11.2M'``; ``None -> '-'``."""
    if value is None:
        return "-"
    value = float(value)
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


#: Latency units a budget may carry, in seconds (``12ms``, ``0.5s``, ``800us``).
#: Each unit as the number of its units per second (dividing by it rounds best).
LATENCY_UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "µs": 10**6}
_LATENCY = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|ms|us|µs)\s*$")


def parse_latency(text: str | int | float, what: str = "latency budget") -> float:
    """Parse a positive latency such as ``"12ms"``, ``"0.5s"`` or ``"800us"``; returns seconds.

    A unit is required (``s``, ``ms``, ``us``; lower case): a bare number is ambiguous.
    Raises :class:`BadInput` (one line) for anything else: no unit, an unknown unit, a
    zero or negative value, text that is not a number.
    """
    if isinstance(text, bool):
        raise BadInput(f"{what} '{text}' is not a latency; give a number with a unit s, ms or us (e.g. 12ms, 0.5s, 800us)")
    match = _LATENCY.match(str(text))
    if not match:
        bare = _BUDGET.match(str(text)) is not None and not str(text).strip()[-1:].isalpha()
        hint = "it needs a unit: " if bare else "give a number with a unit "
        raise BadInput(f"{what} '{text}' is not a latency; {hint}s, ms or us (e.g. 12ms, 0.5s, 800us)")
    value = float(match.group(1)) / LATENCY_UNITS[match.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} '{text}' must be a positive latency (e.g. 12ms, 0.5s, 800us)")
    return value


def format_latency(seconds: float | None, digits: int = 3) -> str:
    """A short human form of a duration in seconds: ``0.01234 -> '12.3 ms'``; ``None -> '-'``."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    for suffix, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.{digits}g} {suffix}"
    return f"{seconds / 1e-9:.{digits}g} ns"


def check_int(value: int, what: str, low: int = 0, high: int = MAX_INT, hint: str = "") -> int:
    """``value`` when it lies in [``low``, ``high``], else :class:`BadInput` naming ``what`` (``--seeds``,
    ``'train.epochs'``) and the range (``hint``, e.g. ``"; e.g. --seeds 3"``, is appended)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{what} must be an integer, got {value!r}")
    if not low <= value <= high:
        shown = str(value) if len(str(value)) <= 24 else str(value)[:20] + "..."
        wanted = f"at most {_int_text(high)}" if low <= -MAX_INT else f"from {low} to {_int_text(high)}"
        raise BadInput(f"{what} {shown} is out of range; give an integer {wanted}{hint}")
    return value


def _int_text(value: int) -> str:
    return {MAX_INT: "2**63 - 1", MAX_SEED: "2**32 - 1"}.get(value, f"{value:,}")
