"""Which candidate networks to train for the task-grouping selection (Standley et al., Sec. 3.1
and 4.2): every group of up to K tasks at the full width, plus thinner networks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from branchnet.errors import BadInput
from branchnet.selection.candidates import group_name

WIDTHS_FOR = ("singles", "all")


@dataclass(frozen=True)
class Network:
    """One candidate network: a group of tasks sharing an encoder of relative width ``width``."""

    tasks: tuple[str, ...]
    width: float = 1.0

    @property
    def name(self) -> str:
        return group_name(self.tasks, self.width)


def validate_widths(widths: Sequence[float]) -> tuple[float, ...]:
    """``widths`` as floats, checked: each in (0, 1], no repeats, 1 among them.

    Raises BadInput naming the offending value.
    """
    out: list[float] = []
    for w in widths:
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise BadInput(f"--widths: '{w}' is not a number; give factors in (0, 1], e.g. --widths 1,0.5") from None
        if not math.isfinite(value) or not 0 < value <= 1:
            raise BadInput(f"--widths: {w} is not in (0, 1]; a width is a factor on model.width, e.g. 0.5")
        if value in out:
            raise BadInput(f"--widths gives {value:g} twice; give each width once, e.g. --widths 1,0.5")
        out.append(value)
    if 1.0 not in out:
        raise BadInput(f"--widths {','.join(f'{w:g}' for w in out)} must include 1 (the full-width networks, "
                       "the cost reference), e.g. --widths 1,0.5")
    return tuple(out)


def parse_widths(text: str) -> tuple[float, ...]:
    """``"1,0.5"`` -> ``(1.0, 0.5)`` (see :func:`validate_widths`)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise BadInput(f"--widths '{text}' must be a comma-separated list of factors in (0, 1], e.g. 1,0.5")
    values = []
    for p in parts:
        try:
            values.append(float(p))
        except ValueError:
            raise BadInput(f"--widths '{text}': '{p}' is not a number; give factors in (0, 1], e.g. 1,0.5") from None
        if not math.isfinite(values[-1]) or not 0 < values[-1] <= 1:
            raise BadInput(f"--widths '{text}': {p} is not in (0, 1]; a width is a factor on model.width, e.g. 0.5")
    return validate_widths(values)


def plan_networks(tasks: Sequence[str], max_size: int | None = None, widths: Sequence[float] = (1.0,),
                  widths_for: str = "singles", predict_higher_order: bool = False) -> list[Network]:
    """The networks to train, in the order of the candidates CSV.

    Width 1 first (groups by size, then in task order, as ``itertools.combinations``),
    then each other width in the order given.
    """
    n = len(tasks)
    max_size = n if max_size is None else max_size
    trained_size = min(max_size, 2) if predict_higher_order else max_size
    groups = [g for size in range(1, trained_size + 1) for g in itertools.combinations(tasks, size)]
    out = [Network(tuple(g), 1.0) for g in groups]
    for w in widths:
        if w != 1.0:
            out.extend(Network(tuple(g), w) for g in groups if widths_for == "all" or len(g) == 1)
    return out


def check_plan(tasks: Sequence[str], max_size: int | None, fraction: float, widths: Sequence[float],
               widths_for: str, predict_higher_order: bool) -> tuple[int, float, tuple[float, ...]]:
    """Validate the options; returns (max_size, fraction, widths)."""
    n = len(tasks)
    if max_size is None:
        max_size = n
    if isinstance(max_size, bool) or int(max_size) != max_size or not 1 <= max_size <= n:
        raise BadInput(f"--max-size {max_size} must be an integer from 1 to {n} (the number of tasks: "
                       f"{', '.join(tasks)})")
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise BadInput(f"--fraction '{fraction}' is not a number; give a value in (0, 1], e.g. 0.2") from None
    if not math.isfinite(fraction) or not 0 < fraction <= 1:
        raise BadInput(f"--fraction {fraction:g} must be in (0, 1]: the share of the configured training "
                       "steps (1 = full training, 0.2 = the early-stopping approximation)")
    widths = validate_widths(widths)
    if widths_for not in WIDTHS_FOR:
        raise BadInput(f"--widths-for '{widths_for}' must be one of: {', '.join(WIDTHS_FOR)}")
    if predict_higher_order and (n < 3 or max_size < 3):
        raise BadInput(f"--predict-higher-order fills groups of 3 or more tasks, but there are {n} tasks and "
                       f"--max-size is {max_size}; drop it or raise --max-size to at least 3")
    return int(max_size), fraction, widths
