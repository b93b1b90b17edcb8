"""Argument types and options shared by several subcommands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def batch_size(text: str) -> int:
    """'full' (or 0) is full batch."""
    return 0 if text == "full" else non_negative_int(text)


def int_list(text: str) -> list[int]:
    return _list(text, positive_int, "positive integers")


def seed_list(text: str) -> list[int]:
    return _list(text, non_negative_int, "integers of 0 or more")


def _list(text: str, parse, what: str) -> list[int]:
    try:
        values = [parse(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def _number(text: str, kind: type):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if kind is float and value != value:
        raise argparse.ArgumentTypeError("NaN is not allowed")
    return value


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="dataset root in torchvision's layout (default: $ARCHSEARCH_DATA or ./data)")
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist", "kmnist"), help="default mnist")
    parser.add_argument(
        "--data-limit",
        type=non_negative_int,
        default=None,
        help="use only the first N samples of each split (quick runs)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
