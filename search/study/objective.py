"""What one trial does: build the network, train it, report each epoch, record the scores.

The bridge to the engine: torch and the trainer load only when a trial trains, so the study layer
(and every command that only reads studies) starts without them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from models.budget import count_parameters
from search.engine.config import (  # noqa: F401 (the pack speed-ups: below)
    GRID_PACK_SPEEDUP,
    MAX_SEED,
    SEARCH_PACK_SPEEDUP,
    TrainConfig,
)
from search.study.checkpoints import artifact_store, upload_model
from search.study.config import StudyConfig
from search.study.record import write_trial
from search.study.space import suggest

if TYPE_CHECKING:
    from torch import nn

    from search.engine.data import Data
    from search.engine.packed import PackTimings
    from search.engine.trainer import EpochRecord, TrainResult

# The search's choices that trials training in one pack share (search/study/space.py names them).
PACK_PARAMS = ("depth", "profile", "activation", "optimizer", "batch_size")

# Cross-entropy over 10 classes is ln 10 = 2.3 at chance. A validation loss this far above it means the
# weights blew up (a huge learning rate) even while it is still finite, so the trainer's NaN check misses it.
DIVERGED_LOSS = 1000.0


def prune(trial: optuna.Trial, reason: str) -> optuna.TrialPruned:
    write_trial(trial, pruned_reason=reason)
    return optuna.TrialPruned(reason)


@dataclass
class Prepared:
    """A trial ready to train: its network and settings, recorded, and what records its result.

    `finish(result, model)` stores the scores (and, for a search, the best model) and returns the
    trial's value. Trials train alone (`train_alone`) or many at once (search/study/packs.py)."""

    trial: optuna.Trial
    widths: list[int]
    config: TrainConfig
    finish: Callable[[TrainResult, nn.Module], float]

    @property
    def pack_key(self) -> tuple:
        """What trials must share to train in one pack."""
        c = self.config
        return (len(self.widths), c.activation, c.optimizer, c.batch_size, c.epochs, c.momentum)


def start_trial(trial: optuna.Trial, widths: list[int], config: TrainConfig, data: Data) -> None:
    import torch

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


def epoch_reporter(trial: optuna.Trial) -> Callable[[EpochRecord], None]:
    """Reports each epoch's validation loss to the trial; raises TrialPruned to stop it."""

    def on_epoch(record: EpochRecord) -> None:
        if not record.val_loss < DIVERGED_LOSS:
            raise prune(
                trial,
                f"training diverged at epoch {record.epoch}: validation loss {record.val_loss:.4g} "
                f"is over {DIVERGED_LOSS:g} (chance level is 2.3)",
            )
        trial.report(record.val_loss, record.epoch)
        if trial.should_prune():
            raise prune(trial, f"pruner stopped it at epoch {record.epoch} (validation loss {record.val_loss:.4f})")

    return on_epoch


def build_model(widths: list[int], config: TrainConfig) -> nn.Sequential:
    """The network as training alone builds it: from the trial's seed."""
    import torch

    from models.mlp import build_mlp

    torch.manual_seed(config.seed)
    return build_mlp(widths, config.activation, dropout=config.dropout, input_dropout=config.input_dropout)


def record_result(trial: optuna.Trial, result: TrainResult) -> None:
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


def train_alone(prepared: Prepared, data: Data) -> float:
    """Train one prepared trial by itself and record it; its value."""
    from search.engine.trainer import Diverged, train

    model = build_model(prepared.widths, prepared.config)
    try:
        result = train(model, data.train, prepared.config, data.validation, data.test, epoch_reporter(prepared.trial))
    except Diverged as error:
        raise prune(prepared.trial, str(error)) from None
    record_result(prepared.trial, result)
    return prepared.finish(result, model)


