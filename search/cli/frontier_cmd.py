"""archsearch frontier: the best network at every budget, retrained and tested, against the classic MLPs."""

from __future__ import annotations

import sys
from functools import partial

from search import api
from search.api.args import DEFAULT_FRONTIER_POINTS, budget_spec, checked_by, whole_number
from search.api.frontier import DEFAULT_FRONTIER, DEFAULT_SEEDS, check_frontier_budgets
from search.api.options import DATA_OPTIONS, FRONTIER_OPTIONS, RUN_OPTIONS
from search.api.outputs import FORMATS, check_output_folder, default_folder, write_figure
from search.api.reading import check_retrain_seeds
from search.cli.common import (
    add_data_options,
    add_device_option,
    add_options,
    add_storage_options,
    add_worker_options,
    formats,
    given,
)
from search.errors import printable

HELP = "search a range of budgets (one study per budget), retrain each winner with several seeds, plot the frontier"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="study file (TOML) or preset name for every budget; flags override it")
    parser.add_argument(
        "--budgets",
        type=partial(budget_spec, check=check_frontier_budgets),
        required=True,
        help=f"LOW:HIGH ({DEFAULT_FRONTIER_POINTS} log-spaced budgets), LOW:HIGH:COUNT, or a list 10000,50000,100000",
    )
    parser.add_argument(
        "--seeds",
        type=checked_by(whole_number, check_retrain_seeds),
        default=DEFAULT_SEEDS,
        help=f"seeds each winner is retrained with on all training images (default {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="search every budget cold (default: each budget starts from the best trials of the nearest budget below)",
    )
    parser.add_argument("--out", help="folder for the frontier's plot (default exports/NAME)")
    parser.add_argument("--format", type=formats, default=list(FORMATS), help="html, png or html,png (default)")
    add_options(parser, FRONTIER_OPTIONS)
    add_storage_options(parser)
    add_worker_options(parser)
    add_device_option(parser)
    add_data_options(parser)


def run(args) -> int:
    out = args.out or default_folder(args.study or DEFAULT_FRONTIER)
    check_output_folder(out)
    done = api.frontier(
        args.config,
        budgets=args.budgets,
        seeds=args.seeds,
        warm_start=args.warm_start,
        **given(args, (*RUN_OPTIONS, *FRONTIER_OPTIONS, *DATA_OPTIONS)),
    )
    print_table(done.name, done.rows)
    written, problem = write_figure(done.plot, out, args.format)
    if problem:
        print(f"archsearch: {printable(problem)}", file=sys.stderr)
    if done.figure is not None:
        print(f"frontier plot: {', '.join(str(path) for path in written)}")
    return 0


def print_table(name: str, rows: list[api.FrontierRow]) -> None:
    """One line per budget: the winner, its validation loss and its retrained test error (`frontier`, `best`)."""
    print(f"frontier {name!r}: best by validation loss at each budget, retrained on all training images")
    print(
        f"{'budget':>8} {'params':>8} {'trials':>6}  {'winner':<36} {'val loss':>8}  {'test error (mean ± std)':<32}"
        "  warm start"
    )
    for row in rows:
        winner = f"{row.profile} {list(row.widths)}" if row.widths else "-"
        loss = f"{row.val_loss:.4f}" if row.val_loss is not None else "-"
        error = "not retrained" if row.widths else "-"
        if row.retrained is not None:
            done_seeds = len(row.retrained.seeds)
            error = f"{row.retrained.test_error:.2%} ± {row.retrained.test_error_std:.2%} ({done_seeds} seeds)"
        warm = f"from {row.warm_start}" if row.warm_start else "-"
        print(f"{row.budget:>8} {row.params or '-':>8} {row.trials:>6}  {winner:<36} {loss:>8}  {error:<32}  {warm}")
