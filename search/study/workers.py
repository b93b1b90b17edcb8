"""The worker loop: runs trials until a study holds exactly N finished ones, however many
processes share it.

Which trials count and who owns each (the rank check, orphaned trials) is search.study.owners's;
which trials train together as a pack is search.study.packs's. Their names that callers use are
importable from here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial

from search.errors import UsageError
from search.study.owners import (
    FINISHED,
    UNOWNED_GRACE_SECONDS,
    Blocking,
    Surplus,
    blocking_trials,
    count_trials,
    fail_orphaned_trials,
    guard_surplus,
    owner_is_gone,
    owner_record,
)
from search.study.packs import AUTO_PACK, MAX_PACK, PackSize, is_proven, run_pack
from search.study.storage import STORAGE_FAILURES

__all__ = [
    "AUTO_PACK",
    "FINISHED",
    "MAX_PACK",
    "Blocking",
    "PackSize",
    "Surplus",
    "blocking_trials",
    "count_trials",
    "fail_orphaned_trials",
    "is_proven",
    "owner_is_gone",
    "owner_record",
    "run_until",
]


def run_until(
    study: optuna.Study,
    objective: Any,
    target: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    poll_seconds: float = 1.0,
    deadline: float | None = None,
    on_wait: Callable[[Blocking], None] | None = None,
    bookkeeping: Callable[[], AbstractContextManager] = nullcontext,
    training: Callable[[], AbstractContextManager] = nullcontext,
    pack: PackSize = 1,
    storage: optuna.storages.BaseStorage | None = None,
) -> bool:
    """Run trials until the study holds `target` finished (complete or pruned) trials.

    False if `deadline` (a `time.monotonic()` value) came first: like Optuna's `optimize(timeout=)`,
    no trial starts after it and a running one finishes. While only other processes' trials are
    left, `on_wait` gets them (`Blocking`), once for each new set. `bookkeeping` is entered around
    everything but training and the waits, `training` around training (the CLI defers Ctrl-C in
    the first and raises it at once in the second).

    With `pack` above 1, or AUTO_PACK, the objective must be one of ours (`prepare`, `shared_params`,
    `data`): up to `pack` trials are asked at once and trained together (`run_pack`); `storage` is the
    study's, for their heartbeats."""
    callbacks = [on_trial] if on_trial else []
    announced = None
    while True:
        with bookkeeping():
            fail_stale_trials(study)
            fail_orphaned_trials(study, getattr(storage, "grace_period", None) or UNOWNED_GRACE_SECONDS)
            counts = count_trials(study)
            if counts.finished >= target:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            waiting = counts.finished + counts.running >= target and counts.waiting == 0
            if waiting:
                blocking = blocking_trials(study)
                if on_wait is not None and blocking != announced:
                    on_wait(blocking)
                    announced = blocking
            elif pack != 1:
                run_pack(study, objective, target, pack, callbacks, training, storage, bookkeeping)
            else:
                _run_one(study, guard_surplus(_within(training, objective), target), callbacks)
        if waiting:
            time.sleep(poll_seconds)


def _within(context: Callable[[], AbstractContextManager], objective: Callable[[optuna.Trial], float]):
    def run(trial: optuna.Trial) -> float:
        with context():
            return objective(trial)

    return run


def _run_one(study: optuna.Study, objective: Callable[[optuna.Trial], float], callbacks: list) -> None:
    try:
        study.optimize(objective, n_trials=1, catch=(Surplus,), callbacks=callbacks)
    except AssertionError as error:
        # When the storage fails while a trial's end is recorded, Optuna 5 asserts ("Should not reach")
        # and hides the failure as the assertion's context: report the failure itself.
        if isinstance(error.__context__, (*STORAGE_FAILURES, UsageError)):  # UsageError: a journal's full disk
            raise error.__context__ from error.__context__.__cause__  # its cause (the driver's words) kept
        raise
