import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.budget import CLASSES, INPUTS, count_parameters
from models.profiles import PROFILES, profile_widths, relative_widths, solve_scale


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PROFILES),
    st.integers(1, 8),
    st.sampled_from([50_000, 100_000, 200_000]),
    st.floats(0.1, 1.0),
    st.lists(st.floats(0.1, 1.0), min_size=8, max_size=8),
)
def test_every_profile_meets_the_budget(profile, depth, budget, taper, free):
    widths = profile_widths(profile, depth, budget, 0.02, taper, free)
    assert widths is not None
    assert len(widths) == depth
    assert abs(count_parameters(widths) - budget) <= 0.02 * budget


def test_many_seeds_meet_budget_and_are_monotone():
    rng = random.Random(0)
    for _ in range(2000):
        profile, depth = rng.choice(PROFILES), rng.randint(1, 8)
        taper = rng.uniform(0.1, 1.0)
        free = [rng.uniform(0.1, 1.0) for _ in range(8)]
        widths = profile_widths(profile, depth, 50_000, 0.02, taper, free)
        assert widths is not None and abs(count_parameters(widths) - 50_000) <= 1_000
        if profile == "decreasing":
            assert widths == sorted(widths, reverse=True)
        if profile == "increasing":
            assert widths == sorted(widths)
        if profile == "uniform":
            assert len(set(widths)) == 1


def test_taper_sets_last_over_first():
    widths = profile_widths("decreasing", 4, 100_000, 0.02, taper=0.25)
    assert widths[-1] / widths[0] == pytest.approx(0.25, rel=0.1)


def test_scale_is_exact_in_reals():
    relative = [1.0, 0.5, 0.25]
    scale = solve_scale(relative, 60_000)
    real = [scale * r for r in relative]
    sizes = [INPUTS, *real, CLASSES]
    assert sum((a + 1) * b for a, b in itertools.pairwise(sizes)) == pytest.approx(60_000)


def test_unreachable_tolerance_gives_none():
    # 8 equal layers: width 25 gives 24,435 and width 26 gives 25,594, both over 2% from 25,000
    assert profile_widths("uniform", 8, 25_000, 0.02) is None
    assert profile_widths("uniform", 8, 900, 0.001) is None


def test_unknown_profile_rejected():
    with pytest.raises(ValueError, match="unknown profile"):
        relative_widths("zigzag", 3)
