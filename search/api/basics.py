"""The parameter math and the linear baseline of the original study, from Python."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from models.budget import LINEAR_MODEL, LINEAR_PARAMETERS, MAX_BUDGET, MAX_DEPTH, MIN_BUDGET, BudgetRow, depth_range
from models.budget import budget_table as shapes_for
from models.catalog import INIT_NAMES, Init
from search.api.calls import api_call
from search.api.progress import progress
from search.checks import check_choice, check_float, check_int, check_ints
from search.engine.config import BASELINE_TRAIN, DEFAULT_DEVICE, MAX_SEED, TrainConfig
from search.errors import UsageError, argument, worded
from search.study.config import MAX_SEED_COUNT, StudyConfig, check_data_settings


@dataclass(frozen=True)
class BudgetTable:
    """Parameters(k, m) for one budget: the depth range and the uniform shape (k, m_P(k)) per depth."""

    budget: int
    min_depth: int
    max_depth: int
    rows: list[BudgetRow]


@api_call
def budget_table(budget: int, depths: Sequence[int] | None = None) -> BudgetTable:
    """The shapes (k, m_P(k)) for a budget, by default every depth up to 8 that fits (`archsearch budget`)."""
    check_int("budget", budget, MIN_BUDGET, MAX_BUDGET, f"{MIN_BUDGET} parameters is the smallest MLP")
    if depths is not None:
        check_ints("depths", tuple(depths), 1, MAX_DEPTH)
    low, high = depth_range(budget)
    return BudgetTable(budget, low, high, shapes_for(budget, depths))


@dataclass(frozen=True)
class Baseline:
    """The linear softmax model after training: its config, losses, accuracies and loss curve."""

    model: str
    parameters: int
    init: str
    config: dict
    device: str
    train_loss: float
    test_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float
    history_train_loss: list[float]


def baseline_config(
    lr: float | None, epochs: int | None, batch_size: int | None, seed: int, device: str
) -> TrainConfig:
    """The original study's full-batch SGD (search/engine/config.py) with the given changes."""
    return dataclasses.replace(
        BASELINE_TRAIN,
        **{k: v for k, v in {"lr": lr, "epochs": epochs, "batch_size": batch_size}.items() if v is not None},
        seed=seed,
        device=device,
    )


def _data(config: TrainConfig, data_dir: str | None, dataset: str | None, data_limit: int | None):
    dataset = dataset or StudyConfig.dataset
    check_data_settings(dataset, data_limit)
    from search.engine.data import load_data  # torch loads only once the options are known good
    from search.engine.trainer import resolve_device

    device = resolve_device(config.device)
    return load_data(data_dir, dataset, str(device), limit=data_limit or None)


@api_call
def baseline(
    *,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    init: str = "default",
    init_value: float = 0.0,
    seed: int = 0,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    dataset: str | None = None,
    data_limit: int | None = None,
    quiet: bool = False,
) -> Baseline:
    """Train the linear softmax baseline (784 -> 10) with full-batch SGD (`archsearch baseline`)."""
    config = baseline_config(lr, epochs, batch_size, seed, device)
    check_choice("init", init, INIT_NAMES)
    check_float("init_value", init_value, float("-inf"), None)
    if init == "normal" and not init_value > 0:
        normal = worded(cli="--init normal", api="init='normal'")
        raise UsageError(f"{normal} needs {argument('init_value')}, the standard deviation, above 0 (e.g. 0.01)")
    data = _data(config, data_dir, dataset, data_limit)
    from search.engine.baseline import run_baseline

    with progress(config.epochs, "baseline", quiet) as bar, divergence_refused(config):
        result = run_baseline(data, config, Init(init, init_value), _advance(bar))
    return Baseline(
        model=LINEAR_MODEL,
        parameters=LINEAR_PARAMETERS,
        init=Init(init, init_value).label(),
        config=dataclasses.asdict(config),
        device=result.device,
        train_loss=result.train.loss,
        test_loss=result.test.loss,
        train_accuracy=result.train.accuracy,
        test_accuracy=result.test.accuracy,
        seconds=result.seconds,
        history_train_loss=[r.train_loss for r in result.history],
    )


INIT_STUDY_SEEDS = (0, 1, 2)


def check_init_seeds(seeds: tuple[int, ...]) -> None:
    """The seeds of an initialization study (`init_study`, `report`); also their --seeds flags' check."""
    check_ints("seeds", seeds, 0, MAX_SEED)
    if len(seeds) > MAX_SEED_COUNT:
        raise UsageError(f"seeds must list at most {MAX_SEED_COUNT:,} seeds, got {len(seeds):,}")


@dataclass(frozen=True)
class InitStudy:
    """The initialization question: each initialization over several seeds, and the one-sentence answer."""

    config: dict
    outcomes: list  # InitOutcome (search/engine/baseline.py): one per initialization
    conclusion: str


@api_call
def init_study(
    *,
    seeds: Sequence[int] = INIT_STUDY_SEEDS,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    dataset: str | None = None,
    data_limit: int | None = None,
    quiet: bool = False,
) -> InitStudy:
    """Compare several initializations of the baseline over several seeds (`archsearch baseline --init-study`)."""
    config = baseline_config(lr, epochs, batch_size, 0, device)
    seeds = tuple(seeds)
    check_init_seeds(seeds)
    data = _data(config, data_dir, dataset, data_limit)
    from search.engine.baseline import INIT_STUDY_INITS, conclude
    from search.engine.baseline import init_study as run_init_study

    steps = len(INIT_STUDY_INITS) * len(seeds) * config.epochs
    with progress(steps, "init study", quiet) as bar, divergence_refused(config):
        outcomes = run_init_study(data, config, seeds, on_epoch=_advance(bar))
    return InitStudy(dataclasses.asdict(config), outcomes, conclude(outcomes))


@contextmanager
def divergence_refused(config: TrainConfig, advice: str | None = None) -> Iterator[None]:
    """Training that diverges (a NaN or infinite loss) is the learning rate's doing, not a bug: one line
    that says so and what to change (`advice`; by default, the baseline's --lr). Nothing is stored by then."""
    from search.engine.trainer import Diverged

    try:
        yield
    except Diverged as error:
        advice = advice or f"give a smaller {argument('lr')} (the original study's is {BASELINE_TRAIN.lr:g})"
        raise UsageError(
            f"training diverged at epoch {error.epoch} (loss {error.loss}) at lr {config.lr:g}; {advice}"
        ) from None


def _advance(bar):
    def on_epoch(record):
        bar.update(1)
        bar.set_postfix(loss=f"{record.train_loss:.4f}")

    return on_epoch
