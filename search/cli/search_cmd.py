"""archsearch search: an Optuna study of layer-width profiles under a parameter budget."""

from __future__ import annotations

import shlex

from optuna.trial import TrialState

from models.budget import depth_range
from search.cli.common import (
    DEFAULT_PACK,
    add_device_option,
    add_storage_options,
    add_worker_options,
    artifacts_dir,
    run_study,
    storage_url,
    summary_line,
)
from search.cli.options import DATA_OPTIONS, SEARCH_OPTIONS, add_config_options, add_data_options, apply_config_options
from search.errors import UsageError
from search.study.config import StudyConfig, load_toml, replace, study_from_dict, to_dict
from search.study.lifecycle import best_trial, check_new_run, create_study, make_pruner, make_sampler, stored_settings
from search.study.record import StudyRecord, TrialRecord, write_study
from search.study.storage import describe, open_storage, public_url

HELP = "search layer-width profiles and hyperparameters under a parameter budget (resumable)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="study file (TOML), e.g. studies/profiles-50k.toml; flags override it")
    add_config_options(parser, SEARCH_OPTIONS)
    add_storage_options(parser)
    add_worker_options(parser)
    add_device_option(parser)
    add_data_options(parser)


def resolve_config(args) -> StudyConfig:
    """Flags over the study file; without one, over an existing study's settings, so a bare resume works."""
    if args.config:
        base = study_from_dict(load_toml(args.config), args.config)
    else:
        stored = stored_settings(storage_url(args), args.study, "search") if args.study else None
        base = study_from_dict(stored, f"study {args.study!r}") if stored is not None else StudyConfig(name="")
    config = apply_config_options(base, args, (*SEARCH_OPTIONS, *DATA_OPTIONS))
    config = replace(config, storage=storage_url(args, base.storage), name=args.study)
    if not config.name:
        config = replace(config, name=f"profiles-{config.budget}")
    deepest = depth_range(config.budget)[1]
    if config.space.max_depth > deepest:
        raise UsageError(
            f"budget {config.budget} cannot hold {config.space.max_depth} hidden layers; lower --max-depth "
            f"to at most {deepest} or raise --budget"
        )
    return config


def run(args) -> int:
    config = resolve_config(args)
    url = config.storage
    study_settings = {k: v for k, v in to_dict(config).items() if k != "name"}
    check_new_run(url, config.name, "search", study_settings)
    # torch loads only now: a settings or storage mistake is reported without its two seconds of import.
    from search.engine.data import load_data
    from search.engine.trainer import resolve_device
    from search.study.checkpoints import artifact_store
    from search.study.objective import SearchObjective

    # Everything that can fail on bad input (device, data, artifact folder) fails before the first write.
    device = resolve_device(args.device)
    data = load_data(args.data_dir, config.dataset, str(device), limit=config.data_limit or None)
    if args.artifacts:
        artifact_store(args.artifacts)  # creates the folder, or says why it cannot
    storage = open_storage(url, config.heartbeat_seconds, config.grace_seconds)
    study = create_study(
        storage,
        config.name,
        "search",
        study_settings,
        make_sampler(config.sampler, config.seed),
        make_pruner(config.pruner, config.epochs),
    )
    artifacts = artifacts_dir(args, study, url).resolve()
    objective = SearchObjective(config, data, artifacts)
    if StudyRecord.of(study).artifacts != str(artifacts):
        write_study(study, artifacts=str(artifacts))
    worker_args = ["--study", config.name, "--artifacts", str(artifacts), "--device", args.device]
    if args.data_dir:
        worker_args += ["--data-dir", args.data_dir]
    print(
        f"study {config.name!r} in {describe(url)}: {config.trials} trials, "
        f"budget {config.budget} ±{config.tolerance:.0%}, {config.epochs} epochs, "
        f"{max(args.workers, 1)} worker(s), training on {device}"
    )
    resume = ["search", "--study", config.name, *_resume_flags(args)]
    if not run_study(
        study, objective, config.trials, resume, url, args.workers, worker_args, args.timeout, args.pack, storage
    ):
        return 0
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:  # every trial was pruned (diverged, or too far from the budget): say why, not "resume"
        pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        reason = TrialRecord.of(pruned[0]).pruned_reason or "pruned" if pruned else "none finished"
        print(f"best: none; all {len(pruned)} finished trials were pruned (first: {reason}); change the search space")
        return 0
    best = best_trial(study)
    print(f"best: {summary_line(best)}")
    print(
        f"      test loss {TrialRecord.of(best).test_loss:.4f}, test accuracy {TrialRecord.of(best).test_accuracy:.2%} "
        "(for information; selection used validation). "
        f"Details: {shlex.join(['archsearch', 'best', '--study', config.name, '--storage', public_url(url)])}"
    )
    return 0


def _resume_flags(args) -> list[str]:
    """The flags of this run that the stored study does not remember."""
    flags = []
    for flag, value in (
        ("--workers", args.workers if args.workers > 1 else None),
        ("--pack", args.pack if args.pack != DEFAULT_PACK else None),
        ("--data-dir", args.data_dir),
    ):
        if value is not None:
            flags += [flag, str(value)]
    return flags + (["--device", args.device] if args.device != "auto" else [])
