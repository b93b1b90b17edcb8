"""Trials trained as packs by the worker loop (search/study/workers.py run_pack): the same values as alone,
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
from search.study.objective import PACK_PARAMS, Prepared, SearchObjective, start_trial
from search.study.record import TrialRecord
from search.study.workers import AUTO_PACK, MAX_PACK, run_until

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


def test_a_search_pack_shares_its_first_trials_choices_for_two_generations_and_samples_the_rest(data, tmp_path):
    space = SearchSpace(max_depth=3, batch_sizes=(32, 64), optimizers=("adam", "sgd"), activations=("tanh", "relu"))
    config = StudyConfig(name="s", budget=20_000, trials=16, epochs=1, sampler="random", space=space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    run_until(study, SearchObjective(config, data, tmp_path / "artifacts"), 16, pack=4)
    counts = Counter(t.state for t in study.trials)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 16, counts
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    trained = [t for t in study.trials if t.intermediate_values]  # not pruned before training: no widths fit

    def shared(trial):
        return {name: trial.params[name] for name in PACK_PARAMS}

    # 4 at the start, 4 refilled as they end; then the sampler chooses the next pack's shared choices anew
    assert len(trained) > 8 and all(shared(t) == shared(trained[0]) for t in trained[:8])
    assert shared(trained[8]) != shared(trained[0])
    assert len({t.params["lr"] for t in trained[:8]}) == 8  # the rest sampled per trial
    assert all(TrialRecord.of(t).pack_size == 4 for t in trained)  # recorded as each joined its pack


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
    monkeypatch.setattr(packed, "fitting_pack_size", lambda *_: packed.PackTimings({1: 1.0, 4: 1 / speedup}))
    monkeypatch.setattr(objective, "_pack_timings", {})
    space = SearchSpace(max_depth=2, batch_sizes=(32,), optimizers=("adam",), activations=("tanh",))
    config = StudyConfig(name="s", budget=20_000, trials=4, epochs=1, sampler="random", space=space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert run_until(study, SearchObjective(config, data, tmp_path / "artifacts"), 4, pack=AUTO_PACK)
    trained = [t for t in study.trials if t.intermediate_values]
    assert trained and all(TrialRecord.of(t).pack_size == 1 for t in trained)
    assert most_at_once(study) == 1


def most_at_once(study: optuna.Study) -> int:
    """The most trials that trained at one moment, from their epochs' reports: a pack's members report
    epoch by epoch together, trials alone one after another."""
    spans = [(t.datetime_start, t.datetime_complete) for t in study.trials]
    return max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)


def test_a_measured_pack_search_records_its_sizes_and_ends_at_exactly_n(data, tmp_path, monkeypatch):
    from search.study import objective

    monkeypatch.setattr(objective, "_pack_timings", {})
    space = SearchSpace(max_depth=2, batch_sizes=(32,), optimizers=("adam",), activations=("tanh",))
    config = StudyConfig(name="s", budget=20_000, trials=6, epochs=1, sampler="random", space=space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert run_until(study, SearchObjective(config, data, tmp_path / "artifacts"), 6, pack=AUTO_PACK)
    counts = Counter(t.state for t in study.trials)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 6 and len(study.trials) == 6, counts
    trained = [TrialRecord.of(t) for t in study.trials if t.intermediate_values]
    assert trained and all(1 <= record.pack_size <= MAX_PACK for record in trained)
    measured = {timings.size(objective.SEARCH_PACK_SPEEDUP) for timings in objective._pack_timings.values()}
    assert {record.pack_size for record in trained} <= measured
