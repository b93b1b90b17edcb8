"""Tables of finished trials that the plots, the report and the commands all read.

One table per question, computed once: the grid's shapes with their seeds (`grid_table`), so the
k-sweep plot, the report's findings and `archsearch grid`'s summary never disagree.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.budget import uniform_parameters, width_for_budget
from search.study.grid import point_of
from search.study.record import StudyRecord, TrialRecord, split_sizes


def completed(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials with a finite objective, the only ones a loss figure can place."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]


@dataclass(frozen=True)
class GridRow:
    """One uniform shape (k, m_P(k)) of a grid: its final training losses and test accuracies, by seed."""

    budget: int
    depth: int
    width: int
    params: int
    losses: tuple[float, ...]
    test_accuracies: tuple[float, ...]

    @property
    def seeds(self) -> int:
        """How many seeds of this shape completed."""
        return len(self.losses)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.losses)

    @property
    def spread(self) -> float:
        return max(self.losses) - min(self.losses)

    @property
    def test_accuracy(self) -> float | None:
        accuracies = [a for a in self.test_accuracies if a is not None]
        return statistics.fmean(accuracies) if accuracies else None


def grid_table(
    trials: Iterable[FrozenTrial], budgets: Sequence[int] | None = None, depths: Sequence[int] | None = None
) -> list[GridRow]:
    """The grid's completed trials by (budget, depth), seeds in order, sorted by budget and depth.

    With `budgets` and `depths`, every shape of that grid has a row, those not run yet with no seeds,
    in the grid's own order; without them, only the shapes with a completed seed."""
    groups: dict[tuple[int, int], list[FrozenTrial]] = defaultdict(list)
    for trial in completed(trials):
        point = point_of(trial)
        if point is not None:
            groups[(point.budget, point.depth)].append(trial)
    keys = [(b, d) for b in budgets for d in depths] if budgets and depths else sorted(groups)
    rows = []
    for budget, depth in keys:
        group = sorted(groups.get((budget, depth), []), key=lambda t: point_of(t).seed)
        width = width_for_budget(budget, depth)
        rows.append(
            GridRow(
                budget,
                depth,
                width,
                uniform_parameters(depth, width),
                tuple(t.value for t in group),
                tuple(TrialRecord.of(t).test_accuracy for t in group),
            )
        )
    return rows


def shape_rows(trials: Iterable[FrozenTrial]) -> list[dict]:
    """One row per completed search trial: its shape, training choice and validation loss."""
    rows = []
    for trial in sorted(completed(trials), key=lambda t: t.number):
        record = TrialRecord.of(trial)
        if not record.widths:
            continue
        rows.append(
            {
                "number": trial.number,
                "profile": record.profile,
                "depth": len(record.widths),
                "widths": " ".join(str(w) for w in record.widths),
                "params": record.params,
                "weight_decay": record.weight_decay,
                "val_loss": trial.value,
                "val_accuracy": record.val_accuracy,
                "warm_start": record.warm_source,
            }
        )
    return rows


@dataclass(frozen=True)
class TrialRow:
    """One trial of any state as a flat row (a DataFrame takes a list of them as it is)."""

    number: int
    state: str
    value: float | None
    profile: str
    depth: int
    widths: tuple[int, ...]
    params: int | None
    optimizer: str | None
    lr: float | None
    schedule: str | None
    batch_size: int | None
    weight_decay: float | None
    dropout: float
    input_dropout: float
    activation: str | None
    epochs: int | None
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    seconds: float | None
    reason: str | None  # why a pruned or failed trial stopped
    warm_start_study: str | None = None  # queued by a warm start: the study and trial it came from
    warm_start_trial: int | None = None


def trial_rows(trials: Iterable[FrozenTrial]) -> list[TrialRow]:
    """Every trial of a study in number order, read through its record."""
    rows = []
    for trial in sorted(trials, key=lambda t: t.number):
        record = TrialRecord.of(trial)
        config = record.train_config
        done = trial.state == TrialState.COMPLETE
        rows.append(
            TrialRow(
                number=trial.number,
                state=trial.state.name.lower(),
                value=trial.value if done else None,
                profile=record.profile,
                depth=len(record.widths),
                widths=record.widths,
                params=record.params,
                optimizer=config.get("optimizer"),
                lr=config.get("lr"),
                schedule=config.get("schedule"),
                batch_size=config.get("batch_size"),
                weight_decay=record.weight_decay,
                dropout=record.dropout,
                input_dropout=record.input_dropout,
                activation=config.get("activation"),
                epochs=config.get("epochs"),
                val_loss=record.val_loss,
                val_accuracy=record.val_accuracy,
                test_loss=record.test_loss,
                test_accuracy=record.test_accuracy,
                seconds=trial.duration.total_seconds() if trial.duration else None,
                reason=None if done or trial.state == TrialState.RUNNING else record.reason,
                warm_start_study=(record.warm_start or {}).get("study"),
                warm_start_trial=(record.warm_start or {}).get("trial"),
            )
        )
    return rows


