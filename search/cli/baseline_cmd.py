"""archsearch baseline: the linear softmax model of the original study."""

from __future__ import annotations

import json
from dataclasses import asdict

from models.budget import CLASSES, INPUTS, LINEAR_MODEL, LINEAR_PARAMETERS
from models.catalog import INIT_NAMES, Init
from search.cli.args import (
    add_json_option,
    batch_size,
    epoch_count,
    finite_float,
    positive_float,
    seed,
    seed_list,
)
from search.cli.options import add_data_options
from search.cli.progress import progress
from search.engine.config import BASELINE_TRAIN, DEVICES, TrainConfig
from search.errors import UsageError

HELP = f"train the linear softmax baseline ({INPUTS} -> {CLASSES}) with full-batch SGD, or compare initializations"


def add_arguments(parser) -> None:
    parser.add_argument("--lr", type=positive_float, default=BASELINE_TRAIN.lr)
    parser.add_argument("--epochs", type=epoch_count, default=BASELINE_TRAIN.epochs)
    parser.add_argument(
        "--batch-size", type=batch_size, default=BASELINE_TRAIN.batch_size, help="'full' (default) or a mini-batch size"
    )
    parser.add_argument("--init", choices=INIT_NAMES, default="default")
    parser.add_argument("--init-value", type=finite_float, default=0.0, help="std for normal, value for constant")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--init-study", action="store_true", help="compare several initializations over several seeds")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="seeds for --init-study (default 0,1,2)")
    add_data_options(parser)
    add_json_option(parser)


def run(args) -> int:
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=args.lr, seed=args.seed, device=args.device
    )
    if args.init == "normal" and not args.init_value > 0:
        raise UsageError("--init normal needs --init-value, the standard deviation, above 0 (e.g. 0.01)")
    from search.engine.baseline import run_baseline  # torch loads only once the options are known good
    from search.engine.data import load_data
    from search.engine.trainer import resolve_device

    device = resolve_device(config.device)
    data = load_data(args.data_dir, args.dataset or "mnist", str(device), limit=args.data_limit)
    if args.init_study:
        return _init_study(args, config, data)
    with progress(config.epochs, "baseline", args.json) as bar:
        result = run_baseline(data, config, Init(args.init, args.init_value), _advance(bar))
    summary = {
        "model": LINEAR_MODEL,
        "parameters": LINEAR_PARAMETERS,
        "init": Init(args.init, args.init_value).label(),
        "config": asdict(config),
        "device": result.device,
        "train_loss": result.train.loss,
        "test_loss": result.test.loss,
        "train_accuracy": result.train.accuracy,
        "test_accuracy": result.test.accuracy,
        "seconds": result.seconds,
        "history_train_loss": [r.train_loss for r in result.history],
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{LINEAR_MODEL} ({LINEAR_PARAMETERS:,} parameters), {config.epochs} epochs of SGD at lr {config.lr}, "
        f"{'full batch' if not config.batch_size else f'batch {config.batch_size}'}, "
        f"init {summary['init']}, {result.device}"
    )
    print(
        f"train loss {result.train.loss:.4f}  test loss {result.test.loss:.4f}  "
        f"train accuracy {result.train.accuracy:.2%}  test accuracy {result.test.accuracy:.2%}  "
        f"({result.seconds:.1f} s)"
    )
    print("original study: train loss 0.4321  test loss 0.4120  train accuracy 88.55%  test accuracy 89.17%")
    return 0


def _advance(bar):
    def on_epoch(record):
        bar.update(1)
        bar.set_postfix(loss=f"{record.train_loss:.4f}")

    return on_epoch


def _init_study(args, config, data) -> int:
    from search.engine.baseline import INIT_STUDY_INITS, conclude, init_study

    runs = len(INIT_STUDY_INITS) * len(args.seeds)
    with progress(runs * config.epochs, "init study", args.json) as bar:
        outcomes = init_study(data, config, args.seeds, on_epoch=_advance(bar))
    conclusion = conclude(outcomes)
    if args.json:
        print(
            json.dumps({"config": asdict(config), "outcomes": [asdict(o) for o in outcomes], "conclusion": conclusion})
        )
        return 0
    print(f"{len(args.seeds)} seeds each, {config.epochs} epochs of full-batch SGD at lr {config.lr}")
    print(f"{'init':<16} {'train loss':>14} {'test loss':>10} {'train acc':>10} {'test acc':>9}")
    for o in outcomes:
        print(
            f"{o.init:<16} {o.mean('train_loss'):>8.4f}±{o.spread('train_loss') / 2:.4f} {o.mean('test_loss'):>10.4f} "
            f"{o.mean('train_accuracy'):>10.2%} {o.mean('test_accuracy'):>9.2%}"
        )
    print(conclusion)
    return 0
