"""The linear softmax baseline of the original study, and its initialization question."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.catalog import Init
from search.engine.config import TrainConfig

if TYPE_CHECKING:  # torch loads only when a model trains, so reading results (the report) stays light
    from search.engine.data import Data
    from search.engine.trainer import EpochRecord, TrainResult

INIT_STUDY_INITS = (
    Init("default"),
    Init("zeros"),
    Init("normal", 0.01),
    Init("normal", 1.0),
    Init("constant", 1.0),
    Init("constant", 1000.0),
)


def run_baseline(
    data: Data, config: TrainConfig, init: Init = Init(), on_epoch: Callable[[EpochRecord], None] | None = None
) -> TrainResult:
    """Train on all 60,000 training images and score on the test set, as the study did."""
    import torch

    from models.mlp import build_mlp
    from search.engine.trainer import train

    torch.manual_seed(config.seed)
    model = build_mlp([], init=init)
    return train(model, data.train_full, config, test=data.test, on_epoch=on_epoch)


@dataclass
class InitOutcome:
    init: str
    seeds: list[int]
    train_loss: list[float]
    test_loss: list[float]
    train_accuracy: list[float]
    test_accuracy: list[float]

    def mean(self, name: str) -> float:
        return statistics.fmean(getattr(self, name))

    def spread(self, name: str) -> float:
        values = getattr(self, name)
        return max(values) - min(values)


def init_study(
    data: Data,
    config: TrainConfig,
    seeds: Sequence[int],
    inits: Sequence[Init] = INIT_STUDY_INITS,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> list[InitOutcome]:
    outcomes = []
    for init in inits:
        outcome = InitOutcome(init.label(), list(seeds), [], [], [], [])
        for seed in seeds:
            result = run_baseline(data, dataclasses.replace(config, seed=seed), init, on_epoch)
            outcome.train_loss.append(result.train.loss)
            outcome.test_loss.append(result.test.loss)
            outcome.train_accuracy.append(result.train.accuracy)
            outcome.test_accuracy.append(result.test.accuracy)
        outcomes.append(outcome)
    return outcomes


def conclude(outcomes: Sequence[InitOutcome], loss_tolerance: float = 0.005) -> str:
    """One sentence drawn from the table: which inits end where the default ends, which do not."""
    reference = next(o for o in outcomes if o.init == "default")
    target = reference.mean("train_loss")
    same = [o.init for o in outcomes if abs(o.mean("train_loss") - target) <= loss_tolerance]
    worse = [o for o in outcomes if o.mean("train_loss") - target > loss_tolerance]
    better = [o for o in outcomes if target - o.mean("train_loss") > loss_tolerance]
    parts = [
        f"{len(same)} of {len(outcomes)} initializations ({', '.join(same)}) end within "
        f"{loss_tolerance} of the default's train loss {target:.4f}"
    ]
    if worse:
        parts.append(
            "worse: "
            + ", ".join(f"{o.init} ({o.mean('train_loss'):.4f}, test acc {o.mean('test_accuracy'):.2%})" for o in worse)
        )
    if better:
        parts.append("better: " + ", ".join(f"{o.init} ({o.mean('train_loss'):.4f})" for o in better))
    seed_spread = max(o.spread("train_loss") for o in outcomes)
    parts.append(f"largest spread over seeds within one init: {seed_spread:.4f}")
    return "; ".join(parts) + "."
