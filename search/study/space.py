"""Every `trial.suggest_*` of the profile search, and nothing else.

The space is fixed-length: all parameters are suggested in every trial (relative widths for the
deepest network, a taper even for uniform profiles), so multivariate TPE sees one static space
and never falls back to independent sampling. Input dropout is suggested in every trial of a study
whose space gives it a range, and in none of one whose range is (0, 0), the default: studies made
before it was searched keep their space.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from models.profiles import profile_widths
from search.engine.config import TrainConfig
from search.study.config import SearchSpace


@dataclass(frozen=True)
class Candidate:
    """One sampled architecture and its training hyperparameters."""

    profile: str
    depth: int
    widths: list[int] | None
    train: TrainConfig


def suggest(
    trial: optuna.Trial, space: SearchSpace, budget: int, tolerance: float, epochs: int, seed: int
) -> Candidate:
    depth = trial.suggest_int("depth", 1, space.max_depth)
    profile = trial.suggest_categorical("profile", list(space.profiles))
    taper = trial.suggest_float("taper", *space.taper)
    free = [trial.suggest_float(f"relative_width_{i}", *space.free_width) for i in range(space.max_depth)]
    decay_choices = [True, False] if space.allow_zero_weight_decay else [True]
    use_decay = trial.suggest_categorical("use_weight_decay", decay_choices)
    decay = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    train = TrainConfig(
        epochs=epochs,
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_sizes)),
        optimizer=trial.suggest_categorical("optimizer", list(space.optimizers)),
        lr=trial.suggest_float("lr", *space.lr, log=True),
        momentum=0.9,
        weight_decay=decay if use_decay else 0.0,
        dropout=trial.suggest_float("dropout", *space.dropout),
        input_dropout=trial.suggest_float("input_dropout", *space.input_dropout) if any(space.input_dropout) else 0.0,
        schedule=trial.suggest_categorical("schedule", list(space.schedules)),
        activation=trial.suggest_categorical("activation", list(space.activations)),
        seed=seed,
    )
    widths = profile_widths(profile, depth, budget, tolerance, taper, free)
    return Candidate(profile, depth, widths, train)
