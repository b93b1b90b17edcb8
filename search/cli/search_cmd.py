"""archsearch search: an Optuna study of layer-width profiles under a parameter budget."""

from __future__ import annotations

import shlex

from search import api
from search.api.handover import flag
from search.api.options import DATA_OPTIONS, RUN_OPTIONS, SEARCH_OPTIONS
from search.cli.common import (
    add_data_options,
    add_device_option,
    add_options,
    add_storage_options,
    add_worker_options,
    given,
)

HELP = "search layer-width profiles and hyperparameters under a parameter budget (resumable)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="study file (TOML) or preset name, e.g. profiles-50k; flags override it")
    add_options(parser, SEARCH_OPTIONS)
    add_storage_options(parser)
    add_worker_options(parser)
    add_device_option(parser)
    add_data_options(parser)


def run(args) -> int:
    done = api.search(args.config, **given(args, (*RUN_OPTIONS, *SEARCH_OPTIONS, *DATA_OPTIONS)))
    if done.stopped_at_timeout:
        return 0
    if done.best is None:  # every trial was pruned (diverged, or too far from the budget): say why, not "resume"
        reason = done.first_pruned_reason or "none finished"
        print(f"best: none; all {done.pruned} finished trials were pruned (first: {reason}); change the search space")
        return 0
    print(f"best: {done.best_summary}")
    print(
        f"      test loss {done.best.test_loss:.4f}, test accuracy {done.best.test_accuracy:.2%} "
        "(for information; selection used validation). "
        f"Details: {shlex.join(['archsearch', 'best', flag('--study', done.study), flag('--storage', done.storage)])}"
    )
    return 0