def train_packed(
    group: list[Prepared],
    data: Data,
    refill: Callable[[int], list[Prepared]] | None = None,
    tell: Callable[[Prepared, float | Exception], None] | None = None,
) -> list[float | Exception]:
    """Train prepared trials of one pack key together (search/engine/packed/) and record each; per trial,
    those that joined through `refill(free)` after them included, its value or the exception that ended
    it (TrialPruned for a pruned or diverged one), which `tell` also hears as each trial ends."""
    import torch

    from search.engine.packed import Entrant, train_pack
    from search.engine.trainer import Diverged

    device = data.train.x.device
    trials = list(group)
    models: list[nn.Module] = []

    def entrant(prepared: Prepared) -> Entrant:
        model = build_model(prepared.widths, prepared.config)
        models.append(model)
        # Where training alone would draw this model's dropout masks from: the generator right after it was built.
        state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
        return Entrant(model, prepared.config, state)

    def more(free: int) -> list[Entrant]:
        joining = refill(free) if refill is not None else []
        trials.extend(joining)
        reporters.extend(epoch_reporter(prepared.trial) for prepared in joining)
        return [entrant(prepared) for prepared in joining]

    outcomes: dict[int, float | Exception] = {}

    def on_end(index: int, result: TrainResult | Exception) -> None:
        prepared, model = trials[index], models[index]
        if isinstance(result, Diverged):
            outcome: float | Exception = prune(prepared.trial, str(result))
        elif isinstance(result, Exception):
            outcome = result
        else:
            try:
                record_result(prepared.trial, result)
                outcome = prepared.finish(result, model)
            except Exception as error:  # a full disk while saving the model, say: this trial fails
                outcome = error
        outcomes[index] = outcome
        if tell is not None:
            tell(prepared, outcome)

    first = [entrant(prepared) for prepared in group]
    reporters = [epoch_reporter(prepared.trial) for prepared in group]
    train_pack(
        [e.model for e in first],
        [e.config for e in first],
        data.train,
        data.validation,
        data.test,
        lambda index, record: reporters[index](record),
        [e.dropout_state for e in first],
        refill=more,
        on_end=on_end,
    )
    return [outcomes[index] for index in range(len(trials))]


# The pack speed-ups `--pack auto` asks for (GRID_PACK_SPEEDUP, SEARCH_PACK_SPEEDUP, imported above for the
# worker loop) live in search/engine/config.py, so the engine's benchmarks read them without Optuna.

# Step timings measured in this process (search/engine/packed/sizing.py, fitting_pack_size), by kind of network.
_pack_timings: dict[tuple, PackTimings] = {}


def measured_pack_size(prepared: Prepared, data: Data, largest: int, speedup: float) -> int:
    """The pack size for this trial's network here, at most `largest`: 1 unless a pack trains its members at
    least `speedup` times as fast as alone. Timed once per process for each depth, size class (parameters
    within a factor of 2^(1/4)), use of dropout and settings a pack shares."""
    config = prepared.config
    kind = (
        prepared.pack_key,
        round(4 * math.log2(count_parameters(prepared.widths))),
        config.dropout > 0,
        config.input_dropout > 0,
        str(data.train.x.device),
        len(data.train),
        largest,
    )
    if kind not in _pack_timings:
        from search.engine.packed import fitting_pack_size

        model = build_model(prepared.widths, config)
        _pack_timings[kind] = fitting_pack_size(model, config, data.train, largest)
    return _pack_timings[kind].size(speedup)


def trial_seed(seed: int, number: int) -> int:
    """A search trial's seed: the study's seed plus its number, wrapped at MAX_SEED as the samplers' seeds
    are, so a study seeded near MAX_SEED has valid seeds for every trial (and every trial a worker runs)."""
    return (seed + number) % (MAX_SEED + 1)


class SearchObjective:
    """Profile search: validation loss of a sampled architecture within the budget."""

    def __init__(self, config: StudyConfig, data: Data, artifacts: str | Path):
        self.config = config
        self.data = data
        self.store = artifact_store(artifacts)

    def __call__(self, trial: optuna.Trial) -> float:
        return train_alone(self.prepare(trial), self.data)

    def prepare(self, trial: optuna.Trial) -> Prepared:
        """Sample the trial's network and settings and record them; TrialPruned if no widths fit."""
        config = self.config
        candidate = suggest(
            trial, config.space, config.budget, config.tolerance, config.epochs, trial_seed(config.seed, trial.number)
        )
        write_trial(trial, profile=candidate.profile, weight_decay=candidate.train.weight_decay)
        if candidate.widths is None:
            raise prune(
                trial,
                f"no integer widths for a {candidate.depth}-layer {candidate.profile} profile come within "
                f"{config.tolerance:.1%} of {config.budget} parameters",
            )
        start_trial(trial, candidate.widths, candidate.train, self.data)

        def finish(result: TrainResult, model: nn.Module) -> float:
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

        return Prepared(trial, candidate.widths, candidate.train, finish)

    @staticmethod
    def shared_params(trial: optuna.Trial) -> dict:
        """The choices that the other trials of a pack take from its first: the rest they sample."""
        return {name: trial.params[name] for name in PACK_PARAMS if name in trial.params}

    @staticmethod
    def _is_best(trial: optuna.Trial, value: float) -> bool:
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return all(value < t.value for t in done if t.value is not None and math.isfinite(t.value))
