"""archsearch grid: the k-sweep, the uniform net (k, m_P(k)) at every (budget, depth, seed), each once."""

from __future__ import annotations

from search import api
from search.api.options import DATA_OPTIONS, GRID_OPTIONS, GRID_RUN_OPTIONS, RUN
from search.cli.common import add_data_options, add_device_option, add_options, add_worker_options, given

HELP = "train the uniform net (k, m_P(k)) once at every (budget, depth, seed) of a grid (resumable)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="grid file (TOML) or preset name, e.g. ksweep; flags override it")
    add_options(parser, GRID_OPTIONS)
    add_options(
        parser,
        [RUN["study"], RUN["storage"]],
        study="study name (default: the grid file's, else ksweep); resumes if it exists",
    )
    add_worker_options(parser)
    add_device_option(parser)
    add_data_options(parser)


def run(args) -> int:
    done = api.grid(args.config, **given(args, (*GRID_RUN_OPTIONS, *GRID_OPTIONS, *DATA_OPTIONS)))
    if not done.stopped_at_timeout:
        print_table(done.rows, done.baseline, done.seeds)
    return 0


def print_table(rows: list[api.GridRow], baseline: dict, seeds: int) -> None:
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
