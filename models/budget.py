"""Parameter counts of MLPs on 784 inputs and 10 classes, and shapes that meet a budget.

Pure integer math, no torch, so the CLI and the samplers can use it without building a model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

INPUTS = 784
CLASSES = 10
LINEAR_PARAMETERS = (INPUTS + 1) * CLASSES
MIN_BUDGET = (INPUTS + 1) * 1 + (1 + 1) * CLASSES  # one hidden layer of width 1: 805
WIDTH_ONE_OFFSET = MIN_BUDGET - 2  # Parameters(k, 1) = 2k + 803: each layer of width 1 adds 2
LINEAR_MODEL = f"linear softmax {INPUTS} -> {CLASSES}"
# The largest budget any command accepts. An MLP of 10,000,000 parameters on 784 inputs (one hidden
# layer of about 12,600 units) is far beyond what these MNIST studies need (they use 25,000 to
# 100,000) and still trains in a few hundred MB; a mistyped 10**15 would try to allocate tens of GB.
MAX_BUDGET = 10_000_000
# The deepest net any command builds or tabulates: the studies search 1 to 8 hidden layers, and a
# plain MLP far deeper than 64 layers does not train with these optimizers and initializations.
MAX_DEPTH = 64


class BudgetError(ValueError):
    """A budget that no network of the asked kind can meet."""


def count_parameters(widths: Sequence[int], inputs: int = INPUTS, outputs: int = CLASSES) -> int:
    """Weights and biases of a fully connected net; `[]` is the linear softmax model."""
    if any(w < 1 for w in widths):
        raise ValueError(f"every width must be at least 1, got {list(widths)}")
    sizes = [inputs, *widths, outputs]
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))


def uniform_parameters(depth: int, width: int) -> int:
    """Parameters(k, m) = (k-1)m^2 + (794+k)m + 10, for k hidden layers of width m."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be at least 1, got k={depth}, m={width}")
    return (depth - 1) * width * width + (794 + depth) * width + 10


def check_budget(budget: int) -> None:
    if budget < MIN_BUDGET:
        raise BudgetError(
            f"budget {budget} is too small for any hidden layer: the smallest MLP "
            f"(one layer of width 1) has {MIN_BUDGET} parameters; use a budget of at least {MIN_BUDGET}"
        )


def depth_range(budget: int) -> tuple[int, int]:
    """Smallest and largest k with some width m >= 1 and Parameters(k, m) <= P.

    The largest is reached at m = 1, where Parameters(k, 1) = 2k + 803; it is floored
    because a fractional layer does not exist.
    """
    check_budget(budget)
    return 1, (budget - WIDTH_ONE_OFFSET) // 2


def width_for_budget(budget: int, depth: int) -> int:
    """m_P(k): the width whose uniform count is closest to P (ties go to the smaller count)."""
    check_budget(budget)
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    a, b, c = depth - 1, 794 + depth, 10 - budget
    root = -c / b if a == 0 else (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    low = max(1, math.floor(root))
    candidates = [m for m in (low - 1, low, low + 1, low + 2) if m >= 1]
    return min(candidates, key=lambda m: (abs(uniform_parameters(depth, m) - budget), uniform_parameters(depth, m)))


@dataclass(frozen=True)
class BudgetRow:
    depth: int
    width: int
    params: int
    rel_error: float


def budget_table(budget: int, depths: Sequence[int] | None = None) -> list[BudgetRow]:
    """The (k, m_P(k)) shapes for a budget, by default for every depth up to 8 that fits."""
    low, high = depth_range(budget)
    chosen = list(depths) if depths is not None else list(range(low, min(high, 8) + 1))
    rows = []
    for depth in chosen:
        width = width_for_budget(budget, depth)
        params = uniform_parameters(depth, width)
        rows.append(BudgetRow(depth, width, params, (params - budget) / budget))
    return rows


def log_budgets(low: int, high: int, count: int) -> list[int]:
    """`count` budgets from `low` to `high`, evenly spaced on a log scale and rounded to three significant
    digits (10,000 to 1,000,000 in 8: 10000, 19300, 37300, 72000, 139000, 268000, 518000, 1000000); the
    ends are kept exactly, and budgets that round to the same value are given once."""
    check_budget(low)
    if not low < high:
        raise BudgetError(f"a budget range goes from low to high, got {low}:{high}; give e.g. 10000:1000000")
    if count < 2:
        raise BudgetError(f"a budget range needs at least 2 budgets, got {count}")
    ratio = (high / low) ** (1 / (count - 1))
    inner = [_three_digits(low * ratio**step) for step in range(1, count - 1)]
    return sorted({low, high, *(b for b in inner if low < b < high)})


def _three_digits(value: float) -> int:
    digits = max(0, math.floor(math.log10(value)) - 2)
    return round(value / 10**digits) * 10**digits
