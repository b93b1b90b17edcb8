"""archsearch baseline: the linear softmax model of the original study."""

from __future__ import annotations

import json
from dataclasses import asdict

from models.budget import CLASSES, INPUTS
from models.catalog import INIT_NAMES
from search import api
from search.api.args import checked_by, finite_float, whole_numbers
from search.api.basics import INIT_STUDY_SEEDS, check_init_seeds
from search.api.options import BASELINE_OPTIONS, BASELINE_SEED
from search.cli.common import add_data_options, add_device_option, add_json_option, add_options, given

HELP = f"train the linear softmax baseline ({INPUTS} -> {CLASSES}) with full-batch SGD, or compare initializations"


def add_arguments(parser) -> None:
    add_options(parser, BASELINE_OPTIONS)
    parser.add_argument("--init", choices=INIT_NAMES, default="default")
    parser.add_argument("--init-value", type=finite_float, default=0.0, help="std for normal, value for constant")
    add_options(parser, [BASELINE_SEED])
    add_device_option(parser)
    parser.add_argument("--init-study", action="store_true", help="compare several initializations over several seeds")
    parser.add_argument(
        "--seeds",
        type=checked_by(whole_numbers, check_init_seeds),
        default=INIT_STUDY_SEEDS,
        help=f"seeds for --init-study (default {','.join(map(str, INIT_STUDY_SEEDS))})",
    )
    add_data_options(parser)
    add_json_option(parser)


def run(args) -> int:
    common = {
        **given(args, BASELINE_OPTIONS),
        "device": args.device,
        "data_dir": args.data_dir,
        "dataset": args.dataset,
        "data_limit": args.data_limit,
        "quiet": args.json,
    }
    if args.init_study:
        return _init_study(api.init_study(seeds=args.seeds, **common), args)
    result = api.baseline(init=args.init, init_value=args.init_value, **given(args, [BASELINE_SEED]), **common)
    if args.json:
        print(json.dumps(asdict(result)))
        return 0
    config = result.config
    print(
        f"{result.model} ({result.parameters:,} parameters), {config['epochs']} epochs of SGD at lr {config['lr']}, "
        f"{'full batch' if not config['batch_size'] else 'batch ' + str(config['batch_size'])}, "
        f"init {result.init}, {result.device}"
    )
    print(
        f"train loss {result.train_loss:.4f}  test loss {result.test_loss:.4f}  "
        f"train accuracy {result.train_accuracy:.2%}  test accuracy {result.test_accuracy:.2%}  "
        f"({result.seconds:.1f} s)"
    )
    print("original study: train loss 0.4321  test loss 0.4120  train accuracy 88.55%  test accuracy 89.17%")
    return 0


def _init_study(study: api.InitStudy, args) -> int:
    if args.json:
        print(
            json.dumps(
                {
                    "config": study.config,
                    "outcomes": [asdict(o) for o in study.outcomes],
                    "conclusion": study.conclusion,
                }
            )
        )
        return 0
    config = study.config
    print(f"{len(args.seeds)} seeds each, {config['epochs']} epochs of full-batch SGD at lr {config['lr']}")
    print(f"{'init':<16} {'train loss':>14} {'test loss':>10} {'train acc':>10} {'test acc':>9}")
    for o in study.outcomes:
        print(
            f"{o.init:<16} {o.mean('train_loss'):>8.4f}±{o.spread('train_loss') / 2:.4f} {o.mean('test_loss'):>10.4f} "
            f"{o.mean('train_accuracy'):>10.2%} {o.mean('test_accuracy'):>9.2%}"
        )
    print(study.conclusion)
    return 0
