"""The worker loop: runs trials until a study holds exactly N finished ones, however many
processes share it.

Before a trial runs it checks its rank among finished and running trials, and a surplus trial is
failed unrun. Each trial records its owner (host, process), so a trial whose process is gone is
failed and retried at once on the same host; elsewhere the storage's heartbeat does it.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from search.errors import UsageError
from search.study.config import StudyConfig
from search.study.record import SURPLUS, TrialRecord, finite, write_trial
from search.study.storage import STORAGE_FAILURES

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (*FINISHED, TrialState.RUNNING)
# How long a running trial may go without recording its owner before it is taken for one whose process
# died at once: a study's default grace period for a missed heartbeat.
UNOWNED_GRACE_SECONDS = StudyConfig.grace_seconds


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


def fail_orphaned_trials(study: optuna.Study, grace_seconds: float = UNOWNED_GRACE_SECONDS) -> list[int]:
    """Fail the running trials whose process on this host is gone, and queue their retry.

    Storages with a heartbeat find such trials after the grace period anyway; a journal storage
    has none, so without this a resume after a SIGKILL would wait for that trial forever. So would
    any storage for a trial whose process was killed after asking for it and before recording its
    owner, its first act (check_rank), or Optuna its first heartbeat: such a trial, still without an
    owner `grace_seconds` after it started, is failed too."""
    failed = []
    now = datetime.now()  # Optuna's datetime_start is local time, without a zone
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = TrialRecord.of(trial).worker
        if owner is None:
            started = trial.datetime_start
            if started is None or (now - started).total_seconds() <= grace_seconds:
                continue
        elif not owner_is_gone(owner):
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
    pack: PackSize = 1,
    storage: optuna.storages.BaseStorage | None = None,
) -> bool:
    """Run trials until the study holds `target` finished (complete or pruned) trials.

    False if `deadline` (a `time.monotonic()` value) came first: like Optuna's `optimize(timeout=)`,
    no trial starts after it and a running one finishes. While only other processes' trials are
    left, `on_wait` gets a line naming them, once for each new set. `bookkeeping` is entered around
    everything but training and the waits, `training` around training (the CLI defers Ctrl-C in
    the first and raises it at once in the second).

    With `pack` above 1, or AUTO_PACK, the objective must be one of ours (`prepare`, `shared_params`,
    `data`): up to `pack` trials are asked at once and trained together (`run_pack`); `storage` is the
    study's, for their heartbeats."""
    callbacks = [on_trial] if on_trial else []
    announced = ""
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


MAX_PACK = 256
# `--pack auto`: each pack takes the size that pays for its first trial's network on this machine, timed
# once per process and kind of network (objective.measured_pack_size), from 1 up to MAX_PACK.
AUTO_PACK = "auto"
PackSize = int | str  # trials a process trains at once, or AUTO_PACK

# A search pack takes in at most this many generations of trials with its first trial's shared choices
# (depth, profile, activation, optimizer, batch size), so that the sampler chooses them anew that often.
PACK_GENERATIONS = 2

# A search packs only around a structure (its shared choices) that has proved itself: one of its completed
# trials is among the study's best, the best tenth of them (at least one, at most 25: TPE's default split of
# its good trials from the rest). Trials of a pack share their structure, so a pack spends K trials on one
# structure where K trials alone try up to K; that pays only where the sampler is exploiting the structure
# anyway. A first trial of any other structure, exploring, trains alone as with `--pack 1`.
PROVEN_FRACTION = 0.1
PROVEN_MOST = 25


