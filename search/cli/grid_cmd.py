"""archsearch grid: the k-sweep, the uniform net (k, m_P(k)) at every (budget, depth, seed), each once."""

from __future__ import annotations

import optuna
from optuna.storages import fail_stale_trials

from search.cli.args import storage, study_name
from search.cli.common import (
    DEFAULT_PACK,
    STORAGE_HELP,
    add_device_option,
    add_worker_options,
    run_study,
    storage_url,
)
from search.cli.options import DATA_OPTIONS, GRID_OPTIONS, add_config_options, add_data_options, apply_config_options
from search.results.tables import GridRow, grid_table
from search.study.config import load_toml, replace
from search.study.grid import (
    GridConfig,
    GridObjective,
    config_from_dict,
    enqueue_missing,
    grid_points,
    make_grid_sampler,
    reference_baseline,
    settings,
)
from search.study.lifecycle import check_new_run, create_study, stored_settings
from search.study.record import StudyRecord, write_study
from search.study.storage import describe, open_storage

HELP = "train the uniform net (k, m_P(k)) once at every (budget, depth, seed) of a grid (resumable)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="grid file (TOML), e.g. studies/ksweep.toml; flags override it")
    add_config_options(parser, GRID_OPTIONS)
    parser.add_argument(
        "--study", type=study_name, help="study name (default: the grid file's, else ksweep); resumes if it exists"
    )
    parser.add_argument("--storage", type=storage, help=STORAGE_HELP)
    add_worker_options(parser)
    add_device_option(parser)
    add_data_options(parser)


def resolve_config(args) -> GridConfig:
    """Flags over the grid file; without one, over an existing study's settings, so a bare resume works."""
    if args.config:
        base = config_from_dict(load_toml(args.config), args.config)
    else:
        name = args.study or GridConfig.name
        stored = stored_settings(storage_url(args), name, "grid")
        base = config_from_dict(stored, f"study {name!r}") if stored is not None else GridConfig()
    config = apply_config_options(base, args, (*GRID_OPTIONS, *DATA_OPTIONS))
    return replace(config, name=args.study, storage=storage_url(args, base.storage))


def run(args) -> int:
    config = resolve_config(args)
    url = config.storage
    points = grid_points(config)
    check_new_run(url, config.name, "grid", settings(config))
    from search.engine.data import load_data  # torch loads only once the settings and storage are known good
    from search.engine.trainer import resolve_device

    device = resolve_device(args.device)
    data = load_data(args.data_dir, config.dataset, str(device), limit=config.data_limit or None)
    storage = open_storage(url, config.heartbeat_seconds, config.grace_seconds)
    study = create_study(
        storage, config.name, "grid", settings(config), make_grid_sampler(config), optuna.pruners.NopPruner()
    )
    fail_stale_trials(study)
    queued = enqueue_missing(study, points)
    train = config.train
    print(
        f"grid study {config.name!r} in {describe(url)}: {len(config.budgets)} budgets x {len(config.depths)} depths x "
        f"{config.seeds} seeds = {len(points)} trials ({queued} queued now); {train.epochs} epochs of "
        f"{train.optimizer} at lr {train.lr:g}, batch {train.batch_size or 'full'}, {train.activation}; "
        f"{max(args.workers, 1)} worker(s), training on {device}"
    )
    worker_args = ["--study", config.name, "--device", args.device]
    if args.data_dir:
        worker_args += ["--data-dir", args.data_dir]
    if StudyRecord.of(study).baseline is None:
        write_study(study, baseline=reference_baseline(data))
    resume = ["grid", "--study", config.name]
    resume += ["--data-dir", args.data_dir] if args.data_dir else []
    resume += ["--workers", str(args.workers)] if args.workers > 1 else []
    resume += ["--pack", str(args.pack)] if args.pack != DEFAULT_PACK else []
    objective = GridObjective(config, data)
    if not run_study(
        study, objective, len(points), resume, url, args.workers, worker_args, args.timeout, args.pack, storage
    ):
        return 0
    print_table(
        grid_table(study.get_trials(deepcopy=False), config.budgets, config.depths),
        StudyRecord.of(study).baseline,
        config.seeds,
    )
    return 0


def print_table(rows: list[GridRow], baseline: dict, seeds: int) -> None:
    print(f"{'budget':>7} {'depth':>5} {'width':>5} {'params':>7} {'seeds':>5} {'train loss':>10} {'test acc':>8}")
    for row in rows:
        loss = f"{row.mean:.4f}" if row.seeds else "-"
        accuracy = f"{row.test_accuracy:.2%}" if row.test_accuracy is not None else "-"
        print(
            f"{row.budget:>7} {row.depth:>5} {row.width:>5} {row.params:>7} {f'{row.seeds}/{seeds}':>5} "
            f"{loss:>10} {accuracy:>8}"
        )
    print(
        f"linear baseline ({baseline['params']} params, {baseline['train_config']['epochs']} epochs of full-batch SGD "
        f"on {baseline['train_images']} images): train loss {baseline['train_loss']:.4f}, "
        f"test acc {baseline['test_accuracy']:.2%}"
    )
