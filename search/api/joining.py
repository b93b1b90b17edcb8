"""Joining a stored study from any process or machine (`archsearch worker`): its settings come from the
study itself, so a worker needs only its name and storage to run the same trials as the run that made it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from search.api.calls import api_call, stops_handled
from search.api.handover import flag
from search.api.options import DEFAULT_PACK, RunOptions
from search.api.running import (
    artifacts_dir,
    end_with_parent,
    is_spawned,
    resume_hint,
    run_with_progress,
    storage_failure,
    storage_url,
)
from search.checks import check_int
from search.engine.config import DEFAULT_DEVICE, MAX_SEED
from search.errors import Interrupted, Terminated, UsageError
from search.study import grid
from search.study.config import MAX_TRIALS
from search.study.lifecycle import load_study, make_pruner, make_sampler
from search.study.record import StudyRecord
from search.study.storage import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HEARTBEAT_SECONDS,
    STORAGE_FAILURES,
    open_storage,
    public_url,
)
from search.study.workers import PackSize, count_trials


@dataclass(frozen=True)
class WorkerRun:
    """A worker after a call: the study it joined (`study`, its name; `optuna_study`, the optuna.Study) and
    how far that study got."""

    study: str
    storage: str  # without its password
    trials: int  # finished trials wanted
    finished: int
    stopped_at_timeout: bool
    optuna_study: optuna.Study = field(repr=False, compare=False)


def search_worker_setup(study: optuna.Study, data_dir: str | None, worker_index: int, device, artifacts: Path):
    """(sampler, pruner, objective, target) of a worker joining a search study."""
    from search.engine.data import load_data
    from search.study.config import study_from_dict
    from search.study.objective import SearchObjective

    config = study_from_dict(StudyRecord.of(study).settings, f"study {study.study_name}")
    data = load_data(data_dir, config.dataset, str(device), limit=config.data_limit or None)
    sampler = make_sampler(config.sampler, config.seed, worker_index)
    return sampler, make_pruner(config.pruner, config.epochs), SearchObjective(config, data, artifacts), config.trials


# What each study kind's worker runs: (study, data_dir, worker_index, device, artifacts) -> (sampler, pruner,
# objective, target).
SETUPS: dict[str, Callable] = {"search": search_worker_setup, "grid": grid.worker_setup}


def check_worker_trials(trials: int | None) -> None:
    """The finished trials a worker runs the study to (None: the study's own number); also the flag's check."""
    if trials is not None:
        check_int("trials", trials, 1, MAX_TRIALS)


def check_worker_index(worker_index: int) -> None:
    """A worker's index, which varies its sampler's seed; also the flag's check."""
    check_int("worker_index", worker_index, 0, MAX_SEED)


@api_call
def worker(
    study: str,
    *,
    storage: str | None = None,
    trials: int | None = None,
    worker_index: int = 0,
    pack: PackSize = DEFAULT_PACK,
    timeout: float | None = None,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    artifacts: str | None = None,
    quiet: bool = False,
) -> WorkerRun:
    """Join a stored search or grid study and run trials until it has `trials` finished ones (by default
    the study's own number), alongside any other worker (`archsearch worker`). `worker_index` varies the
    sampler's seed per worker and picks the GPU; `timeout` is in seconds."""
    with stops_handled():
        return _worker(study, storage, trials, worker_index, pack, timeout, device, data_dir, artifacts, quiet)


def _worker(study, storage, trials, worker_index, pack, timeout, device, data_dir, artifacts, quiet) -> WorkerRun:
    end_with_parent()
    RunOptions(pack=pack, timeout=timeout, device=device)  # checked as the flags of the same names are
    check_worker_trials(trials)
    check_worker_index(worker_index)
    deadline = None if timeout is None else time.monotonic() + timeout
    url = storage_url(storage)
    # Read-only until the study is known to be ours: refusing another tool's file leaves it as it was.
    opened = load_study(open_storage(url, read_only=True), study)
    kind = StudyRecord.of(opened).kind
    if kind not in SETUPS:
        raise UsageError(f"study {study!r} was not made by archsearch (kind {kind!r}); nothing to run")
    config = StudyRecord.of(opened).settings
    heartbeat = config.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS)
    writable = open_storage(url, heartbeat, config.get("grace_seconds", DEFAULT_GRACE_SECONDS), must_exist=True)
    from search.engine.trainer import resolve_device  # torch loads only once the study is known good

    torch_device = resolve_device(device, worker_index)  # workers spread over the visible GPUs
    folder = artifacts_dir(artifacts, opened, url)
    sampler, pruner, objective, target = SETUPS[kind](opened, data_dir, worker_index, torch_device, folder)
    joined = load_study(writable, study, sampler, pruner)
    target = trials or target
    try:
        finished = run_with_progress(joined, objective, target, quiet, deadline, pack=pack, storage=writable)
    except STORAGE_FAILURES as error:
        raise storage_failure(error, url) from None
    except KeyboardInterrupt as stop:
        if is_spawned():  # the process that spawned this worker prints the one resume command
            raise
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        hint = resume_hint(["worker", flag("--study", study)], url)
        raise Interrupted(f"stopped; the running trial was marked failed. {hint}", signum) from None
    done = min(count_trials(joined).finished, target)
    return WorkerRun(study, public_url(url), target, done, not finished, joined)
