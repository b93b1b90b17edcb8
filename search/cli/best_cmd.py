"""archsearch best: the best trial of a study, its saved model, and an optional retrain."""

from __future__ import annotations

import json

from search import api
from search.api.args import checked_by, whole_number
from search.api.reading import check_retrain_seeds
from search.cli.common import add_data_options, add_device_option, add_json_option, add_storage_options
from search.cli.frontier_cmd import print_table

HELP = (
    "print the best trial of a study (of a frontier: each budget's winner); --export writes its model, "
    "--retrain trains it on all training data"
)


def add_arguments(parser) -> None:
    add_storage_options(parser, study_required=True)
    parser.add_argument("--export", metavar="FILE", help="write the best model (weights, widths, activation) to FILE")
    parser.add_argument("--retrain", action="store_true", help="retrain the best configuration on all 60,000 images")
    parser.add_argument(
        "--seeds",
        type=retrain_seeds,
        default=1,
        help="with --retrain: train this many times (the trial's seed and the next ones); mean and spread",
    )
    add_device_option(parser)
    add_data_options(parser)
    add_json_option(parser)


retrain_seeds = checked_by(whole_number, check_retrain_seeds)


def run(args) -> int:
    best = api.best(
        args.study,
        storage=args.storage,
        export=args.export,
        retrain=args.retrain,
        seeds=args.seeds,
        device=args.device,
        data_dir=args.data_dir,
        artifacts=args.artifacts,
        quiet=args.json,
    )
    if args.json:
        print(json.dumps(best.to_json()))
        return 0
    if isinstance(best, api.FrontierBest):
        print_table(best.name, best.rows)
        return 0
    config = best.train_config
    print(f"study {args.study!r}, best of {best.study_trials} trials: trial {best.study_trial}")
    print(f"  architecture  {best.profile} {best.widths}  ({best.params:,} parameters)")
    print(
        f"  training      {config['optimizer']} lr {config['lr']:.2e}, {config['schedule']} schedule, "
        f"batch {config['batch_size']}, weight decay {config['weight_decay']:.2e}, "
        f"dropout {config.get('dropout', 0.0):.2f}{input_dropout(config)}, {config['activation']}, "
        f"{config['epochs']} epochs"
    )
    print(f"  validation    loss {best.val_loss:.4f}  accuracy {best.val_accuracy:.2%}  (used to select)")
    print(
        f"  test          loss {best.test_loss:.4f}  accuracy {best.test_accuracy:.2%}  "
        f"(model trained on the {best.trained_on})"
    )
    if best.retrained and len(best.retrained.seeds) > 1:
        done = best.retrained
        print(
            f"  retrained     on {done.trained_on}, seeds {', '.join(map(str, done.seeds))}: test loss "
            f"{done.test_loss:.4f}  accuracy {done.test_accuracy:.2%}  error {done.test_error:.2%} ± "
            f"{done.test_error_std:.2%} (mean ± std over seeds)"
        )
    elif best.retrained:
        print(
            f"  retrained     on {best.retrained.trained_on}: test loss {best.retrained.test_loss:.4f}  "
            f"accuracy {best.retrained.test_accuracy:.2%}"
        )
    if best.exported:
        print(f"  exported      {best.exported} ({'retrained' if best.retrained else 'searched'} model)")
    return 0


def input_dropout(config: dict) -> str:
    """`, input dropout 0.20` where the winner dropped input pixels; nothing otherwise."""
    rate = config.get("input_dropout", 0.0)
    return f", input dropout {rate:.2f}" if rate else ""
