"""The API as an Optuna user expects it: each result holds the optuna.Study it ran or read, figures are
plotly Figures, and importing or calling archsearch leaves Optuna's process-wide settings as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing

import optuna
import plotly.graph_objects as go

from search import api
from tests.conftest import REPO
from tests.studies import add_grid_study, add_search_study

OWN_STUDY = """
import json, sys, warnings
import optuna

optuna.logging.set_verbosity(optuna.logging.INFO)
filters = list(warnings.filters)
from search import api
imported = {"verbosity": optuna.logging.get_verbosity(), "filters_kept": list(warnings.filters) == filters}

url = sys.argv[1]
print("ARCHSEARCH-START", file=sys.stderr, flush=True)
run = api.search(study="s", storage=url, budget=20000, trials=1, epochs=1, max_depth=1, data_limit=200,
                 device="cpu", quiet=True)
try:
    api.search(study="s", storage=url, budget=30000)
except api.UsageError:
    pass
print("ARCHSEARCH-END", file=sys.stderr, flush=True)
after = {"verbosity": optuna.logging.get_verbosity(), "filters_kept": list(warnings.filters) == filters}
optuna.create_study(study_name="own").optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
print(json.dumps({
    "imported": imported,
    "after": after,
    "run_study": [type(run.optuna_study).__name__, run.optuna_study.study_name, len(run.optuna_study.trials)],
    "best_study": run.best.optuna_study is run.optuna_study,
}))
"""


def test_importing_and_calling_the_api_leave_optunas_logging_and_warnings_as_they_were(tmp_path, mnist_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARCHSEARCH_DATA": str(mnist_root)}
    done = subprocess.run(
        [sys.executable, "-c", OWN_STUDY, f"sqlite:///{tmp_path / 's.db'}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == result["after"] == {"verbosity": optuna.logging.INFO, "filters_kept": True}
    assert result["run_study"] == ["Study", "s", 1] and result["best_study"]
    during = done.stderr.split("ARCHSEARCH-START", 1)[1].split("ARCHSEARCH-END", 1)
    assert "Trial 0 finished" not in during[0] and "A new study created" not in during[0]  # archsearch's own run
    assert "A new study created in memory with name: own" in during[1] and "Trial 0 finished" in during[1]


def test_reading_results_hold_the_optuna_study_they_read(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "s")
    add_grid_study(url, "g")
    best = api.best("s", storage=url)
    assert isinstance(best.optuna_study, optuna.Study) and best.optuna_study.study_name == "s"
    assert best.optuna_study.best_trial.number == best.study_trial
    assert "optuna_study" not in best.to_json() and "optuna_study" not in repr(best)
    exported = api.export("g", storage=url, out=str(tmp_path / "e"), formats="html")
    assert exported.optuna_study.study_name == "g" and len(exported.optuna_study.trials) == 16
    report = api.report(storage=url, out=str(tmp_path / "r"))
    assert sorted(report.optuna_studies) == ["g", "s"]
    assert all(isinstance(study, optuna.Study) for study in report.optuna_studies.values())


def test_a_frontier_holds_each_budgets_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    for budget in (40_000, 20_000):
        add_search_study(url, f"f@{budget}", budget=budget).set_user_attr("frontier", "f")
    add_search_study(url, "other@30000", budget=30_000)  # a study of no frontier, or of another one
    frontier = api.frontier_of("f", storage=url)
    assert list(frontier.optuna_studies) == [row.budget for row in frontier.rows] == [20_000, 40_000]
    assert {budget: study.study_name for budget, study in frontier.optuna_studies.items()} == {
        20_000: "f@20000",
        40_000: "f@40000",
    }
    assert frontier.figure is None and "retrained" in frontier.plot.reason  # no winner retrained: nothing to draw


def test_figures_are_typed_and_returned_as_plotly_figures(tmp_path):
    assert typing.get_type_hints(api.figures)["return"] == dict[str, go.Figure]
    assert typing.get_type_hints(api.Frontier.figure.fget)["return"] == go.Figure | None
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "s")
    figures = api.figures("s", storage=url)
    assert figures and all(isinstance(figure, go.Figure) for figure in figures.values())


def test_a_worker_joins_a_study_from_python_and_holds_it(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    quick = {"epochs": 1, "max_depth": 1, "data_limit": 200, "device": "cpu", "quiet": True}
    api.search(study="w", storage=url, budget=20_000, trials=1, **quick)
    joined = api.worker("w", storage=url, trials=2, device="cpu", quiet=True)
    assert (joined.study, joined.trials, joined.finished, joined.stopped_at_timeout) == ("w", 2, 2, False)
    assert joined.optuna_study.study_name == "w" and len(joined.optuna_study.trials) == 2


def test_worker_and_dashboard_refuse_bad_arguments_in_one_line_before_touching_the_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_grid_study(url, "g")
    optuna.create_study(study_name="theirs", storage=url)
    before = (tmp_path / "s.db").read_bytes()
    refused = {
        "study 'theirs' was not made by archsearch": lambda: api.worker("theirs", storage=url),
        "worker_index must be between 0": lambda: api.worker("g", storage=url, worker_index=-1),
        "trials must be positive": lambda: api.worker("g", storage=url, trials=0),
        "no study named 'nope'": lambda: api.worker("nope", storage=url),
        "port must be positive and at most 65,535": lambda: api.dashboard(url, port=0),
        "refresh must be between 0": lambda: api.dashboard(url, refresh=-1),
    }
    for expected, call in refused.items():
        try:
            call()
        except api.UsageError as error:
            assert expected in str(error) and "\n" not in str(error), error
        else:
            raise AssertionError(f"not refused: {expected}")
    assert (tmp_path / "s.db").read_bytes() == before
