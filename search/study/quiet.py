"""Optuna kept quiet while archsearch runs its own studies, and only then.

archsearch prints its own line per trial and per stop, so Optuna's INFO lines ("Trial 3 finished with
value ...") and its ExperimentalWarnings (heartbeats, artifacts, stale-trial checks, all used on purpose)
would repeat or clutter them. Both are process-wide settings, and a notebook that imports archsearch also
runs studies of its own: so they are changed only for the length of an archsearch call and put back as
they were when it returns or raises, never at import.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna


@contextmanager
def optuna_quieted() -> Iterator[None]:
    """Optuna logs errors only and its ExperimentalWarnings are ignored inside the block; the verbosity and
    the warning filters that were set before come back after it."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)
