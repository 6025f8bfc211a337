"""Budgets and counts as people write them: ``120M``, ``1.5G``, ``2e6``.

Suffixes are powers of 1000 (docs/design.md, "Budgets on the command line").
"""

from __future__ import annotations

import math
import re

from branchnet.errors import BadInput

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
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
