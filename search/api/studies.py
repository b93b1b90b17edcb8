"""The two study kinds run from Python: a profile search and a grid (the k-sweep). Both resume.

Each call checks everything (settings, storage, device, data, artifact folder) before its first
write, prints one line saying what it runs, then a line per finished trial under a progress bar
(`quiet=True`: neither), and returns what the storage now holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from models.budget import depth_range
from search.api.calls import api_call, stops_handled, with_settings
from search.api.handover import flag, resume_flags, worker_args
from search.api.options import DATA_OPTIONS, DEFAULT_PACK, GRID_OPTIONS, SEARCH_OPTIONS, RunOptions, given_settings
from search.api.running import (
    PackSize,
    artifacts_dir,
    run_study,
    storage_url,
    summary_line,
)
from search.engine.config import DEFAULT_DEVICE
from search.errors import UsageError, argument
from search.results.tables import BestTrial, GridRow, grid_table
from search.study.config import StudyConfig, load_toml, replace, study_from_dict, to_dict
from search.study.lifecycle import best_trial, check_new_run, create_study, make_pruner, make_sampler, stored_settings
from search.study.record import StudyRecord, TrialRecord, write_study
from search.study.storage import describe, open_storage, public_url
from search.study.warm import plan_warm_start, queue_warm_start


@dataclass(frozen=True)
class SearchRun:
    """A profile search after a call: how far it got and its best trial (None while none completed).

    `study` is the study's name, as the `study` argument takes it; `optuna_study` is the optuna.Study
    itself, for Optuna's own tools (`trials_dataframe()`, `optuna.visualization`, another `optimize`)."""

    study: str
    storage: str  # without its password
    trials: int  # finished trials wanted
    finished: int
    stopped_at_timeout: bool
    best: BestTrial | None
    best_summary: str | None  # the best trial in one line, as the CLI prints it
    pruned: int
    first_pruned_reason: str | None
    optuna_study: optuna.Study = field(repr=False, compare=False)


@dataclass(frozen=True)
class GridRun:
    """A grid after a call: one row per shape (budget, depth) with its seeds, and the linear baseline;
    `study` is the grid study's name and `optuna_study` the optuna.Study itself."""

    study: str
    storage: str
    points: int
    finished: int
    stopped_at_timeout: bool
    rows: list[GridRow]
    seeds: int
    baseline: dict | None
    optuna_study: optuna.Study = field(repr=False, compare=False)


def search_config(config: str | None, study: str | None, storage: str | None, settings: dict) -> StudyConfig:
    """Settings over the study file; without one, over an existing study's settings, so a bare resume works."""
    if config:
        base = study_from_dict(load_toml(config), config)
    else:
        stored = stored_settings(storage_url(storage), study, "search") if study else None
        base = study_from_dict(stored, f"study {study!r}") if stored is not None else StudyConfig(name="")
    merged = with_settings(base, settings, (*SEARCH_OPTIONS, *DATA_OPTIONS))
    merged = replace(merged, storage=storage_url(storage, base.storage), name=study)
    if not merged.name:
        merged = replace(merged, name=f"profiles-{merged.budget}")
    deepest = depth_range(merged.budget)[1]
    if merged.space.max_depth > deepest:
        raise UsageError(
            f"budget {merged.budget} cannot hold {merged.space.max_depth} hidden layers; lower {argument('max_depth')} "
            f"to at most {deepest} or raise {argument('budget')}"
        )
    return merged