@dataclass(frozen=True)
class Retrained:
    """The best configuration trained again on all training images (no validation split), once per seed,
    then tested: the means, and each seed's test accuracy. The test set chose nothing."""

    trained_on: str
    train_loss: float
    test_loss: float
    test_accuracy: float
    seeds: list[int] = dataclasses.field(default_factory=list)
    test_accuracies: list[float] = dataclasses.field(default_factory=list)

    @classmethod
    def of_runs(cls, trained_on: str, seeds: Sequence[int], runs: Sequence[tuple[float, float, float]]) -> Retrained:
        """From (train loss, test loss, test accuracy) per seed."""
        return cls(
            trained_on=trained_on,
            train_loss=statistics.fmean(run[0] for run in runs),
            test_loss=statistics.fmean(run[1] for run in runs),
            test_accuracy=statistics.fmean(run[2] for run in runs),
            seeds=list(seeds),
            test_accuracies=[run[2] for run in runs],
        )

    @property
    def test_error(self) -> float:
        """Mean test error over the seeds, as a fraction."""
        return 1 - self.test_accuracy

    @property
    def test_error_std(self) -> float:
        """Standard deviation of the test error over the seeds (0 for one seed)."""
        return statistics.stdev(self.test_accuracies) if len(self.test_accuracies) > 1 else 0.0


@dataclass(frozen=True)
class BestTrial:
    """A study's best trial as `archsearch best` shows it; its field names are the keys of `--json`, except
    `optuna_study`: the optuna.Study it was read from (for Optuna's own tools; None where not attached)."""

    study_trial: int
    profile: str
    widths: list[int]
    params: int | None
    train_config: dict
    objective: float
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    trained_on: str
    study_trials: int  # all trials of the study, of any state, when it was read
    retrained: Retrained | None = None
    exported: str | None = None
    optuna_study: optuna.Study | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, trial: FrozenTrial, settings: dict, study_trials: int, study: optuna.Study | None = None) -> BestTrial:
        record = TrialRecord.of(trial)
        train, validation = split_sizes(record, settings)
        return cls(
            study_trial=trial.number,
            profile=record.profile,
            widths=list(record.widths),
            params=record.params,
            train_config=record.train_config,
            objective=trial.value,
            val_loss=record.val_loss,
            val_accuracy=record.val_accuracy,
            test_loss=record.test_loss,
            test_accuracy=record.test_accuracy,
            trained_on=f"train split ({train:,} images; {validation:,} held out for validation)",
            study_trials=study_trials,
            optuna_study=study,
        )

    def to_json(self) -> dict:
        """The record as `--json` prints it: fields not filled in are left out, and the study is no JSON."""
        fields = dataclasses.asdict(dataclasses.replace(self, optuna_study=None))
        return {key: value for key, value in fields.items() if key in _JSON and (value is not None or key in _ALWAYS)}


_JSON = {field.name for field in dataclasses.fields(BestTrial)} - {"optuna_study"}
_ALWAYS = _JSON - {"retrained", "exported"}


@dataclass(frozen=True)
class FrontierRow:
    """One budget of a frontier: its study's winner by validation loss and, once retrained, its test error."""

    budget: int
    study: str
    trials: int  # finished trials of the budget's study
    profile: str | None
    widths: tuple[int, ...]
    params: int | None
    val_loss: float | None
    retrained: Retrained | None  # None until the winner was retrained (and again once a better one is found)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # the study's: a quick run's plot says so
    warm_start: str | None = None  # the winner came from a warm start: its source, STUDY#TRIAL


def frontier_rows(studies: Iterable, name: str) -> list[FrontierRow]:
    """The frontier `name`, one row per budget in budget order, from the search studies that belong to it."""
    rows = []
    for study in studies:
        record = StudyRecord.of(study)
        if record.frontier != name or record.kind != "search":
            continue
        trials = study.get_trials(deepcopy=False)
        done = completed(trials)
        best = min(done, key=lambda t: t.value) if done else None
        winner = TrialRecord.of(best) if best else None
        stored = record.retrained
        retrained = None
        if best is not None and stored and stored.get("trial") == best.number:
            retrained = Retrained(**{k: v for k, v in stored.items() if k != "trial"})
        rows.append(
            FrontierRow(
                budget=record.settings["budget"],
                study=study.study_name,
                trials=sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials),
                profile=winner.profile if winner else None,
                widths=winner.widths if winner else (),
                params=winner.params if winner else None,
                val_loss=best.value if best else None,
                retrained=retrained,
                settings=record.settings,
                warm_start=winner.warm_source if winner else None,
            )
        )
    return sorted(rows, key=lambda row: row.budget)


def frontier_names(studies: Iterable) -> list[str]:
    """The frontiers that the studies belong to, in name order."""
    return sorted({StudyRecord.of(s).frontier for s in studies if StudyRecord.of(s).frontier})
