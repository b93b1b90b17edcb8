"""archsearch best: the best trial of a study, its saved model, and an optional retrain."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from search.cli.args import add_json_option
from search.cli.common import add_device_option, add_storage_options, artifacts_dir, storage_url
from search.cli.options import add_data_options
from search.cli.progress import progress
from search.engine.config import TrainConfig
from search.errors import UsageError
from search.study.lifecycle import best_trial, load_study
from search.study.record import StudyRecord, TrialRecord, split_sizes
from search.study.storage import open_storage

HELP = "print the best trial of a study; --export writes its model, --retrain trains it on all training data"


def add_arguments(parser) -> None:
    add_storage_options(parser, study_required=True)
    parser.add_argument("--export", metavar="FILE", help="write the best model (weights, widths, activation) to FILE")
    parser.add_argument("--retrain", action="store_true", help="retrain the best configuration on all 60,000 images")
    add_device_option(parser)
    add_data_options(parser)
    add_json_option(parser)


def describe_trial(trial, settings: dict) -> dict:
    record = TrialRecord.of(trial)
    train, validation = split_sizes(record, settings)
    return {
        "study_trial": trial.number,
        "profile": record.profile,
        "widths": list(record.widths),
        "params": record.params,
        "train_config": record.train_config,
        "objective": trial.value,
        "val_loss": record.val_loss,
        "val_accuracy": record.val_accuracy,
        "test_loss": record.test_loss,
        "test_accuracy": record.test_accuracy,
        "trained_on": f"train split ({train:,} images; {validation:,} held out for validation)",
    }


def run(args) -> int:
    url = storage_url(args)
    storage = open_storage(url, read_only=True)
    study = load_study(storage, args.study)
    kind = StudyRecord.of(study).kind
    if kind not in ("search", "grid"):
        raise UsageError(
            f"study {args.study!r} was not made by archsearch (kind {kind!r}); it has no best model to show"
        )
    trial = best_trial(study)
    summary = describe_trial(trial, StudyRecord.of(study).settings)
    if args.export:
        check_export_target(Path(args.export))
    if args.retrain:
        summary["retrained"] = _retrain(args, study, summary)
    if args.export:
        if args.retrain:
            _export_retrained(args.export, summary)
        else:
            from search.study.checkpoints import download_model

            download_model(storage, study, trial, artifacts_dir(args, study, url), args.export)
        summary["exported"] = str(Path(args.export).resolve())
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "retrained"} | _public_retrain(summary)))
        return 0
    config = summary["train_config"]
    print(f"study {study.study_name!r}, best of {len(study.trials)} trials: trial {trial.number}")
    print(f"  architecture  {summary['profile']} {summary['widths']}  ({summary['params']:,} parameters)")
    print(
        f"  training      {config['optimizer']} lr {config['lr']:.2e}, {config['schedule']} schedule, "
        f"batch {config['batch_size']}, weight decay {config['weight_decay']:.2e}, "
        f"dropout {config.get('dropout', 0.0):.2f}, {config['activation']}, {config['epochs']} epochs"
    )
    print(f"  validation    loss {summary['val_loss']:.4f}  accuracy {summary['val_accuracy']:.2%}  (used to select)")
    print(
        f"  test          loss {summary['test_loss']:.4f}  accuracy {summary['test_accuracy']:.2%}  "
        f"(model trained on the {summary['trained_on']})"
    )
    if args.retrain:
        retrained = summary["retrained"]
        print(
            f"  retrained     on {retrained['trained_on']}: test loss {retrained['test_loss']:.4f}  "
            f"accuracy {retrained['test_accuracy']:.2%}"
        )
    if args.export:
        print(f"  exported      {summary['exported']} ({'retrained' if args.retrain else 'searched'} model)")
    return 0


def check_export_target(target: Path) -> None:
    """The model goes to a new file or replaces a regular one; never through a link or onto a device."""
    if target.is_symlink():
        raise UsageError(f"{target} is a symbolic link; give the path of a regular file to write the model to")
    if target.exists() and not target.is_file():
        raise UsageError(f"{target} exists and is not a regular file; give a new file name for the model")
    if not target.resolve().parent.is_dir():
        raise UsageError(f"cannot write {target}: its folder does not exist")


def _public_retrain(summary: dict) -> dict:
    if "retrained" not in summary:
        return {}
    return {"retrained": {k: v for k, v in summary["retrained"].items() if k != "model"}}


def _retrain(args, study, summary) -> dict:
    import torch

    from models.mlp import build_mlp
    from search.engine.data import load_data
    from search.engine.trainer import resolve_device, train

    stored = StudyRecord.of(study).settings
    config = TrainConfig(**{**summary["train_config"], "device": args.device})
    device = resolve_device(args.device)
    data = load_data(args.data_dir, stored.get("dataset", "mnist"), str(device), limit=stored.get("data_limit") or None)
    torch.manual_seed(config.seed)
    model = build_mlp(summary["widths"], config.activation, dropout=config.dropout)
    with progress(config.epochs, "retrain", args.json) as bar:
        result = train(model, data.train_full, config, test=data.test, on_epoch=lambda r: bar.update(1))
    return {
        "trained_on": f"all {len(data.train_full):,} training images",
        "train_loss": result.train.loss,
        "test_loss": result.test.loss,
        "test_accuracy": result.test.accuracy,
        "model": model,
    }


def _export_retrained(path: str, summary: dict) -> None:
    from models.mlp import save_model

    retrained = summary["retrained"]
    metadata = {k: v for k, v in summary.items() if k not in ("retrained", "train_config")}
    metadata |= {"trained_on": retrained["trained_on"], "test_accuracy": retrained["test_accuracy"]}
    target = Path(path)
    with tempfile.TemporaryDirectory(dir=target.resolve().parent) as folder:
        staged = Path(folder) / "model.pt"
        save_model(retrained["model"], summary["train_config"]["activation"], staged, {"metadata": metadata})
        staged.replace(target)
