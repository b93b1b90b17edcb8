"""Pack scheduling: which trials a worker trains together as one pack, and how many.

The first trial of a pack decides its structure (its shared choices) and, with `--pack auto`, its
size; the sampler fills in the other members, which pass the same rank check as a trial run alone
(search.study.owners), so a study still ends at exactly N finished trials.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import optuna
from optuna.trial import TrialState

from search.study.owners import Surplus, check_rank, count_trials
from search.study.record import finite, write_trial

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
