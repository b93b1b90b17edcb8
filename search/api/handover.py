"""What a run hands the worker processes it spawns: every setting as one `--flag=value` word, in a form that
the worker's own parser (the types of search/api/args.py) reads back as the same value.

Each word is read back here, with those same types, before the run's first write: a setting a worker would
refuse (a timeout printed as `1.728e+06s`, say) is one line now, not workers that die while the run goes on
in one process. `--flag=value` also keeps a value that starts with "-" (a study named `-z`) a value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from search.api.args import duration, non_negative_int, pack_size, study_name
from search.checks import shown
from search.engine.config import DEVICES
from search.errors import UsageError, argument, worded

# How argparse takes `--flag=--`: as no value at all, which the CLI's parser refuses (search/cli/__init__.py).
NO_VALUE = "--"


def flag(name: str, value: object) -> str:
    """One flag and its value as one word, as a printed command or a worker's command line gives it."""
    return f"{name}={value}"


def seconds_text(seconds: float) -> str:
    """Seconds as `duration` reads them back to the same float: the shortest decimal that is that float,
    written out without an exponent (`duration` takes 1728000.0s, not 1.728e+06s)."""
    return f"{Decimal(repr(float(seconds))):f}s"


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _read_back(name: str, value: Any, text: str, read: Callable[[str], Any]) -> str:
    """`text`, once the worker's parser would read it as `value`; else the one line that says which setting."""
    try:
        if text == NO_VALUE:
            raise ValueError(text)
        same = read(text) == value
    except Exception:  # the reader's own refusal: an ArgumentTypeError, a ValueError
        same = False
    if not same:
        given = argument(name.removeprefix("--").replace("-", "_"), shown(value))
        alone = worded(cli="run with --workers 1", api="call with workers=1")
        raise UsageError(
            f"{given} cannot be handed to the worker processes (they would read {shown(text)} otherwise); "
            f"give it in another form, or {alone}"
        )
    return flag(name, text)


def worker_args(
    study: str,
    device: str,
    pack: Any,
    timeout: float | None,
    data_dir: str | None,
    artifacts: str | None = None,
) -> list[str]:
    """The settings every spawned worker of a run gets, each read back as the worker reads it."""
    words = [
        _read_back("--study", study, study, study_name),
        _read_back("--device", device, device, lambda text: text if text in DEVICES else None),
        _read_back("--pack", pack, _text(pack), pack_size),
    ]
    if timeout is not None:
        words.append(_read_back("--timeout", timeout, seconds_text(timeout), duration))
    if data_dir:
        words.append(_read_back("--data-dir", data_dir, data_dir, str))
    if artifacts is not None:
        words.append(_read_back("--artifacts", artifacts, artifacts, str))
    return words


def worker_command(args: list[str], index: int) -> list[str]:
    """The command line of spawned worker `index` (1, 2, ...): this same program's `worker` command."""
    reads_back = _read_back("--worker-index", index, str(index), non_negative_int)
    return [sys.executable, "-m", "search", "worker", *args, reads_back, "--quiet"]
