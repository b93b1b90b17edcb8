"""Trials trained as packs by the worker loop (search/study/packs.py run_pack): the same values as alone,
members pruned on their own, shared choices fixed for the rest of a search pack, exactly N trials."""

from __future__ import annotations

import dataclasses
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from search.engine.config import TrainConfig
from search.engine.data import load_data
from search.study.config import SearchSpace, StudyConfig
from search.study.grid import GridConfig, GridObjective, enqueue_missing, grid_points
from search.study.objective import Prepared, SearchObjective, start_trial
from search.study.record import TrialRecord
from search.study.workers import AUTO_PACK, MAX_PACK, is_proven, run_until

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def data(tiny_mnist):
    return load_data(str(tiny_mnist), "mnist", "cpu", limit=400)


def grid_study(config: GridConfig) -> optuna.Study:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    enqueue_missing(study, grid_points(config))
    return study


def values(study: optuna.Study) -> dict:
    return {tuple(sorted(t.params.items())): t.value for t in study.trials if t.state == TrialState.COMPLETE}


@pytest.mark.parametrize("pack", [3, 8])  # 3: packs cut across depths, so some hold fewer trials
def test_a_packed_grid_gives_the_values_of_trials_run_alone(data, pack):
    config = GridConfig(budgets=(3000, 6000), depths=(1, 2), seeds=2, train=TrainConfig(epochs=2, batch_size=64))
    alone, packed = grid_study(config), grid_study(config)
    run_until(alone, GridObjective(config, data), len(grid_points(config)))
    run_until(packed, GridObjective(config, data), len(grid_points(config)), pack=pack)
    assert len(values(packed)) == 8
    assert values(packed).keys() == values(alone).keys()
    for point, value in values(alone).items():
        assert values(packed)[point] == pytest.approx(value, rel=1e-4), point


class LearningRates:
    """One trial per learning rate, all of one shape: a pack whose members differ only in lr."""

    def __init__(self, data, rates: list[float]):
        self.data, self.rates = data, rates

    def prepare(self, trial: optuna.Trial) -> Prepared:
        lr = self.rates[trial.number]
        config = TrainConfig(epochs=3, batch_size=64, optimizer="sgd", lr=lr, momentum=0.9, seed=trial.number)
        start_trial(trial, [16], config, self.data)
        return Prepared(trial, [16], config, lambda result, _: result.validation.loss)

    def __call__(self, trial: optuna.Trial) -> float:
        from search.study.objective import train_alone

        return train_alone(self.prepare(trial), self.data)

    @staticmethod
    def shared_params(trial: optuna.Trial) -> dict:
        return {}


