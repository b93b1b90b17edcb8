import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.budget import (
    LINEAR_PARAMETERS,
    MIN_BUDGET,
    BudgetError,
    budget_table,
    count_parameters,
    depth_range,
    uniform_parameters,
    width_for_budget,
)
from models.mlp import build_mlp


def torch_count(widths):
    return sum(p.numel() for p in build_mlp(widths).parameters())


def test_linear_model_has_7850_parameters():
    assert count_parameters([]) == LINEAR_PARAMETERS == 7850 == torch_count([])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 80), max_size=6))
def test_count_matches_torch_for_any_widths(widths):
    assert count_parameters(widths) == torch_count(widths)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 120))
def test_closed_form_matches_torch(depth, width):
    assert uniform_parameters(depth, width) == torch_count([width] * depth) == count_parameters([width] * depth)


@pytest.mark.parametrize("budget", [805, 806, 1000, 7850, 25_000, 50_000, 77_777, 100_000, 250_000])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6, 8, 17])
def test_width_for_budget_is_brute_force_closest(budget, depth):
    counts = [(abs(uniform_parameters(depth, m) - budget), uniform_parameters(depth, m), m) for m in range(1, 400)]
    assert width_for_budget(budget, depth) == min(counts)[2]


@settings(max_examples=200, deadline=None)
@given(st.integers(MIN_BUDGET, 300_000), st.integers(1, 12))
def test_width_for_budget_property(budget, depth):
    m = width_for_budget(budget, depth)
    here = abs(uniform_parameters(depth, m) - budget)
    assert here <= abs(uniform_parameters(depth, m + 1) - budget)
    if m > 1:
        assert here <= abs(uniform_parameters(depth, m - 1) - budget)


def test_known_widths_for_50000():
    assert [width_for_budget(50_000, k) for k in (1, 2, 3, 4)] == [63, 59, 55, 52]


@settings(max_examples=200, deadline=None)
@given(st.integers(MIN_BUDGET, 10**7))
def test_depth_range_is_tight(budget):
    low, high = depth_range(budget)
    assert low == 1
    assert uniform_parameters(high, 1) <= budget < uniform_parameters(high + 1, 1)


@pytest.mark.parametrize("budget", [-5, 0, 1, 7850 - 7100, MIN_BUDGET - 1])
def test_too_small_budget_refused(budget):
    with pytest.raises(BudgetError, match="at least 805"):
        depth_range(budget)


def test_budget_table_rows():
    rows = budget_table(100_000, [1, 8])
    assert [r.depth for r in rows] == [1, 8]
    assert all(abs(r.rel_error) < 0.02 for r in rows)
    assert rows[0].params == uniform_parameters(1, rows[0].width)
