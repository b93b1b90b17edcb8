"""Layer-width profiles whose parameter count meets a budget by construction.

A profile gives relative widths; one scale is solved for in closed form so that the count
equals the budget, then the integer rounding is corrected. Pure math, no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from models.budget import CLASSES, INPUTS, count_parameters

UNIFORM = "uniform"
PROFILES = (UNIFORM, "decreasing", "increasing", "free")


def relative_widths(profile: str, depth: int, taper: float = 1.0, free: Sequence[float] = ()) -> list[float]:
    """Widths up to one scale; `taper` is the last layer's width over the first's."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if profile == UNIFORM or depth == 1:
        return [1.0] * depth
    if profile in ("decreasing", "increasing"):
        if not 0 < taper <= 1:
            raise ValueError(f"taper must be in (0, 1], got {taper}")
        shrinking = [taper ** (i / (depth - 1)) for i in range(depth)]
        return shrinking if profile == "decreasing" else shrinking[::-1]
    if profile == "free":
        if len(free) < depth or any(r <= 0 for r in free[:depth]):
            raise ValueError(f"free profile needs {depth} positive relative widths, got {list(free)}")
        return [float(r) for r in free[:depth]]
    raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")


def solve_scale(relative: Sequence[float], budget: int) -> float:
    """The real s for which widths s*r_i have exactly `budget` parameters.

    count(s) = a s^2 + b s + CLASSES with a = sum r_i r_{i+1}, b = (INPUTS+1) r_1 + sum_{i>1} r_i + CLASSES r_k.
    """
    a = sum(x * y for x, y in itertools.pairwise(relative))
    b = (INPUTS + 1) * relative[0] + sum(relative[1:]) + CLASSES * relative[-1]
    target = budget - CLASSES
    if a == 0:
        return target / b
    return (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)


def fit_widths(relative: Sequence[float], budget: int, tolerance: float) -> list[int] | None:
    """Integer widths in the given proportions with a count within `tolerance` of the budget.

    Rounding each layer independently keeps the profile's order (monotone stays monotone);
    scanning scales near the solved one picks the rounding closest to the budget. None when no
    rounding lands within tolerance (widths too small to tune finely enough).
    """
    scale = solve_scale(relative, budget)
    best: list[int] | None = None
    best_error = math.inf
    for step in range(-40, 41):
        trial_scale = scale * (1 + step / 1000)
        widths = [max(1, round(trial_scale * r)) for r in relative]
        error = abs(count_parameters(widths) - budget)
        if error < best_error:
            best, best_error = widths, error
    if best is None or best_error > tolerance * budget:
        return None
    return best


def profile_widths(
    profile: str, depth: int, budget: int, tolerance: float, taper: float = 1.0, free: Sequence[float] = ()
) -> list[int] | None:
    return fit_widths(relative_widths(profile, depth, taper, free), budget, tolerance)
