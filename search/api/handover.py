"""What a run hands the worker processes it spawns: every setting as one `--flag=value` word, in a form that
the worker's own parser (the declared options' `read`, search/api/options.py) reads back as the same value.

Each word is read back here, with those same types, before the run's first write: a setting a worker would
refuse (a timeout printed as `1.728e+06s`, say) is one line now, not workers that die while the run goes on
in one process. `--flag=value` also keeps a value that starts with "-" (a study named `-z`) a value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from search.api.args import non_negative_int
from search.api.options import HANDED_OPTIONS, RUN, Option, RunOptions
from search.checks import shown
from search.errors import UsageError, argument, worded

# How argparse takes `--flag=--`: as no value at all, which the CLI's parser refuses (search/cli/__init__.py).
NO_VALUE = "--"


def flag(name: str, value: object) -> str:
    """One flag and its value as one word, as a printed command or a worker's command line gives it."""
    return f"{name}={value}"


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


def worker_args(run: RunOptions) -> list[str]:
    """The settings every spawned worker of a run gets (HANDED_OPTIONS, those given), each read back as the
    worker reads it."""
    words = []
    for option in HANDED_OPTIONS:
        value = getattr(run, option.name)
        if value is not None:
            words.append(_read_back(option.flag, value, option.text(value), option.read))
    return words


def resume_flags(run: RunOptions) -> list[str]:
    """The flags of this run that its stored study does not remember, where they differ from their defaults."""
    return [
        flag(option.flag, option.text(getattr(run, option.name)))
        for option in (RUN["workers"], RUN["pack"], RUN["data_dir"], RUN["device"])
        if getattr(run, option.name) not in (None, option.default)
    ]


def setting_flags(settings: dict[str, Any], options: Sequence[Option]) -> list[str]:
    """The `settings` given (by name, None: not given) as the flags that give them again, each value written
    as its option writes it: for a command whose resume must repeat them (a frontier's budgets not created
    yet take their settings from the command line, not from storage)."""
    return [
        flag(option.flag, option.text(settings[option.name]))
        for option in options
        if settings.get(option.name) is not None
    ]


def worker_command(args: list[str], index: int) -> list[str]:
    """The command line of spawned worker `index` (1, 2, ...): this same program's `worker` command."""
    reads_back = _read_back("--worker-index", index, str(index), non_negative_int)
    return [sys.executable, "-m", "search", "worker", *args, reads_back, "--quiet"]
