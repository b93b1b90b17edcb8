import json
import logging
import sqlite3

import optuna
import pytest

from models.budget import count_parameters
from models.mlp import load_model
from search.engine.data import load_data
from search.engine.trainer import evaluate
from search.study.config import SearchSpace
from search.study.space import suggest
from tests.conftest import archsearch


def sample(sampler, trials, space=SearchSpace(), budget=50_000):
    study = optuna.create_study(sampler=sampler)
    candidates = []
    for _ in range(trials):
        trial = study.ask()
        candidate = suggest(trial, space, budget, 0.02, 1, 0)
        candidates.append(candidate)
        value = candidate.train.lr if candidate.widths else float("nan")
        study.tell(
            trial,
            value if candidate.widths else None,
            state=None if candidate.widths else optuna.trial.TrialState.PRUNED,
        )
    return candidates


def test_sampled_architectures_meet_budget_and_shape():
    candidates = sample(optuna.samplers.RandomSampler(seed=0), 500, SearchSpace(max_depth=8, input_dropout=(0.0, 0.0)))
    assert sum(c.widths is None for c in candidates) <= 5
    for c in candidates:
        if c.widths is None:
            continue
        assert abs(count_parameters(c.widths) - 50_000) <= 1_000 and len(c.widths) == c.depth
        if c.profile == "decreasing":
            assert c.widths == sorted(c.widths, reverse=True)
        if c.profile == "increasing":
            assert c.widths == sorted(c.widths)
    assert {c.profile for c in candidates} == {"uniform", "decreasing", "increasing", "free"}
    assert {c.depth for c in candidates} == set(range(1, 9))
    assert any(c.train.weight_decay == 0 for c in candidates) and any(c.train.weight_decay > 0 for c in candidates)
    decays = [c.train.weight_decay for c in candidates if c.train.weight_decay]
    assert min(decays) >= 1e-6 and max(decays) <= 0.1 and max(decays) > 0.01  # AdamW's useful range is reached
    dropouts = [c.train.dropout for c in candidates]
    assert min(dropouts) >= 0 and max(dropouts) <= 0.3 and len(set(dropouts)) > 400
    assert {c.train.input_dropout for c in candidates} == {0.0}  # not searched unless the space gives a range


def test_input_dropout_is_searched_in_every_trial_where_the_space_gives_it_a_range():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace(input_dropout=(0.0, 0.3))
    rates = []
    for _ in range(50):
        trial = study.ask()
        rates.append(suggest(trial, space, 50_000, 0.02, 1, 0).train.input_dropout)
        assert trial.params["input_dropout"] == rates[-1]
    assert min(rates) >= 0 and max(rates) <= 0.3 and len(set(rates)) == 50


def test_pruner_judges_from_the_middle_of_training():
    from search.study.lifecycle import make_pruner

    study = optuna.create_study(pruner=make_pruner("median", 30))
    for _ in range(5):
        good = study.ask()
        for epoch in range(1, 31):
            good.report(0.1, epoch)
        study.tell(good, 0.1)
    bad = study.ask()
    judged = []
    for epoch in range(1, 31):
        bad.report(1.0, epoch)
        judged.append(bad.should_prune())
    assert judged.index(True) + 1 == 15  # judged from the middle epoch on, never before


def test_multivariate_tpe_does_not_fall_back_to_independent_sampling(caplog):
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=5)
            sample(sampler, 15)
    finally:
        optuna.logging.disable_propagation()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    assert not [r for r in caplog.records if "independent" in r.getMessage()]


