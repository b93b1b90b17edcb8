"""The worker loop: runs trials until a study holds exactly N finished ones, however many
processes share it.

Before a trial runs it checks its rank among finished and running trials, and a surplus trial is
failed unrun. Each trial records its owner (host, process), so a trial whose process is gone is
failed and retried at once on the same host; elsewhere the storage's heartbeat does it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from search.study.record import SURPLUS, TrialRecord, write_trial
from search.study.storage import STORAGE_FAILURES

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (*FINISHED, TrialState.RUNNING)


class Surplus(Exception):
    """A trial asked for after the study already had its N finished or running trials."""


@dataclass
class Counts:
    finished: int
    running: int
    waiting: int


def count_trials(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    return Counts(
        sum(t.state in FINISHED for t in trials),
        sum(t.state == TrialState.RUNNING for t in trials),
        sum(t.state == TrialState.WAITING for t in trials),
    )


def owner_record() -> dict[str, Any]:
    """Who runs a trial: enough to tell later, on the same host, whether that process is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), so a reused process id is not
    taken for the process that started a trial; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_is_gone(owner: Any) -> bool:
    """True only when the owner ran on this host and its process no longer exists."""
    if (
        not isinstance(owner, dict)
        or owner.get("host") != socket.gethostname()
        or not isinstance(owner.get("pid"), int)
    ):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except (OverflowError, ValueError):
        return False
    start = owner.get("start")
    return start is not None and _process_start(pid) not in (None, start)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose process on this host is gone, and queue their retry.

    Storages with a heartbeat find such trials after the grace period anyway; a journal storage
    has none, so without this a resume after a SIGKILL would wait for that trial forever."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owner_is_gone(TrialRecord.of(trial).worker):
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        frozen = study.get_trials(deepcopy=False)[trial.number]
        if frozen.state == TrialState.FAIL and frozen.datetime_complete is not None:
            RetryHeartbeatStaleTrialCallback(max_retry=3)(study, frozen)
            failed.append(trial.number)
    return failed


def blocking_trials(study: optuna.Study) -> str:
    """The running trials a finished study waits for, with where they run, for a one-line message."""
    parts = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = TrialRecord.of(trial).worker
        where = f"process {owner.get('pid')} on host {owner.get('host')}" if isinstance(owner, dict) else "unknown"
        parts.append(f"#{trial.number} ({where})")
    return ", ".join(parts)


def check_rank(trial: optuna.Trial, target: int) -> None:
    """Fail a trial unrun when `target` earlier trials are already finished or running; record its owner."""
    earlier = trial.study.get_trials(deepcopy=False, states=COUNTED)
    if sum(t.number < trial.number for t in earlier) >= target:
        write_trial(trial, fail_reason=f"{SURPLUS}: {target} trials were already finished or running")
        raise Surplus()
    write_trial(trial, worker=owner_record())


def guard_surplus(objective: Callable[[optuna.Trial], float], target: int) -> Callable[[optuna.Trial], float]:
    def guarded(trial: optuna.Trial) -> float:
        check_rank(trial, target)
        return objective(trial)

    return guarded


def run_until(
    study: optuna.Study,
    objective: Any,
    target: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    poll_seconds: float = 1.0,
    deadline: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    bookkeeping: Callable[[], AbstractContextManager] = nullcontext,
    training: Callable[[], AbstractContextManager] = nullcontext,
    pack: int = 1,
    storage: optuna.storages.BaseStorage | None = None,
) -> bool:
    """Run trials until the study holds `target` finished (complete or pruned) trials.

    False if `deadline` (a `time.monotonic()` value) came first: like Optuna's `optimize(timeout=)`,
    no trial starts after it and a running one finishes. While only other processes' trials are
    left, `on_wait` gets a line naming them, once for each new set. `bookkeeping` is entered around
    everything but training and the waits, `training` around training (the CLI defers Ctrl-C in
    the first and raises it at once in the second).

    With `pack` above 1 the objective must be one of ours (`prepare`, `shared_params`, `data`): up
    to `pack` trials are asked at once and trained together (`run_pack`); `storage` is the study's,
    for their heartbeats."""
    callbacks = [on_trial] if on_trial else []
    announced = ""
    while True:
        with bookkeeping():
            fail_stale_trials(study)
            fail_orphaned_trials(study)
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
            elif pack > 1:
                run_pack(study, objective, target, pack, callbacks, training, storage)
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
        if isinstance(error.__context__, STORAGE_FAILURES):
            raise error.__context__ from None
        raise