@api_call
def search(
    config: str | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    pack: PackSize = DEFAULT_PACK,
    timeout: float | None = None,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    artifacts: str | None = None,
    quiet: bool = False,
    budget: int | None = None,
    tolerance: float | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    profiles: Sequence[str] | None = None,
    max_depth: int | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    warm_start: Sequence[str] | None = None,
    warm_start_top: int | None = None,
    dataset: str | None = None,
    data_limit: int | None = None,
) -> SearchRun:
    """Search layer-width profiles and hyperparameters under a parameter budget (`archsearch search`).

    `config`: a study file's path or a preset's name (profiles-50k, profiles-100k); the settings from
    `budget` on override it, and one left as None keeps the study file's value (else the stored study's,
    else the default). `warm_start`: stored search studies whose best trials (`warm_start_top` of each) a
    new study runs first. The run options (`study` to `artifacts`) are RunOptions' (search/api/options.py);
    `timeout` is in seconds."""
    settings = given_settings(locals(), (*SEARCH_OPTIONS, *DATA_OPTIONS))
    run = RunOptions(study, storage, workers, pack, timeout, device, data_dir, artifacts)
    with stops_handled():
        return run_search(config, run, quiet, settings)


def run_search(
    config: str | None, run: RunOptions, quiet: bool, settings: dict, resume: list[str] | None = None
) -> SearchRun:
    """Run one search study; `resume`: the command a stop prints to resume (default this study's `search`),
    given by a caller that runs this study as part of its own (a frontier's budgets)."""
    chosen = search_config(config, run.study, run.storage, settings)
    url = chosen.storage
    study_settings = {k: v for k, v in to_dict(chosen).items() if k != "name"}
    check_new_run(url, chosen.name, "search", study_settings)
    run = dataclasses.replace(run, study=chosen.name)
    if run.workers > 1:  # what the workers will be handed reads back as given, before the first write
        worker_args(run)
    warm = plan_warm_start(url, chosen)
    # torch loads only now: a settings or storage mistake is reported without its two seconds of import.
    from search.engine.data import load_data
    from search.engine.trainer import resolve_device
    from search.study.checkpoints import artifact_store
    from search.study.objective import SearchObjective

    # Everything that can fail on bad input (device, data, artifact folder) fails before the first write.
    torch_device = resolve_device(run.device)
    data = load_data(run.data_dir, chosen.dataset, str(torch_device), limit=chosen.data_limit or None)
    if run.artifacts:
        artifact_store(run.artifacts)  # creates the folder, or says why it cannot
    opened = open_storage(url, chosen.heartbeat_seconds, chosen.grace_seconds)
    study = create_study(
        opened,
        chosen.name,
        "search",
        study_settings,
        make_sampler(chosen.sampler, chosen.seed),
        make_pruner(chosen.pruner, chosen.epochs),
    )
    queued = warm is not None and queue_warm_start(study, warm)
    folder = artifacts_dir(run.artifacts, study, url).resolve()
    objective = SearchObjective(chosen, data, folder)
    if StudyRecord.of(study).artifacts != str(folder):
        write_study(study, artifacts=str(folder))
    handed = worker_args(dataclasses.replace(run, artifacts=str(folder))) if run.workers > 1 else []
    if not quiet:
        print(
            f"study {chosen.name!r} in {describe(url)}: {chosen.trials} trials, "
            f"budget {chosen.budget} ±{chosen.tolerance:.0%}, {chosen.epochs} epochs, "
            f"{run.workers} worker(s), training on {torch_device}"
        )
        if queued:
            print(warm.summary())
    resume = resume or ["search", flag("--study", chosen.name), *resume_flags(run)]
    finished = run_study(
        study, objective, chosen.trials, resume, url, run.workers, handed, run.timeout, run.pack, opened, quiet
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    best = best_trial(study) if complete else None
    return SearchRun(
        study=chosen.name,
        storage=public_url(url),
        trials=chosen.trials,
        finished=_finished(study, chosen.trials),
        stopped_at_timeout=not finished,
        best=BestTrial.of(best, StudyRecord.of(study).settings, len(study.trials), study) if best else None,
        best_summary=summary_line(best) if best else None,
        pruned=len(pruned),
        first_pruned_reason=(TrialRecord.of(pruned[0]).pruned_reason or "pruned") if pruned else None,
        optuna_study=study,
    )


def _finished(study: optuna.Study, target: int) -> int:
    from search.study.workers import count_trials

    return min(count_trials(study).finished, target)


def grid_config(config: str | None, study: str | None, storage: str | None, settings: dict):
    """Settings over the grid file; without one, over an existing study's settings, so a bare resume works."""
    from search.study.grid import GridConfig, config_from_dict

    if config:
        base = config_from_dict(load_toml(config), config)
    else:
        name = study or GridConfig.name
        stored = stored_settings(storage_url(storage), name, "grid")
        base = config_from_dict(stored, f"study {name!r}") if stored is not None else GridConfig()
    merged = with_settings(base, settings, (*GRID_OPTIONS, *DATA_OPTIONS))
    return replace(merged, name=study, storage=storage_url(storage, base.storage))


@api_call
def grid(
    config: str | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    pack: PackSize = DEFAULT_PACK,
    timeout: float | None = None,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    quiet: bool = False,
    budgets: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    seeds: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    activation: str | None = None,
    dataset: str | None = None,
    data_limit: int | None = None,
) -> GridRun:
    """Train the uniform net (k, m_P(k)) once at every (budget, depth, seed) of a grid (`archsearch grid`).

    `config`: a grid file's path or a preset's name (ksweep); the settings from `budgets` on override it,
    and one left as None keeps the grid file's value (else the stored study's, else the default); the run
    options (`study` to `data_dir`) are RunOptions' (search/api/options.py)."""
    settings = given_settings(locals(), (*GRID_OPTIONS, *DATA_OPTIONS))
    run = RunOptions(study, storage, workers, pack, timeout, device, data_dir)
    with stops_handled():
        return _grid(config, run, quiet, settings)


def _grid(config: str | None, run: RunOptions, quiet: bool, settings: dict) -> GridRun:
    from optuna.storages import fail_stale_trials

    from search.study.grid import enqueue_missing, grid_points, make_grid_sampler, reference_baseline
    from search.study.grid import settings as grid_settings

    chosen = grid_config(config, run.study, run.storage, settings)
    url = chosen.storage
    points = grid_points(chosen)
    check_new_run(url, chosen.name, "grid", grid_settings(chosen))
    run = dataclasses.replace(run, study=chosen.name)
    handed = worker_args(run) if run.workers > 1 else []  # before any write
    from search.engine.data import load_data  # torch loads only once the settings and storage are known good
    from search.engine.trainer import resolve_device
    from search.study.grid import GridObjective

    torch_device = resolve_device(run.device)
    data = load_data(run.data_dir, chosen.dataset, str(torch_device), limit=chosen.data_limit or None)
    opened = open_storage(url, chosen.heartbeat_seconds, chosen.grace_seconds)
    study = create_study(
        opened, chosen.name, "grid", grid_settings(chosen), make_grid_sampler(chosen), optuna.pruners.NopPruner()
    )
    fail_stale_trials(study)
    queued = enqueue_missing(study, points)
    train = chosen.train
    if not quiet:
        print(
            f"grid study {chosen.name!r} in {describe(url)}: {len(chosen.budgets)} budgets x {len(chosen.depths)} "
            f"depths x {chosen.seeds} seeds = {len(points)} trials ({queued} queued now); {train.epochs} epochs of "
            f"{train.optimizer} at lr {train.lr:g}, batch {train.batch_size or 'full'}, {train.activation}; "
            f"{run.workers} worker(s), training on {torch_device}"
        )
    if StudyRecord.of(study).baseline is None:
        write_study(study, baseline=reference_baseline(data))
    resume = ["grid", flag("--study", chosen.name), *resume_flags(run)]
    objective = GridObjective(chosen, data)
    finished = run_study(
        study, objective, len(points), resume, url, run.workers, handed, run.timeout, run.pack, opened, quiet
    )
    return GridRun(
        study=chosen.name,
        storage=public_url(url),
        points=len(points),
        finished=_finished(study, len(points)),
        stopped_at_timeout=not finished,
        rows=grid_table(study.get_trials(deepcopy=False), chosen.budgets, chosen.depths),
        seeds=chosen.seeds,
        baseline=StudyRecord.of(study).baseline,
        optuna_study=study,
    )
