"""archsearch worker: join an existing study from any process or machine."""

from __future__ import annotations

from search import api
from search.api.args import checked_by, whole_number
from search.api.joining import check_worker_index, check_worker_trials
from search.api.options import RUN
from search.cli.common import add_data_options, add_device_option, add_options, add_storage_options

HELP = "join an existing search or grid study and run trials until it has its number of trials"


def add_arguments(parser) -> None:
    add_storage_options(parser, study_required=True)
    parser.add_argument(
        "--trials",
        type=checked_by(whole_number, check_worker_trials),
        help="finished trials wanted (default: the study's own)",
    )
    parser.add_argument(
        "--worker-index",
        type=checked_by(whole_number, check_worker_index),
        default=0,
        help="varies the sampler seed per worker",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-trial lines")
    add_options(parser, [RUN["pack"], RUN["timeout"]])
    add_device_option(parser)
    add_data_options(parser)


def run(args) -> int:
    api.worker(
        args.study,
        storage=args.storage,
        trials=args.trials,
        worker_index=args.worker_index,
        pack=args.pack,
        timeout=args.timeout,
        device=args.device,
        data_dir=args.data_dir,
        artifacts=args.artifacts,
        quiet=args.quiet,
    )
    return 0
