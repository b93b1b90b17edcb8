"""Checks that every layer's settings share: one line that says what is wrong and what to do.

Pure Python (no torch, no Optuna), so the engine's and the studies' configurations use the same
words and limits, and a bad value is refused where its dataclass is built.
"""

from __future__ import annotations

import math

from search.errors import UsageError

SHOWN_LENGTH = 80  # how much of a bad value an error message echoes


def check_int(name: str, value: object, low: int | None, high: int, advice: str = "") -> None:
    """A whole number in [low, high] (no lower limit if `low` is None); a bool is not one to a user."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be a whole number, got {shown(value)}")
    if (low is not None and value < low) or value > high:
        raise UsageError(f"{name} must be {int_bounds(low, high)}, got {shown(value)}{_then(advice)}")


def int_bounds(low: int | None, high: int) -> str:
    """How a message states an integer range: "positive and at most 10,000", "between 0 and 255"."""
    if low is None:
        return f"at most {high:,}"
    if low == 1:
        return f"positive and at most {high:,}"
    return f"between {low:,} and {high:,}"


def check_float(
    name: str,
    value: object,
    low: float,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    advice: str = "",
) -> None:
    """A finite number between `low` and `high` (None: no upper limit), each end included unless open."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name} must be a number, got {shown(value)}")
    if not is_finite(value):
        raise UsageError(f"{name} must be a finite number, got {shown(value)}{_then(advice)}")
    above_low = value > low if low_open else value >= low
    below_high = high is None or (value < high if high_open else value <= high)
    if not (above_low and below_high):
        bounds = float_bounds(low, high, low_open=low_open, high_open=high_open)
        raise UsageError(f"{name} must be {bounds}, got {shown(value)}{_then(advice)}")


def float_bounds(low: float, high: float | None, *, low_open: bool = False, high_open: bool = False) -> str:
    """How a message states a real interval: "positive", "0 or more", "in (0, 0.5]"."""
    if high is None:
        if low == 0:
            return "positive" if low_open else "0 or more"
        return f"above {low:g}" if low_open else f"at least {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_float_range(
    name: str, pair: object, low: float, high: float | None, *, low_open: bool = False, high_open: bool = False
) -> None:
    """A search range [low, high]: two finite numbers within the limits, the first not above the second."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise UsageError(f"{name} range must be two numbers [low, high], got {shown(pair)}")
    for end, value in zip(("low", "high"), pair, strict=True):
        check_float(f"{name} range {end}", value, low, high, low_open=low_open, high_open=high_open)
    if pair[0] > pair[1]:
        raise UsageError(f"{name} range must satisfy low <= high, got {shown(list(pair))}; swap the two")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"unknown {name} {shown(value)}; choose from {', '.join(choices)}")


def check_choices(name: str, singular: str, values: object, choices: tuple[str, ...]) -> None:
    """A non-empty choice among `choices`, each at most once (a repeat would weigh it twice)."""
    if not isinstance(values, tuple) or not values:
        raise UsageError(f"{name} is empty; choose one or more of {', '.join(choices)}")
    for value in values:
        check_choice(singular, value, choices)
    check_distinct(name, values)


def check_ints(name: str, values: object, low: int | None, high: int, advice: str = "") -> None:
    """A non-empty tuple of distinct whole numbers, each in [low, high]."""
    if not isinstance(values, tuple) or not values:
        raise UsageError(f"{name} is empty; give at least one value")
    for value in values:
        check_int(f"every value of {name}", value, low, high, advice)
    check_distinct(name, values)


def check_distinct(name: str, values: tuple) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise UsageError(f"{name} lists a value twice: {shown(value)} in {shown(list(values))}; give each once")
        seen.add(value)


def shown(value: object) -> str:
    """A value as an error message echoes it: its repr, which escapes control characters and lone
    surrogates so that the message stays one printable line, cut short if long."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more than 4,300 digits, or absurdly nested lists
        return "a value too large to show"
    return text if len(text) <= SHOWN_LENGTH else f"{text[: SHOWN_LENGTH - 3]}..."


def is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _then(advice: str) -> str:
    return f"; {advice}" if advice else ""
