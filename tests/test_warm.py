"""Warm starts: a study first tries the best trials of stored search studies, at any budget, once; a bad
source is refused in one line before anything is written; the frontier hands each budget's best to the next.

Source studies for the planning tests are made through the real `space.suggest` without training (values
given by the test), so they hold exactly the parameters a search stores; the end-to-end tests train a few
trials on a few hundred images through the real entry point."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial, TrialState

from models.budget import count_parameters
from models.profiles import PROFILES, profile_widths
from search import api
from search.results.frontier_plot import frontier_plot
from search.results.plots import Plot
from search.results.tables import FrontierRow, Retrained, trial_rows
from search.study.config import SearchSpace, StudyConfig, to_dict
from search.study.lifecycle import check_settings, stored_form
from search.study.record import StudyRecord, TrialRecord, trial_attrs, write_study
from search.study.space import suggest
from search.study.warm import contains, fitted, plan_warm_start, queue_warm_start, space_distributions
from tests.conftest import archsearch, command_env
from tests.studies import add_grid_study

ONE_LINE_ERROR = re.compile(r"^archsearch( [a-z]+)?: error: \S.*$")
TINY = ("--epochs", "1", "--max-depth", "2", "--data-limit", "300", "--device", "cpu")


def add_source(url: str, name: str, config: StudyConfig, values, kind: str | None = "search", seed: int = 0):
    """A search study as `archsearch search` stores it: one trial per value, its parameters suggested by the
    search's own `suggest` (a random sampler), its value the given validation loss."""
    study = optuna.create_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=seed))
    if kind is not None:
        write_study(study, kind=kind, config=stored_form(to_dict(config)))
    for value in values:
        trial = study.ask()
        suggest(trial, config.space, config.budget, config.tolerance, config.epochs, config.seed)
        study.tell(trial, value)
    return study


def _ranked(study: optuna.Study) -> list:
    return sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)