def run_pack(
    study: optuna.Study,
    objective: Any,
    target: int,
    size: PackSize,
    callbacks: list,
    training: Callable[[], AbstractContextManager] = nullcontext,
    storage: optuna.storages.BaseStorage | None = None,
    bookkeeping: Callable[[], AbstractContextManager] = nullcontext,
) -> None:
    """Train trials `size` at a time as packs, refilled at epoch boundaries, and tell each its end as it ends.

    The first trial samples freely. A search's first trial whose shared choices (`objective.shared_params`)
    have not proved themselves (is_proven) trains alone; for one whose have, every other trial of its pack,
    asked at the start or to fill the slot of one that ended, gets them fixed (through Optuna's
    PartialFixedSampler) and the sampler fills in the rest. A pack with shared choices takes in at most
    PACK_GENERATIONS x `size` trials, then drains; one without (a grid's, whose queue holds the points in
    depth order) takes the queue's next points while they fit it. A trial that cannot join (another depth,
    or a waiting trial with other choices) starts the next pack, and the pack it came to takes no more.
    With `size` AUTO_PACK each pack's size is measured for its first trial (objective.measured_pack_size,
    asking more of a search's packs than of a grid's), and a trial whose pack would be of one trains alone,
    as without packing. Each trial records the size of the pack it joined.

    No more trials are asked than the study still needs, and each passes the same rank check as a trial
    run alone, so the study still ends at exactly `target` finished trials. On any exception (Ctrl-C
    included) every asked trial not yet told is failed, as Optuna fails the trial it runs, and the
    exception goes on. Asking and telling happen in `bookkeeping`, training in `training`."""
    from search.study.objective import (
        GRID_PACK_SPEEDUP,
        SEARCH_PACK_SPEEDUP,
        measured_pack_size,
        train_packed,
    )

    asked: list[optuna.Trial] = []
    pack_size = 1  # the size of the pack that trials asked now join
    told: set[int] = set()
    problems: list[Exception] = []

    def finish(trial: optuna.Trial, state: TrialState | None, value: float | None = None) -> None:
        frozen = study.tell(trial, value, state=state, skip_if_finished=True)
        told.add(trial.number)
        for callback in callbacks:
            callback(study, frozen)

    def tell(prepared: Any, outcome: float | Exception) -> None:
        with bookkeeping():
            if isinstance(outcome, optuna.TrialPruned):
                finish(prepared.trial, TrialState.PRUNED)
            elif isinstance(outcome, Exception):
                problems.append(outcome)
                finish(prepared.trial, TrialState.FAIL)
            else:
                finish(prepared.trial, None, outcome)

    def ask(count: int, shared: dict) -> list:
        """Up to `count` prepared trials, fewer where the study needs no more."""
        prepared: list = []
        while len(prepared) < count:
            counts = count_trials(study)
            if asked and counts.finished + counts.running >= target and counts.waiting == 0:
                break
            try:
                with _choices_fixed(study, shared):  # the sampler samples while the trial is asked and prepared
                    trial = study.ask()
                    asked.append(trial)
                    check_rank(trial, target)
                    prepared.append(objective.prepare(trial))
            except optuna.TrialPruned:
                finish(trial, TrialState.PRUNED)
            except Surplus:
                finish(trial, TrialState.FAIL)
        return prepared

    def join(members: list) -> list:
        """These prepared trials, each with the size of the pack it joins recorded."""
        for prepared in members:
            write_trial(prepared.trial, pack_size=pack_size)
        return members

    with _heartbeats(study, storage, asked, told):
        try:
            queue = ask(1, {})
            while queue:
                first = queue.pop(0)
                shared = objective.shared_params(first.trial)
                with bookkeeping():
                    exploring = bool(shared) and not is_proven(study, shared)
                if exploring:
                    pack_size = 1
                elif size == AUTO_PACK:
                    speedup = SEARCH_PACK_SPEEDUP if shared else GRID_PACK_SPEEDUP
                    with training():
                        pack_size = measured_pack_size(first, objective.data, MAX_PACK, speedup)
                else:
                    pack_size = size
                if pack_size == 1:
                    with bookkeeping():
                        join([first])
                    with training():
                        outcome = _outcome_alone(first, objective.data)
                    tell(first, outcome)
                    continue
                if len(queue) < pack_size - 1:
                    queue = ask(pack_size - 1 - len(queue), shared) + queue
                group = [first, *(p for p in queue if p.pack_key == first.pack_key)][:pack_size]
                queue = [p for p in queue if not any(p is member for member in group)]
                with bookkeeping():
                    join(group)
                room = PACK_GENERATIONS * pack_size - len(group) if shared else None
                refill = _refill(
                    ask, join, bookkeeping, queue, first.pack_key, shared, room, stop=lambda: bool(problems)
                )
                with training():
                    train_packed(group, objective.data, refill, tell)
            if problems:
                raise problems[0]
        except BaseException:
            for trial in asked:
                if trial.number not in told:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise


def is_proven(study: optuna.Study, shared: dict) -> bool:
    """Whether one of the study's best completed trials (PROVEN_FRACTION of them, at least one, at most
    PROVEN_MOST) made these shared choices: False while no trial has completed."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if finite(t.value)]
    done.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    best = done[: min(max(1, math.ceil(PROVEN_FRACTION * len(done))), PROVEN_MOST)]
    return any(all(t.params.get(name) == value for name, value in shared.items()) for t in best)


def _outcome_alone(prepared: Any, data: Any) -> float | optuna.TrialPruned:
    """A prepared trial trained alone: its value, or the prune that ended it."""
    from search.study.objective import train_alone

    try:
        return train_alone(prepared, data)
    except optuna.TrialPruned as pruned:
        return pruned


def _refill(
    ask: Callable,
    join: Callable[[list], list],
    bookkeeping: Callable,
    queue: list,
    key: tuple,
    shared: dict,
    room: int | None,
    stop: Callable,
) -> Callable:
    """A pack's refill: trials asked with its shared choices, up to `room` of them (None: no limit), that
    `join` records as joining; one that cannot join goes to `queue` and closes the pack to new trials, as
    does a trial that failed (`stop()`: a full disk, say, would fail the next ones too)."""

    def refill(free: int) -> list:
        nonlocal room
        if queue or room == 0 or stop():
            return []
        with bookkeeping():
            fresh = ask(free if room is None else min(free, room), shared)
            if room is not None:
                room -= len(fresh)
            queue.extend(p for p in fresh if p.pack_key != key)
            return join([p for p in fresh if p.pack_key == key])

    return refill


@contextmanager
def _choices_fixed(study: optuna.Study, params: dict) -> Iterator[None]:
    """The study's sampler, with these parameters fixed, for the trials asked in the block."""
    if not params:
        yield
        return
    sampler = study.sampler
    study.sampler = optuna.samplers.PartialFixedSampler(params, sampler)
    try:
        yield
    finally:
        study.sampler = sampler


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
