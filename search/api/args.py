"""Argument types shared by several subcommands.

Each type refuses a bad value with an `ArgumentTypeError`, which the parser prints as one line with
exit status 2. The types of the declared settings (search/api/options.py) read a value's form only (a whole
number, a list, a duration): its range is checked once, where its dataclass is built. So are the flags whose
setting the API checks in a function of its own (`checked_by` reads the form, then calls that function).
The others carry the limits of the configuration they feed (search/study/config.py, models/budget.py).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from models.budget import MAX_BUDGET, MAX_DEPTH, MIN_BUDGET, log_budgets
from search.checks import float_bounds, int_bounds, shown
from search.errors import UsageError
from search.study.config import check_study_name
from search.study.workers import AUTO_PACK, PackSize

# The largest whole number any flag takes unless it has a tighter limit of its own: SQLite and
# Optuna's storages keep integers in 64 bits, so anything larger can only be a typo.
MAX_FLAG_INT = 2**63 - 1
MAX_DURATION_SECONDS = 30 * 86_400  # 30 days: longer than any sensible allocation of a cluster job
DURATION_FORMS = "45s, 90m, 1h30m, 1.5h, 2d or plain seconds (3600)"
_DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION = re.compile("".join(rf"(?:(?P<{unit}>{_DECIMAL}){unit})?" for unit in _DURATION_UNITS))


def checked_by(form: Callable[[str], Any], check: Callable[[Any], None]) -> Callable[[str], Any]:
    """A flag's type: its text read by `form`, then refused by `check`, the API's own check of the keyword
    it sets, as argparse refuses a value (one line naming the flag, exit 2)."""

    def read(text: str) -> Any:
        value = form(text)
        _refuse_as_a_flag(check, value)
        return value

    return read


def _refuse_as_a_flag(check: Callable[[Any], None], value: Any) -> None:
    """`check(value)`, its UsageError raised as argparse's refusal of a flag's value."""
    try:
        check(value)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def whole_number(text: str) -> int:
    return _number(text, int)


def whole_numbers(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers; their dataclass checks how many, which, and that none repeats."""
    try:
        return tuple(whole_number(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {shown(text)}: {error}"
        ) from None


def batch_size_form(text: str) -> int:
    """A batch size: 'full' is 0, the full batch."""
    return 0 if text == "full" else whole_number(text)


def pack_form(text: str) -> PackSize:
    """Trials a process trains at once: a whole number, or AUTO_PACK."""
    return AUTO_PACK if text == AUTO_PACK else whole_number(text)


def positive_int(text: str, high: int = MAX_FLAG_INT) -> int:
    return _int_between(text, 1, high)


def non_negative_int(text: str, high: int = MAX_FLAG_INT) -> int:
    return _int_between(text, 0, high)


def non_negative_float(text: str) -> float:
    return _float_above(text, 0, low_open=False)


def finite_float(text: str) -> float:
    """Any real number; NaN and infinities are refused, as every float setting refuses them."""
    return _number(text, float)


def budget(text: str) -> int:
    """A parameter budget P, from the smallest MLP to MAX_BUDGET."""
    return _int_between(text, MIN_BUDGET, MAX_BUDGET, f"{MIN_BUDGET} parameters is the smallest MLP")


def depth(text: str) -> int:
    """A number of hidden layers."""
    return _int_between(text, 1, MAX_DEPTH)


def int_list(text: str) -> list[int]:
    return _list(text, positive_int, "positive integers")


DEFAULT_FRONTIER_POINTS = 8
MAX_FRONTIER_POINTS = 64


def budget_spec(text: str, check: Callable[[tuple[int, ...]], None]) -> list[int]:
    """Budgets of a frontier: LOW:HIGH (8 log-spaced budgets), LOW:HIGH:COUNT, or a list 10000,50000. The
    spec's form is read here; the budgets (a list's, or a range's two ends) are refused by `check`, the
    frontier's own check of its `budgets`."""
    if ":" not in text:
        values = whole_numbers(text)
        _refuse_as_a_flag(check, values)
        return sorted(values)
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH or LOW:HIGH:COUNT, e.g. 10000:1000000, got {shown(text)}")
    low, high = (_number(part.strip(), int) for part in parts[:2])
    if low > high:
        raise argparse.ArgumentTypeError(f"a range goes from low to high, got {shown(text)}; give {high}:{low}")
    if low == high:
        raise argparse.ArgumentTypeError(
            f"a range needs two different ends, got {shown(text)}; for one budget: archsearch search --budget {low}"
        )
    _refuse_as_a_flag(check, (low, high))
    count = _int_between(parts[2].strip(), 2, MAX_FRONTIER_POINTS) if len(parts) == 3 else DEFAULT_FRONTIER_POINTS
    return log_budgets(low, high, count)


def depth_list(text: str) -> list[int]:
    return _list(text, depth, f"numbers of hidden layers, 1 to {MAX_DEPTH}")


def study_name(text: str) -> str:
    """A study name that `check_study_name` accepts."""
    try:
        check_study_name(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def storage(text: str) -> str:
    """A storage URL or journal:PATH; an empty one (an unset variable in a script, say) is a mistake,
    not a wish for the default database."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a storage URL or leave the flag out for the default")
    return text


def duration(text: str) -> float:
    """Seconds, from a wall-clock time such as 45s, 90m, 1h30m, 1.5h, 2d or plain seconds (3600); a timeout's
    range is RunOptions' (search/api/options.py)."""
    compact = re.sub(r"\s+", "", text).lower()
    if re.fullmatch(_DECIMAL, compact):
        seconds = float(compact)
    else:
        match = _DURATION.fullmatch(compact)
        if not compact or match is None:
            raise argparse.ArgumentTypeError(f"expected a duration such as {DURATION_FORMS}, got {shown(text)}")
        seconds = sum(float(match[unit] or 0) * factor for unit, factor in _DURATION_UNITS.items())
    return seconds


def seconds_text(seconds: float) -> str:
    """Seconds as `duration` reads them back to the same float: the shortest decimal that is that float,
    written out without an exponent (`duration` takes 1728000.0s, not 1.728e+06s)."""
    return f"{Decimal(repr(float(seconds))):f}s"


def _list(text: str, parse: Callable[[str], int], what: str) -> list[int]:
    try:
        values = [parse(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {shown(text)} ({error})") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one value, got {shown(text)}")
    seen: set[int] = set()
    for value in values:
        if value in seen:
            raise argparse.ArgumentTypeError(f"lists {value} twice, in {shown(text)}; give each value once")
        seen.add(value)
    return values


def _int_between(text: str, low: int, high: int, advice: str = "") -> int:
    value = _number(text, int)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"must be {int_bounds(low, high)}, got {shown(value)}{f'; {advice}' if advice else ''}"
        )
    return value


def _float_above(text: str, low: float, *, low_open: bool) -> float:
    value = _number(text, float)
    if not (value > low if low_open else value >= low):
        raise argparse.ArgumentTypeError(f"must be {float_bounds(low, None, low_open=low_open)}, got {shown(text)}")
    return value


def _number(text: str, kind: type):
    """`text` as an int or a finite float; NaN and infinities are no settings of this program."""
    try:
        value = kind(text)
    except ValueError:  # also an int of more than 4,300 digits
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {shown(text)}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {shown(text)} (NaN and infinity are refused)")
    return value