def test_subset_of_profiles():
    space = SearchSpace(profiles=("decreasing",), max_depth=3)
    candidates = sample(optuna.samplers.RandomSampler(seed=1), 50, space)
    assert {c.profile for c in candidates} == {"decreasing"} and max(c.depth for c in candidates) <= 3


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("search")
    url = f"sqlite:///{folder / 'studies.db'}"
    env = {"ARCHSEARCH_DATA": str(mnist_root)}
    args = [
        "search",
        "--budget",
        "20000",
        "--epochs",
        "2",
        "--data-limit",
        "2000",
        "--storage",
        url,
        "--study",
        "s",
        "--device",
        "cpu",
        "--max-depth",
        "3",
    ]
    first = archsearch(*args, "--trials", "2", env=env, cwd=folder)
    assert first.returncode == 0, first.stderr
    resumed = archsearch(*args, "--trials", "4", env=env, cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    return folder, url, env, first, resumed


def test_search_resumes_to_the_total(finished_search):
    folder, url, _, first, resumed = finished_search
    study = optuna.load_study(study_name="s", storage=url)
    states = [t.state for t in study.trials]
    finished = [s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4
    assert sum(line.startswith("#") for line in first.stdout.splitlines()) == 2
    assert sum(line.startswith("#") for line in resumed.stdout.splitlines()) == 2
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert abs(trial.user_attrs["params"] - 20_000) <= 400
            assert {
                "val_accuracy",
                "test_loss",
                "test_accuracy",
                "epoch_seconds",
                "device",
                "seed",
                "torch_version",
                "widths",
                "profile",
            } <= set(trial.user_attrs)
            assert len(trial.intermediate_values) == 2
    stored = study.user_attrs["config"]
    assert stored["budget"] == 20_000 and stored["trials"] == 4
    with sqlite3.connect(folder / "studies.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_best_exports_a_model_that_reloads(finished_search, tmp_path):
    _, url, env, _, _ = finished_search
    target = tmp_path / "best.pt"
    result = archsearch("best", "--study", "s", "--storage", url, "--export", str(target), "--json", env=env)
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    model, checkpoint = load_model(target)
    assert checkpoint["widths"] == best["widths"]
    assert count_parameters(best["widths"]) == best["params"]
    data = load_data(str(env["ARCHSEARCH_DATA"]), "mnist", "cpu", limit=2000)
    assert evaluate(model, data.test).accuracy == pytest.approx(best["test_accuracy"], abs=1e-9)
    study = optuna.load_study(study_name="s", storage=url)
    assert (
        best["study_trial"]
        == min((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value).number
    )


def test_best_retrain_says_which_data(finished_search, tmp_path):
    _, url, env, _, _ = finished_search
    result = archsearch(
        "best", "--study", "s", "--storage", url, "--retrain", "--export", str(tmp_path / "r.pt"), env=env
    )
    assert result.returncode == 0, result.stderr
    assert "retrained     on all 2,000 training images" in result.stdout
    model, checkpoint = load_model(tmp_path / "r.pt")
    assert checkpoint["metadata"]["trained_on"] == "all 2,000 training images"
    # The file holds the retrained model itself: it scores exactly what `best` reported on the same test images.
    test = load_data(env["ARCHSEARCH_DATA"], "mnist", "cpu", limit=2000).test
    assert evaluate(model, test).accuracy == pytest.approx(checkpoint["metadata"]["test_accuracy"], abs=1e-9)


def test_existing_study_with_other_settings_is_refused(finished_search):
    folder, url, env, _, _ = finished_search
    before = (folder / "studies.db").read_bytes()
    result = archsearch("search", "--budget", "30000", "--storage", url, "--study", "s", "--trials", "1", env=env)
    assert result.returncode == 2 and "other settings" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (folder / "studies.db").read_bytes() == before


def test_a_trial_and_its_retraining_build_the_input_dropout_it_sampled():
    """search/study/objective.build_model is what a trial and `best --retrain` both train."""
    from torch import nn

    from search.engine.config import TrainConfig
    from search.study.objective import build_model

    model = build_model([16], TrainConfig(dropout=0.1, input_dropout=0.2, activation="gelu"))
    assert [type(m) for m in model] == [nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert (model[0].p, model[3].p) == (0.2, 0.1)
    assert [type(m) for m in build_model([16], TrainConfig())] == [nn.Linear, nn.Tanh, nn.Linear]
