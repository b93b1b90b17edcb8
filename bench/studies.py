"""What the benchmarks that run searches share (pruners.py, warm_start.py): each arm is a stored study, read
where it is already there instead of run again, and the table is printed, then written for the docs."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from bench.stamp import command, write_table
from search.study.quiet import optuna_quieted
from search.study.storage import open_storage


def stored(url: str, name: str) -> optuna.Study | None:
    """The study `name` in the storage at `url`, or None where there is none yet."""
    with optuna_quieted():
        try:
            return optuna.load_study(study_name=name, storage=open_storage(url))
        except KeyError:
            return None


def publish(name: str, text: str, argv: Sequence[str] | None, write: bool) -> None:
    """Print the table; unless `write` is False, write it to docs/bench/NAME.md with the command behind it.
    The searches train on torch's default number of threads, as the CLI does."""
    print(text)
    if write:
        write_table(name, text, command(f"{name}.py", argv), threads="torch's default number of")
