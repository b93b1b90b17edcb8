"""archsearch report: one HTML page answering the original study's questions from every stored study."""

from __future__ import annotations

from search import api
from search.api.args import checked_by, whole_numbers
from search.api.basics import check_init_seeds
from search.api.options import BASELINE, RUN
from search.api.reading import HOW_TO_MEASURE, INIT_FILE
from search.cli.common import add_data_options, add_device_option, add_options

HELP = "write report.html: the answers to the original study's questions, from all studies in the storage"


def add_arguments(parser) -> None:
    add_options(parser, [RUN["storage"]])
    parser.add_argument("--out", default="report", help="output folder (default report/)")
    parser.add_argument(
        "--init-json",
        metavar="FILE",
        help="initialization study as printed by `archsearch baseline --init-study --json`",
    )
    parser.add_argument(
        "--init-study",
        action="store_true",
        help=f"run the initialization study now and keep it as OUT/{INIT_FILE} for later reports",
    )
    parser.add_argument(
        "--init-epochs", type=BASELINE["epochs"].read, help="epochs per run of --init-study (default: baseline's)"
    )
    parser.add_argument(
        "--seeds", type=checked_by(whole_numbers, check_init_seeds), help="seeds of --init-study (default: baseline's)"
    )
    add_device_option(parser)
    add_data_options(parser)


def run(args) -> int:
    done = api.report(
        storage=args.storage,
        out=args.out,
        init_json=args.init_json,
        init_study=args.init_study,
        init_epochs=args.init_epochs,
        seeds=args.seeds,
        device=args.device,
        data_dir=args.data_dir,
        dataset=args.dataset,
        data_limit=args.data_limit,
    )
    print(f"wrote {done.path} from {done.grids} grid and {done.searches} search studies in {done.storage}")
    if not done.init_answered:
        print("the initialization question is unanswered: " + HOW_TO_MEASURE)
    return 0
