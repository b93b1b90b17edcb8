"""What one trial does: build the network, train it, report each epoch, record the scores.

The bridge to the engine: torch and the trainer load only when a trial trains, so the study layer
(and every command that only reads studies) starts without them."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from models.budget import count_parameters
from search.engine.config import TrainConfig
from search.study.checkpoints import artifact_store, upload_model
from search.study.config import StudyConfig
from search.study.record import write_trial
from search.study.space import suggest

if TYPE_CHECKING:
    from torch import nn

    from search.engine.data import Data
    from search.engine.trainer import TrainResult

# Cross-entropy over 10 classes is ln 10 = 2.3 at chance. A validation loss this far above it means the
# weights blew up (a huge learning rate) even while it is still finite, so the trainer's NaN check misses it.
DIVERGED_LOSS = 1000.0


def prune(trial: optuna.Trial, reason: str) -> optuna.TrialPruned:
    write_trial(trial, pruned_reason=reason)
    return optuna.TrialPruned(reason)


def train_trial(
    trial: optuna.Trial, widths: list[int], config: TrainConfig, data: Data
) -> tuple[TrainResult, nn.Module]:
    """Train and score one network, reporting validation loss each epoch for pruning and curves."""
    import torch

    from models.mlp import build_mlp
    from search.engine.trainer import Diverged, train

    write_trial(
        trial,
        widths=tuple(widths),
        params=count_parameters(widths),
        seed=config.seed,
        train_config=asdict(config),
        train_images=len(data.train),
        validation_images=len(data.validation),
        torch_version=torch.__version__,
    )
    torch.manual_seed(config.seed)
    model = build_mlp(widths, config.activation, dropout=config.dropout)

    def on_epoch(record) -> None:
        if not record.val_loss < DIVERGED_LOSS:
            raise prune(
                trial,
                f"training diverged at epoch {record.epoch}: validation loss {record.val_loss:.4g} "
                f"is over {DIVERGED_LOSS:g} (chance level is 2.3)",
            )
        trial.report(record.val_loss, record.epoch)
        if trial.should_prune():
            raise prune(trial, f"pruner stopped it at epoch {record.epoch} (validation loss {record.val_loss:.4f})")

    try:
        result = train(model, data.train, config, data.validation, data.test, on_epoch)
    except Diverged as error:
        raise prune(trial, str(error)) from None
    write_trial(
        trial,
        device=result.device,
        epoch_seconds=tuple(round(r.seconds, 4) for r in result.history),
        val_accuracy_curve=tuple(r.val_accuracy for r in result.history),
        train_loss=result.train.loss,
        train_accuracy=result.train.accuracy,
        val_loss=result.validation.loss,
        val_accuracy=result.validation.accuracy,
        test_loss=result.test.loss,
        test_accuracy=result.test.accuracy,
    )
    return result, model


class SearchObjective:
    """Profile search: validation loss of a sampled architecture within the budget."""

    def __init__(self, config: StudyConfig, data: Data, artifacts: str | Path):
        self.config = config
        self.data = data
        self.store = artifact_store(artifacts)

    def __call__(self, trial: optuna.Trial) -> float:
        config = self.config
        candidate = suggest(
            trial, config.space, config.budget, config.tolerance, config.epochs, config.seed + trial.number
        )
        write_trial(trial, profile=candidate.profile, weight_decay=candidate.train.weight_decay)
        if candidate.widths is None:
            raise prune(
                trial,
                f"no integer widths for a {candidate.depth}-layer {candidate.profile} profile come within "
                f"{config.tolerance:.1%} of {config.budget} parameters",
            )
        result, model = train_trial(trial, candidate.widths, candidate.train, self.data)
        value = result.validation.loss
        if self._is_best(trial, value):
            metadata = {
                "study": trial.study.study_name,
                "trial": trial.number,
                "profile": candidate.profile,
                "params": count_parameters(candidate.widths),
                "train_config": asdict(candidate.train),
                "trained_on": f"train split ({len(self.data.train)} images)",
                "val_loss": value,
                "test_accuracy": result.test.accuracy,
            }
            upload_model(trial, self.store, model, candidate.train.activation, metadata)
        return value

    @staticmethod
    def _is_best(trial: optuna.Trial, value: float) -> bool:
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return all(value < t.value for t in done if t.value is not None and math.isfinite(t.value))
