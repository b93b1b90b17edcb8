"""Grid studies (the k-sweep): every (budget, depth, seed) trains the uniform net (k, m_P(k)) once.

Exactly once with any number of workers and across resumes: the `grid` command queues each point
that has no live trial, workers pop queued trials, and a trial that is not the first live claim on
its point is failed unrun. A worker that finds the queue empty while a point has no live trial
(its run was interrupted) queues that point again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.budget import (
    LINEAR_MODEL,
    LINEAR_PARAMETERS,
    MAX_BUDGET,
    MAX_DEPTH,
    MIN_BUDGET,
    depth_range,
    width_for_budget,
)
from models.profiles import UNIFORM
from search.checks import check_int, check_ints, shown
from search.engine.config import BASELINE_TRAIN, DEFAULT_DEVICE, TrainConfig
from search.errors import UsageError, argument
from search.study.config import (
    BUDGET_ADVICE,
    DEFAULT_STORAGE,
    MAX_SEED_COUNT,
    MAX_TRIALS,
    _coerce,
    check_run_settings,
    check_study_name,
    replace,
)
from search.study.record import SURPLUS, StudyRecord, write_trial
from search.study.storage import DEFAULT_GRACE_SECONDS, DEFAULT_HEARTBEAT_SECONDS
from search.study.workers import FINISHED, Surplus

if TYPE_CHECKING:
    from search.engine.data import Data
    from search.study.objective import Prepared

LIVE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class GridConfig:
    """A k-sweep: what studies/ksweep.toml describes. `seeds` counts the seeds 0, 1, ..., seeds - 1."""

    name: str = "ksweep"
    budgets: tuple[int, ...] = (25_000, 50_000, 100_000)
    depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    seeds: int = 3
    dataset: str = "mnist"
    data_limit: int = 0
    storage: str = DEFAULT_STORAGE
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_study_name(self.name)
        check_ints("budgets", self.budgets, None, MAX_BUDGET, BUDGET_ADVICE)  # check_budgets explains the lower end
        check_ints("depths", self.depths, 1, MAX_DEPTH)
        check_int("seeds", self.seeds, 1, MAX_SEED_COUNT)
        points = len(self.budgets) * len(self.depths) * self.seeds
        if points > MAX_TRIALS:
            raise UsageError(
                f"a grid must have at most {MAX_TRIALS:,} points, got {points:,} (budgets x depths x seeds); "
                "give fewer budgets, depths or seeds"
            )
        check_run_settings(self.dataset, self.data_limit, self.heartbeat_seconds, self.grace_seconds)
        if not isinstance(self.storage, str):
            raise UsageError(f"storage must be a URL, got {shown(self.storage)}")
        if not isinstance(self.train, TrainConfig):
            raise UsageError(f"train must be a table of training settings, got {shown(self.train)}")
        if self.train.seed != 0 or self.train.device != DEFAULT_DEVICE:
            raise UsageError(
                "[train] seed and device are not grid settings: a trial's seed is its grid seed, "
                f"and {argument('device')} picks the device"
            )
        check_budgets(self.budgets, self.depths)


def check_budgets(budgets: tuple[int, ...], depths: tuple[int, ...]) -> None:
    """Refuse up front, in one line, every budget that cannot hold some asked depth."""
    problems = []
    for budget in budgets:
        if budget < MIN_BUDGET:
            problems.append(f"{budget} (no hidden layer fits below {MIN_BUDGET} parameters)")
            continue
        deepest = depth_range(budget)[1]
        too_deep = [str(depth) for depth in depths if depth > deepest]
        if too_deep:
            layers = "1 hidden layer" if deepest == 1 else f"{deepest} hidden layers"
            problems.append(f"{budget} (holds at most {layers}; asked {', '.join(too_deep)})")
    if problems:
        raise UsageError(f"budgets too small for the asked depths: {'; '.join(problems)}; drop them or the depths")


def config_from_dict(raw: dict[str, Any], where: str) -> GridConfig:
    """A grid from a TOML file's tables or a stored study's settings; UsageError for any bad value."""
    return _coerce(GridConfig, raw, where)


def settings(config: GridConfig) -> dict[str, Any]:
    """What a grid study stores and compares on resume: everything but its name."""
    return {k: v for k, v in asdict(config).items() if k != "name"}


class GridPoint(NamedTuple):
    budget: int
    depth: int
    seed: int


def grid_points(config: GridConfig) -> list[GridPoint]:
    """Depth-major, in the order they are queued: workers that train packs take consecutive queued
    points, and points of one depth (any budget and seed) can share a pack."""
    return [GridPoint(b, d, s) for d in config.depths for s in range(config.seeds) for b in config.budgets]


def search_space(config: GridConfig) -> dict[str, list[int]]:
    return {"budget": list(config.budgets), "depth": list(config.depths), "seed": list(range(config.seeds))}


def point_of(trial: FrozenTrial) -> GridPoint | None:
    """The grid point a trial holds: its queued parameters, or those it suggested."""
    params = trial.system_attrs.get("fixed_params") or trial.params
    if not {"budget", "depth", "seed"} <= params.keys():
        return None
    return GridPoint(params["budget"], params["depth"], params["seed"])


def enqueue_missing(study: optuna.Study, points: list[GridPoint]) -> int:
    """Queue each point without a finished, running or waiting trial; returns how many."""
    taken = {point_of(t) for t in study.get_trials(deepcopy=False, states=LIVE)}
    missing = [point for point in points if point not in taken]
    for point in missing:
        study.enqueue_trial(point._asdict())
    return len(missing)


class QueueGridSampler(optuna.samplers.GridSampler):
    """GridSampler for a study whose points are all queued.

    Optuna 5's `after_trial` raises KeyError('grid_id') for a queued trial once one grid point is
    left unvisited (always, for a one-point grid; optuna/optuna#6844), so queued trials skip it.
    """

    def after_trial(self, study, trial, state, values) -> None:
        if "grid_id" in trial.system_attrs:
            super().after_trial(study, trial, state, values)


def make_grid_sampler(config: GridConfig, worker_index: int = 0) -> QueueGridSampler:
    return QueueGridSampler(search_space(config), seed=worker_index)


class GridObjective:
    """Final loss on the whole training split of the uniform net (k, m_P(k)) at one grid point."""

    def __init__(self, config: GridConfig, data: Data):
        self.config = config
        self.data = data
        self.points = grid_points(config)

    def __call__(self, trial: optuna.Trial) -> float:
        from search.study.objective import train_alone

        return train_alone(self.prepare(trial), self.data)

    def prepare(self, trial: optuna.Trial) -> Prepared:
        """Claim the trial's grid point and record it; Surplus if another trial holds the point."""
        from search.study.objective import Prepared, start_trial

        self._claim(trial)
        budget = trial.suggest_categorical("budget", self.config.budgets)
        depth = trial.suggest_categorical("depth", self.config.depths)
        seed = trial.suggest_categorical("seed", tuple(range(self.config.seeds)))
        width = width_for_budget(budget, depth)
        write_trial(trial, profile=UNIFORM, budget=budget, depth=depth, width=width)
        widths, train = [width] * depth, replace(self.config.train, seed=seed)
        start_trial(trial, widths, train, self.data)
        return Prepared(trial, widths, train, lambda result, _: result.train.loss)

    @staticmethod
    def shared_params(trial: optuna.Trial) -> dict:
        """Nothing to share: the queue holds every point, in depth order (see grid_points)."""
        return {}

    def _claim(self, trial: optuna.Trial) -> None:
        """Fail this trial unrun unless it is the lowest-numbered live trial of its point.

        Any two live trials of one point both see the lower one live when they check, so at most
        one of them trains, whichever order workers pop them in.
        """
        trials = trial.study.get_trials(deepcopy=False)
        point = point_of(next(t for t in trials if t.number == trial.number))
        if point is None:
            queued = enqueue_missing(trial.study, self.points)
            raise _surplus(trial, f"the queue was empty; queued {queued} unfinished grid point(s) again")
        for other in trials:
            if other.number == trial.number or point_of(other) != point:
                continue
            if other.state in FINISHED or (other.state in LIVE and other.number < trial.number):
                raise _surplus(trial, f"grid point {tuple(point)} belongs to trial #{other.number}")


def _surplus(trial: optuna.Trial, reason: str) -> Surplus:
    write_trial(trial, fail_reason=f"{SURPLUS}: {reason}")
    return Surplus()


def worker_setup(study: optuna.Study, data_dir: str | None, worker_index: int, device, artifacts):
    """What `archsearch worker` runs for a grid study; grid trials save no models."""
    from search.engine.data import load_data

    config = config_from_dict(StudyRecord.of(study).settings, f"study {study.study_name}")
    data = load_data(data_dir, config.dataset, str(device), limit=config.data_limit or None)
    sampler = make_grid_sampler(config, worker_index)
    return sampler, optuna.pruners.NopPruner(), GridObjective(config, data), len(grid_points(config))


def reference_baseline(data: Data) -> dict[str, Any]:
    """The original study's linear model on the same data: the k-sweep plot's reference line."""
    from search.engine.baseline import run_baseline

    result = run_baseline(data, BASELINE_TRAIN)
    return {
        "model": LINEAR_MODEL,
        "params": LINEAR_PARAMETERS,
        "train_config": asdict(BASELINE_TRAIN),
        "train_images": len(data.train_full),
        "train_loss": result.train.loss,
        "train_accuracy": result.train.accuracy,
        "test_loss": result.test.loss,
        "test_accuracy": result.test.accuracy,
    }