def test_a_diverging_member_is_pruned_with_its_reason_and_the_others_go_on(data):
    rates = [0.05, 1e6, 0.02, 0.1]
    # No pruner: alone, each trial's epochs come before the next's; in a pack, epoch by epoch across trials.
    packed, alone = (optuna.create_study(pruner=optuna.pruners.NopPruner()) for _ in range(2))
    run_until(packed, LearningRates(data, rates), 4, pack=4)
    run_until(alone, LearningRates(data, rates), 4)
    states = [t.state for t in packed.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "diverged" in TrialRecord.of(packed.trials[1]).pruned_reason
    for mine, reference in zip(packed.trials, alone.trials, strict=True):
        assert mine.state == reference.state
        if mine.state == TrialState.COMPLETE:
            assert mine.value == pytest.approx(reference.value, rel=1e-4)
            assert mine.intermediate_values.keys() == {1, 2, 3}


def test_a_proven_pack_shares_its_first_trials_choices_for_two_generations_and_samples_the_rest(data, tmp_path):
    space = SearchSpace(max_depth=3, batch_sizes=(32, 64), optimizers=("adam", "sgd"), activations=("tanh", "relu"))
    config = StudyConfig(name="s", budget=20_000, trials=17, epochs=1, sampler="random", space=space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    objective = SearchObjective(config, data, tmp_path / "artifacts")
    structure = {"depth": 2, "profile": "uniform", "activation": "tanh", "optimizer": "adam", "batch_size": 32}
    study.enqueue_trial(structure)
    run_until(study, objective, 1, pack=4)  # the study's one completed trial: its structure has proved itself
    assert study.trials[0].state == TrialState.COMPLETE and TrialRecord.of(study.trials[0]).pack_size == 1
    study.enqueue_trial(structure)
    run_until(study, objective, 17, pack=4)
    counts = Counter(t.state for t in study.trials)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 17, counts
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    trained = [t for t in study.trials[1:] if t.intermediate_values]  # not pruned before training: no widths fit

    # 4 at the start, 4 refilled as they end; then the sampler chooses the next first trial's choices anew
    assert len(trained) > 8 and all(SearchObjective.shared_params(t) == structure for t in trained[:8])
    assert all(TrialRecord.of(t).pack_size == 4 for t in trained[:8])  # recorded as each joined its pack
    assert len({t.params["lr"] for t in trained[:8]}) == 8  # the rest sampled per trial
    assert SearchObjective.shared_params(trained[8]) != structure


def test_a_search_packs_only_around_a_structure_that_has_proved_itself(data, tmp_path):
    space = SearchSpace(
        max_depth=1, profiles=("uniform",), batch_sizes=(32,), optimizers=("adam",), activations=("tanh", "relu")
    )
    config = StudyConfig(name="s", budget=20_000, trials=7, epochs=1, sampler="random", space=space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner())
    objective = SearchObjective(config, data, tmp_path / "artifacts")
    for activation in ("tanh", "relu"):
        study.enqueue_trial({"activation": activation})
    run_until(study, objective, 2, pack=4)  # the first with nothing completed, the second against the first
    assert [TrialRecord.of(t).pack_size for t in study.trials] == [1, 1]
    best = study.best_trial.params["activation"]
    (other,) = {"tanh", "relu"} - {best}
    study.enqueue_trial({"activation": other})
    run_until(study, objective, 3, pack=4)  # not the best's structure: it explores, alone
    assert TrialRecord.of(study.trials[2]).pack_size == 1
    best = study.best_trial.params["activation"]  # the explorer may have done best
    study.enqueue_trial({"activation": best})
    run_until(study, objective, 7, pack=4)  # the best's structure: a pack of 4 around it
    packed = study.trials[3:]
    assert len(packed) == 4 and all(t.state == TrialState.COMPLETE for t in packed)
    assert all(TrialRecord.of(t).pack_size == 4 and t.params["activation"] == best for t in packed)
    assert most_at_once(study) == 4


def with_completed(values: list[float], direction: str = "minimize", relu_at: int | None = None) -> optuna.Study:
    """A study of completed trials with these values, in order: the one at `relu_at` chose relu, the rest tanh."""
    study = optuna.create_study(direction=direction)
    choices = optuna.distributions.CategoricalDistribution(("tanh", "relu"))
    for index, value in enumerate(values):
        params = {"activation": "relu" if index == relu_at else "tanh"}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={"activation": choices}, value=value))
    return study


@pytest.mark.parametrize(
    ("completed", "rank", "proven"),
    [(1, 1, True), (2, 2, False), (20, 2, True), (20, 3, False), (21, 3, True), (300, 25, True), (300, 26, False)],
)
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_structure_has_proved_itself_when_one_of_its_trials_is_among_the_best_tenth(
    completed, rank, proven, direction
):
    sign = 1 if direction == "minimize" else -1
    values = [sign * float(n) for n in range(completed, 0, -1)]  # the last trial is the best, the first the worst
    relu = {"activation": "relu"}
    assert not is_proven(with_completed(values, direction), relu)
    study = with_completed(values, direction, relu_at=completed - rank)  # the trial of this rank chose relu
    assert is_proven(study, relu) is proven
    assert is_proven(study, {"activation": "tanh"}) is (rank != 1)  # the best trial chose tanh


def test_no_structure_has_proved_itself_before_a_trial_completes_with_a_finite_value():
    assert not is_proven(optuna.create_study(), {"activation": "tanh"})
    assert not is_proven(with_completed([float("-inf")]), {"activation": "tanh"})
    study = with_completed([float("-inf"), 1.0], relu_at=0)
    assert not is_proven(study, {"activation": "relu"}) and is_proven(study, {"activation": "tanh"})


def test_a_pack_asks_no_more_trials_than_the_study_needs(data):
    config = GridConfig(budgets=(3000,), depths=(1,), seeds=3, train=TrainConfig(epochs=1, batch_size=64))
    study = grid_study(config)
    assert run_until(study, GridObjective(config, data), 3, pack=8)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


class FirstTrialCannotSave(GridObjective):
    """A grid whose first trial fails as it records its result, as on a full disk."""

    def prepare(self, trial: optuna.Trial) -> Prepared:
        prepared = super().prepare(trial)
        if trial.number != 0:
            return prepared

        def finish(result, model):
            raise OSError(28, "No space left on device")

        return dataclasses.replace(prepared, finish=finish)


