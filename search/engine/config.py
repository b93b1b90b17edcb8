"""One training run's settings: what the engine needs, checked where they are built.

Pure Python (no torch), so the studies layer and the CLI can build and check them without loading
the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.catalog import ACTIVATION_NAMES
from search.checks import check_choice, check_float, check_int

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
DEFAULT_DEVICE = "auto"  # the first GPU torch sees, else the CPU
DEVICES = (DEFAULT_DEVICE, "cpu", "cuda")
MAX_EPOCHS = 10_000  # the studies train 10 to 150 epochs
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds from 0 to 2**32 - 1
MAX_BATCH_SIZE = 1_000_000  # above any split (MNIST's has 60,000 images); 0 asks for the full batch


# `--pack auto` packs a search's trials only where a pack trains each of them at least this much faster than
# alone: a search pack's trials share their structure for two generations and the sampler hears of them
# later, which cost more than packs of 2 and 4 saving 10-25% of a step gave back, in two equal-time searches
# at P = 100,000 on a 2-core CPU (README, "Packed training"). A grid's points are fixed: any real gain pays.
# Here, with no torch, so the studies layer reads them without loading the engine, and the engine's
# benchmarks without Optuna.
SEARCH_PACK_SPEEDUP = 1.5
GRID_PACK_SPEEDUP = 1.1


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `batch_size` 0 means full batch.

    `lr` has no upper limit here: a learning rate that diverges is a result the trainer reports."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    dropout: float = 0.0
    input_dropout: float = 0.0
    schedule: str = "constant"
    activation: str = "tanh"
    seed: int = 0
    device: str = DEFAULT_DEVICE

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 0, MAX_BATCH_SIZE, "0 means the full batch")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("activation", self.activation, ACTIVATION_NAMES)
        check_float("lr", self.lr, 0, None, low_open=True)
        check_float("momentum", self.momentum, 0, 1)
        check_float("weight_decay", self.weight_decay, 0, None)
        check_float("dropout", self.dropout, 0, 1, high_open=True)
        check_float("input_dropout", self.input_dropout, 0, 1, high_open=True)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_choice("device", self.device, DEVICES)


# The original study's linear baseline: full-batch SGD at lr 0.2 for 150 epochs.
BASELINE_TRAIN = TrainConfig(epochs=150, batch_size=0, optimizer="sgd", lr=0.2)