def test_the_plan_takes_each_sources_best_by_validation_loss_interleaved_by_rank(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    low = add_source(url, "low", StudyConfig(name="low", budget=20_000), [0.5, 0.1, 0.3, 0.2], seed=1)
    high = add_source(url, "high", StudyConfig(name="high", budget=50_000), [0.4, 0.05, 0.6], seed=2)
    config = StudyConfig(name="new", budget=100_000, warm_start=("low", "high", "low"), warm_start_top=2, storage=url)
    plan = plan_warm_start(url, config)
    low_best, high_best = _ranked(low), _ranked(high)
    expected = [low_best[0], high_best[0], low_best[1], high_best[1]]
    assert [(w.study, w.trial) for w in plan.trials] == [
        ("low", expected[0].number),
        ("high", expected[1].number),
        ("low", expected[2].number),
        ("high", expected[3].number),
    ]
    assert [w.params for w in plan.trials] == [t.params for t in expected]  # as they are, every parameter
    assert [w.val_loss for w in plan.trials] == [0.1, 0.05, 0.2, 0.4]
    assert plan.sources == ("low", "high") and plan.outside_space == 0
    capped = plan_warm_start(url, StudyConfig(name="new", budget=100_000, trials=3, warm_start=("low", "high")))
    assert len(capped.trials) == 3  # no more than the study's trials: more would never run


def test_the_same_parameters_from_two_sources_are_queued_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    config = StudyConfig(name="a", budget=20_000)
    first = add_source(url, "a", config, [0.1])
    copy = optuna.create_study(study_name="b", storage=url)
    write_study(copy, kind="search", config=stored_form(to_dict(config)))
    copy.enqueue_trial(first.best_trial.params)
    trial = copy.ask()
    suggest(trial, config.space, config.budget, config.tolerance, config.epochs, 0)
    copy.tell(trial, 0.2)
    plan = plan_warm_start(url, StudyConfig(name="new", warm_start=("a", "b")))
    assert [(w.study, w.trial) for w in plan.trials] == [("a", 0)]


def test_a_value_outside_the_new_space_drops_the_candidate_and_a_missing_parameter_is_dropped(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    wide = SearchSpace(max_depth=4, input_dropout=(0.0, 0.2), optimizers=("adam", "adamw", "sgd"))
    source = add_source(
        url, "deep", StudyConfig(name="deep", budget=50_000, space=wide), [0.1 * i for i in range(1, 13)]
    )
    narrow = SearchSpace(max_depth=2, optimizers=("adam", "adamw"), input_dropout=(0.0, 0.0))
    plan = plan_warm_start(
        url, StudyConfig(name="new", budget=50_000, space=narrow, warm_start=("deep",), warm_start_top=12)
    )
    fits = [t for t in source.trials if t.params["depth"] <= 2 and t.params["optimizer"] in ("adam", "adamw")]
    assert fits and len(fits) < len(source.trials)  # the random source has candidates on both sides
    assert [w.trial for w in plan.trials] == [t.number for t in sorted(fits, key=lambda t: t.value)]
    assert plan.outside_space == len(source.trials) - len(fits)
    for warm in plan.trials:
        original = source.trials[warm.trial].params
        dropped = {"relative_width_2", "relative_width_3", "input_dropout"}
        assert warm.params == {k: v for k, v in original.items() if k not in dropped}
    assert "left out, outside this study's search space" in plan.summary()


def test_a_warm_start_cut_off_before_its_record_queues_nothing_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    add_source(url, "s", StudyConfig(name="s"), [0.3, 0.1, 0.2])
    config = StudyConfig(name="new", warm_start=("s",), warm_start_top=3, storage=url)
    plan = plan_warm_start(url, config)
    study = optuna.create_study(study_name="new", storage=url)
    first = plan.trials[0]  # queued, then the run was killed before the rest and the record
    study.enqueue_trial(first.params, user_attrs=trial_attrs(warm_start={"study": "s", "trial": first.trial}))
    again = plan_warm_start(url, config)
    assert again == plan and queue_warm_start(study, again)
    assert [TrialRecord.of(t).warm_start["trial"] for t in study.trials] == [1, 2, 0]
    assert plan_warm_start(url, config) is None  # done: a resume plans nothing


def test_a_parameter_the_source_lacks_is_left_to_the_sampler(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    shallow = SearchSpace(max_depth=2, input_dropout=(0.0, 0.0))
    source = add_source(url, "shallow", StudyConfig(name="shallow", space=shallow), [0.3])
    config = StudyConfig(name="new", space=SearchSpace(max_depth=3, input_dropout=(0.0, 0.2)), warm_start=("shallow",))
    plan = plan_warm_start(url, config)
    study = optuna.create_study(study_name="new", storage=url)
    assert queue_warm_start(study, plan) and not queue_warm_start(study, plan)
    assert len(study.trials) == 1  # the second call found the warm start done
    trial = study.ask()
    suggest(trial, config.space, config.budget, config.tolerance, config.epochs, 0)
    assert {k: trial.params[k] for k in source.best_trial.params} == source.best_trial.params
    assert {"relative_width_2", "input_dropout"} <= trial.params.keys() - source.best_trial.params.keys()
    assert TrialRecord.of(study.trials[0]).warm_start == {"study": "shallow", "trial": 0}


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 4),
    profile=st.sampled_from(PROFILES),
    taper=st.floats(0.1, 1.0),
    free=st.lists(st.floats(0.1, 1.0), min_size=4, max_size=4),
    budgets=st.lists(st.integers(50_000, 700_000), min_size=2, max_size=2),  # one unit of a first layer: 1.6%
)
def test_the_same_parameters_give_the_same_form_solved_for_each_budget(depth, profile, taper, free, budgets):
    """Why a warm start queues parameters as they are: only the widths depend on the budget."""
    space = SearchSpace(max_depth=4)
    params = {
        "depth": depth, "profile": profile, "taper": taper, "use_weight_decay": True, "weight_decay": 1e-4,
        "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "dropout": 0.1, "input_dropout": 0.1,
        "schedule": "cosine", "activation": "relu",
        **{f"relative_width_{i}": width for i, width in enumerate(free)},
    }  # fmt: skip
    first, second = (suggest(FixedTrial(params), space, budget, 0.02, 3, 0) for budget in budgets)
    assert (first.profile, first.depth, first.train) == (second.profile, second.depth, second.train)
    for candidate, budget in zip((first, second), budgets, strict=True):
        assert candidate.widths == profile_widths(profile, depth, budget, 0.02, taper, free)
        if candidate.widths is not None:
            assert len(candidate.widths) == depth
            assert abs(count_parameters(candidate.widths) - budget) <= 0.02 * budget
    if profile == "uniform" or depth == 1:
        assert first.widths is not None and second.widths is not None


def test_the_warm_start_settings_do_not_make_another_experiment(tmp_path):
    """They act before the first trial only: a study stored before them, or with others, resumes."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    config = StudyConfig(name="s", storage=url)
    study = add_source(url, "s", config, [0.1])
    older = {k: v for k, v in study.user_attrs["config"].items() if k not in ("warm_start", "warm_start_top")}
    write_study(study, config=older)
    storage = optuna.storages.RDBStorage(url)
    for asked in (dataclasses.replace(config, warm_start=("x",), warm_start_top=3), config):
        settings = {k: v for k, v in to_dict(asked).items() if k != "name"}
        assert check_settings(storage, "s", "search", settings).study_name == "s"
    other = {k: v for k, v in to_dict(dataclasses.replace(config, budget=60_000)).items() if k != "name"}
    with pytest.raises(api.UsageError, match="exists with other settings"):
        check_settings(storage, "s", "search", other)


def test_the_distributions_are_those_the_search_suggests():
    config = StudyConfig(space=SearchSpace(max_depth=3, input_dropout=(0.0, 0.0)))
    names = set(space_distributions(config))
    assert {"depth", "profile", "taper", "relative_width_2", "lr", "optimizer", "schedule"} <= names
    assert "relative_width_3" not in names and "input_dropout" not in names  # (0, 0): not searched
    searched = StudyConfig(space=SearchSpace(input_dropout=(0.0, 0.2)))
    assert space_distributions(searched)["input_dropout"] == FloatDistribution(0.0, 0.2)


@pytest.mark.parametrize(
    ("distribution", "value", "inside"),
    [
        (CategoricalDistribution([True, False]), True, True),
        (CategoricalDistribution([64, 128]), 128, True),
        (CategoricalDistribution([1, 2]), True, False),  # a bool is not the number 1
        (CategoricalDistribution(["adam"]), "sgd", False),
        (IntDistribution(1, 4), 4, True),
        (IntDistribution(1, 4), 5, False),
        (IntDistribution(0, 8, step=2), 3, False),
        (IntDistribution(1, 4), 2.0, False),
        (FloatDistribution(1e-4, 1e-2, log=True), 1e-2, True),
        (FloatDistribution(1e-4, 1e-2, log=True), 0.02, False),
        (FloatDistribution(0.0, 1.0), float("nan"), False),
        (FloatDistribution(0.0, 1.0), "0.5", False),
    ],
)
def test_contains_reads_the_distributions_public_fields(distribution, value, inside):
    assert contains(distribution, value) is inside
    assert (fitted({"x": value, "unknown": 1}, {"x": distribution}) == {"x": value}) is inside


def _search(url: str, study: str, *flags: str, mnist_root, cwd: Path):
    return archsearch("search", "--study", study, "--storage", url, *TINY, *flags, env=command_env(mnist_root), cwd=cwd)


def test_a_warm_study_at_another_budget_tries_the_sources_best_first_and_never_queues_twice(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    made = _search(url, "src", "--budget", "20000", "--trials", "3", mnist_root=mnist_root, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    warm = ("--budget", "40000", "--warm-start", "src", "--warm-start-top", "2")
    done = _search(url, "warm", *warm, "--trials", "3", mnist_root=mnist_root, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warm start: 2 trial(s) queued from 'src' (the best 2 of each by validation loss)" in done.stdout
    source, study = (optuna.load_study(study_name=name, storage=url) for name in ("src", "warm"))
    best = _ranked(source)
    first, second, sampled = study.trials
    assert first.params == best[0].params and second.params == best[1].params  # exactly, and in this order
    assert TrialRecord.of(first).warm_start == {"study": "src", "trial": best[0].number}
    assert TrialRecord.of(second).warm_start == {"study": "src", "trial": best[1].number}
    assert TrialRecord.of(sampled).warm_start is None
    tolerance = StudyRecord.of(study).settings["tolerance"]
    for trial in (first, second):  # the same form, its widths solved for the new budget
        record, origin = TrialRecord.of(trial), TrialRecord.of(source.trials[TrialRecord.of(trial).warm_start["trial"]])
        assert abs(record.params - 40_000) <= tolerance * 40_000 and abs(origin.params - 20_000) <= tolerance * 20_000
        assert record.profile == origin.profile and len(record.widths) == len(origin.widths)
    assert StudyRecord.of(study).warm_start == {"sources": ["src"], "queued": 2, "outside_space": 0}
    rows = trial_rows(study.trials)
    assert [(r.warm_start_study, r.warm_start_trial) for r in rows] == [
        ("src", best[0].number),
        ("src", best[1].number),
        (None, None),
    ]

    # A resume, with or without the flags, runs on and queues nothing again.
    for trials, flags in (("4", warm), ("5", ("--budget", "40000"))):
        resumed = _search(url, "warm", *flags, "--trials", trials, mnist_root=mnist_root, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert "warm start:" not in resumed.stdout
    study = optuna.load_study(study_name="warm", storage=url)
    assert len(study.trials) == 5 and sum(TrialRecord.of(t).warm_start is not None for t in study.trials) == 2

    exported = archsearch(
        "export", "--study", "warm", "--storage", url, "--format", "html", "--out", str(tmp_path / "x")
    )
    assert exported.returncode == 0, exported.stderr
    with open(tmp_path / "x" / "loss-vs-params.csv", newline="") as handle:
        column = {int(row["number"]): row["warm_start"] for row in csv.DictReader(handle)}
    complete = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    assert column == {n: (f"src#{best[n].number}" if n < 2 else "") for n in complete}


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory) -> bytes:
    """A database holding a good source and every kind of bad one, made once; each case gets a copy."""
    path = tmp_path_factory.mktemp("sources") / "w.db"
    url = f"sqlite:///{path}"
    config = StudyConfig(name="s", budget=20_000)
    add_source(url, "s", config, [0.2, 0.1])
    add_source(url, "fashion", StudyConfig(name="fashion", budget=20_000, dataset="fashion-mnist"), [0.3])
    add_source(url, "empty", config, [])
    add_source(url, "foreign", config, [0.4], kind=None)
    cold = StudyConfig(
        name="cold", budget=20_000, epochs=1, data_limit=300, storage=url, space=SearchSpace(max_depth=2)
    )
    add_source(url, "cold", cold, [0.5])
    add_grid_study(url, "g")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("study", "sources", "says"),
    [
        ("new", "nowhere", "no study named 'nowhere' to warm-start from"),
        ("new", "s,nowhere", "no study named 'nowhere' to warm-start from"),
        ("new", "g", "study 'g' is a grid study, not a search study"),
        ("new", "foreign", "study 'foreign' was not made by archsearch"),
        ("new", "fashion", "study 'fashion' searched fashion-mnist, not mnist"),
        ("new", "empty", "study 'empty' has no completed trial to warm-start from"),
        ("s2", "s2", "study 's2' cannot warm-start from itself"),
        ("cold", "s", "study 'cold' already has 1 trial(s) without a warm start"),
    ],
)
def test_a_bad_source_is_one_line_and_writes_nothing(study, sources, says, bad_sources, tmp_path, mnist_root):
    path = tmp_path / "w.db"
    url = f"sqlite:///{path}"
    path.write_bytes(bad_sources)
    before = path.read_bytes()
    done = _search(
        url, study, "--budget", "20000", "--trials", "1", "--warm-start", sources, mnist_root=mnist_root, cwd=tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and ONE_LINE_ERROR.match(lines[0]) and says in lines[0], done.stderr
    assert path.read_bytes() == before


def test_a_source_in_a_storage_that_does_not_exist_is_refused_and_creates_nothing(tmp_path, mnist_root):
    path = tmp_path / "none.db"
    done = _search(f"sqlite:///{path}", "new", "--warm-start", "s", mnist_root=mnist_root, cwd=tmp_path)
    assert done.returncode == 2 and "cannot warm-start from 's'" in done.stderr, done.stderr
    assert not path.exists()


def test_the_api_takes_warm_start_as_a_list(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    add_source(url, "s", StudyConfig(name="s"), [0.1])
    with pytest.raises(api.UsageError, match="no study named 'other' to warm-start from"):
        api.search(study="new", storage=url, warm_start=["s", "other"], quiet=True)
    with pytest.raises(api.UsageError, match="warm_start must be a list"):
        api.search(study="new", storage=url, warm_start="s", quiet=True)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]


def test_the_api_frontier_takes_warm_start_as_true_or_false(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with pytest.raises(api.UsageError, match="warm_start must be True or False"):
        api.frontier(budgets=[20_000], storage=url, warm_start=["f@10000"], quiet=True)
    with pytest.raises(api.UsageError, match="unexpected keyword argument 'warm_start_from'"):
        api.frontier(budgets=[20_000], storage=url, warm_start_top=2, warm_start_from=["x"], quiet=True)
    assert not (tmp_path / "f.db").exists()


def test_the_frontier_warm_starts_a_budget_from_the_nearest_one_below_that_completed_a_trial(tmp_path):
    from search.api.frontier import _warm_setting

    url = f"sqlite:///{tmp_path / 'f.db'}"
    add_source(url, "f@10000", StudyConfig(name="f@10000", budget=10_000), [0.3])
    add_source(url, "f@20000", StudyConfig(name="f@20000", budget=20_000), [0.2])
    add_source(url, "f@40000", StudyConfig(name="f@40000", budget=40_000), [])  # every trial pruned, say
    below = ["f@40000", "f@20000", "f@10000"]
    assert _warm_setting(url, "f@80000", below, True) == {"warm_start": ("f@20000",)}
    assert _warm_setting(url, "f@80000", below, False) == {"warm_start": ()}
    assert _warm_setting(url, "f@80000", [], True) == {"warm_start": ()}
    add_source(url, "f@80000", StudyConfig(name="f@80000", budget=80_000), [0.1])  # started cold: keeps its start
    assert _warm_setting(url, "f@80000", below, True) == {}
    assert _warm_setting(f"sqlite:///{tmp_path / 'none.db'}", "f@10000", [], True) == {"warm_start": ()}


def _frontier(url: str, name: str, *flags: str, mnist_root, cwd: Path):
    argv = ("frontier", "--study", name, "--storage", url, "--budgets", "10000,20000", "--trials", "2", "--seeds", "1")
    return archsearch(*argv, *TINY, "--format", "html", *flags, env=command_env(mnist_root), cwd=cwd)


def test_the_frontier_warm_starts_each_budget_from_the_ones_below_and_says_so(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    done = _frontier(url, "f", "--warm-start-top", "1", mnist_root=mnist_root, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    low, high = (optuna.load_study(study_name=f"f@{b}", storage=url) for b in (10_000, 20_000))
    assert StudyRecord.of(low).warm_start is None  # nothing below the first budget
    assert high.trials[0].params == _ranked(low)[0].params
    assert TrialRecord.of(high.trials[0]).warm_start == {"study": "f@10000", "trial": _ranked(low)[0].number}
    assert TrialRecord.of(high.trials[1]).warm_start is None
    rows = api.frontier_of("f", storage=url).rows
    winner = _ranked(high)[0]
    expected = f"f@10000#{_ranked(low)[0].number}" if winner.number == 0 else None
    assert rows[1].warm_start == expected and rows[0].warm_start is None
    lines = done.stdout.splitlines()
    assert "warm start: 1 trial(s) queued from 'f@10000' (the best 1 of each by validation loss)" in lines
    header = lines.index(next(line for line in lines if line.startswith("frontier 'f'"))) + 1
    assert lines[header].endswith("warm start") and lines[header + 1].endswith(" -")
    assert lines[header + 2].endswith(f"from {expected}" if expected else " -")
    with open(tmp_path / "exports" / "f" / "frontier.csv", newline="") as handle:
        table = {row["study"]: row["warm_start"] for row in csv.DictReader(handle)}
    assert table["f@20000"] == (expected or "") and table["f@10000"] == ""

    cold = _frontier(url, "c", "--no-warm-start", mnist_root=mnist_root, cwd=tmp_path)
    assert cold.returncode == 0, cold.stderr
    study = optuna.load_study(study_name="c@20000", storage=url)
    assert StudyRecord.of(study).warm_start is None
    assert all(TrialRecord.of(t).warm_start is None for t in study.trials)


def test_the_frontier_plot_marks_the_winners_from_a_warm_start():
    retrained = Retrained("all", 0.1, 0.1, 0.98, [0], [0.98])
    rows = [
        FrontierRow(10_000, "f@10000", 2, "uniform", (12,), 9_550, 0.2, retrained),
        FrontierRow(20_000, "f@20000", 2, "uniform", (25,), 19_885, 0.1, retrained, warm_start="f@10000#1"),
    ]
    plot = frontier_plot(rows, "f")
    assert isinstance(plot, Plot)
    ours = plot.figure.data[0]
    assert list(ours.text) == ["12", "25 (warm)"] and list(ours.marker.symbol) == ["circle", "star"]
    assert "warm start from f@10000#1" in ours.customdata[1][3]
    assert [row.get("warm_start") for row in plot.rows[:2]] == [None, "f@10000#1"]