def test_a_pack_whose_trial_failed_takes_no_new_trials_and_raises_the_failure(data):
    config = GridConfig(budgets=(3000,), depths=(1,), seeds=4, train=TrainConfig(epochs=1, batch_size=64))
    study = grid_study(config)
    with pytest.raises(OSError, match="No space left"):
        run_until(study, FirstTrialCannotSave(config, data), 4, pack=2)
    # Trials 0 and 1 end together: 0 failed, 1 recorded; the free slots are not filled with points 2 and 3.
    assert [t.state for t in study.trials] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.WAITING,
        TrialState.WAITING,
    ]


@pytest.mark.parametrize(("speedup", "size"), [(1.05, 1), (1.2, 3), (3.0, 3)])
def test_an_auto_pack_trains_at_the_measured_size_timed_once_per_kind(data, monkeypatch, speedup, size):
    from search.engine import packed
    from search.study import objective

    calls = []

    def fitting(model, config, split, largest):
        calls.append(largest)
        return packed.PackTimings({1: 1.0, 3: 1 / speedup})

    monkeypatch.setattr(packed, "fitting_pack_size", fitting)
    monkeypatch.setattr(objective, "_pack_timings", {})
    config = GridConfig(budgets=(3000,), depths=(1,), seeds=6, train=TrainConfig(epochs=2, batch_size=64))
    alone, auto = grid_study(config), grid_study(config)
    run_until(alone, GridObjective(config, data), 6)
    assert run_until(auto, GridObjective(config, data), 6, pack=AUTO_PACK)
    assert calls == [MAX_PACK]  # six points of one kind: timed once
    assert [TrialRecord.of(t).pack_size for t in auto.trials] == [size] * 6  # a grid packs from GRID_PACK_SPEEDUP
    assert most_at_once(auto) == size
    for point, value in values(alone).items():
        assert values(auto)[point] == pytest.approx(value, rel=1e-4), point


def test_an_auto_search_packs_only_where_a_pack_pays_a_search(data, tmp_path, monkeypatch):
    from search.engine import packed
    from search.study import objective

    speedup = (objective.GRID_PACK_SPEEDUP + objective.SEARCH_PACK_SPEEDUP) / 2  # enough for a grid, not a search
    calls = []

    def fitting(*_):
        calls.append(1)
        return packed.PackTimings({1: 1.0, 4: 1 / speedup})

    monkeypatch.setattr(packed, "fitting_pack_size", fitting)
    monkeypatch.setattr(objective, "_pack_timings", {})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert run_until(study, SearchObjective(one_structure(4), data, tmp_path / "artifacts"), 4, pack=AUTO_PACK)
    assert calls == [1]  # from the second trial on the structure has proved itself, and is timed once
    trained = [t for t in study.trials if t.intermediate_values]
    assert trained and all(TrialRecord.of(t).pack_size == 1 for t in trained)
    assert most_at_once(study) == 1


def one_structure(trials: int) -> StudyConfig:
    """A search of one structure: from its first completed trial on, every first trial's has proved itself."""
    space = SearchSpace(
        max_depth=1, profiles=("uniform",), batch_sizes=(32,), optimizers=("adam",), activations=("tanh",)
    )
    return StudyConfig(name="s", budget=20_000, trials=trials, epochs=1, sampler="random", space=space)


def most_at_once(study: optuna.Study) -> int:
    """The most trials that trained at one moment, from their epochs' reports: a pack's members report
    epoch by epoch together, trials alone one after another."""
    spans = [(t.datetime_start, t.datetime_complete) for t in study.trials]
    return max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)


def test_a_measured_pack_search_records_its_sizes_and_ends_at_exactly_n(data, tmp_path, monkeypatch):
    from search.study import objective

    monkeypatch.setattr(objective, "_pack_timings", {})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert run_until(study, SearchObjective(one_structure(6), data, tmp_path / "artifacts"), 6, pack=AUTO_PACK)
    counts = Counter(t.state for t in study.trials)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 6 and len(study.trials) == 6, counts
    first, *proven = [TrialRecord.of(t) for t in study.trials]  # the first, with nothing completed yet, alone
    assert first.pack_size == 1 and proven and all(1 <= record.pack_size <= MAX_PACK for record in proven)
    measured = {timings.size(objective.SEARCH_PACK_SPEEDUP) for timings in objective._pack_timings.values()}
    assert len(measured) == 1 and {record.pack_size for record in proven} == measured