def run_pack(
    study: optuna.Study,
    objective: Any,
    target: int,
    size: int,
    callbacks: list,
    training: Callable[[], AbstractContextManager] = nullcontext,
    storage: optuna.storages.BaseStorage | None = None,
) -> None:
    """Ask up to `size` trials, train those that share a pack key as one pack, and tell each its end.

    The first trial samples freely; the ones asked after it get its shared choices enqueued
    (`objective.shared_params`) and the sampler fills in the rest. No more trials are asked than the
    study still needs, and each passes the same rank check as a trial run alone, so the study still
    ends at exactly `target` finished trials. On any exception (Ctrl-C included) every trial of the
    pack not yet told is failed, as Optuna fails the trial it runs, and the exception goes on."""
    from search.study.objective import train_packed

    asked: list[optuna.Trial] = []
    told: set[int] = set()

    def tell(trial: optuna.Trial, **outcome: Any) -> None:
        frozen = study.tell(trial, skip_if_finished=True, **outcome)
        told.add(trial.number)
        for callback in callbacks:
            callback(study, frozen)

    prepared = []
    with _heartbeats(study, storage, asked, told):
        try:
            for index in range(size):
                counts = count_trials(study)
                if index and counts.finished + counts.running >= target and counts.waiting == 0:
                    break
                trial = study.ask()
                asked.append(trial)
                try:
                    check_rank(trial, target)
                    prepared.append(objective.prepare(trial))
                except optuna.TrialPruned:
                    tell(trial, state=TrialState.PRUNED)
                    continue
                except Surplus:
                    tell(trial, state=TrialState.FAIL)
                    continue
                if len(prepared) == 1:
                    shared = objective.shared_params(trial)
                    more = min(size - 1 - index, target - counts.finished - counts.running - 1)
                    for _ in range(more if shared else 0):
                        study.enqueue_trial(shared)
            problem: Exception | None = None
            for group in _by_key(prepared):
                with training():
                    outcomes = train_packed(group, objective.data)
                for item, outcome in zip(group, outcomes, strict=True):
                    if isinstance(outcome, optuna.TrialPruned):
                        tell(item.trial, state=TrialState.PRUNED)
                    elif isinstance(outcome, Exception):
                        tell(item.trial, state=TrialState.FAIL)
                        problem = problem or outcome
                    else:
                        tell(item.trial, values=outcome)
            if problem is not None:
                raise problem
        except BaseException:
            for trial in asked:
                if trial.number not in told:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise


def _by_key(prepared: list) -> list[list]:
    groups: dict[tuple, list] = {}
    for item in prepared:
        groups.setdefault(item.pack_key, []).append(item)
    return list(groups.values())


@contextmanager
def _heartbeats(
    study: optuna.Study, storage: optuna.storages.BaseStorage | None, asked: list[optuna.Trial], told: set[int]
) -> Iterator[None]:
    """One thread beats the heart of every running trial of a pack, as Optuna's optimize does for one."""
    # RDBStorage's public heartbeat methods; a journal storage has none (its trials' owners are checked instead).
    has_heartbeat = hasattr(storage, "get_heartbeat_interval") and hasattr(storage, "record_heartbeat")
    interval = storage.get_heartbeat_interval() if has_heartbeat else None
    if interval is None:
        yield
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in list(asked):
                if trial.number not in told:
                    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="pack-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
