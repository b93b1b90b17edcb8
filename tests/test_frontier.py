"""The budget frontier: one winner per budget within its tolerance, retrained with several seeds,
resumed after SIGKILL, bad ranges refused in one line, the plot with the published MLPs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search import api
from search.results.frontier_plot import LITERATURE, frontier_plot
from search.results.plots import Plot, Skipped
from search.results.tables import FrontierRow, Retrained
from tests.conftest import archsearch, command_env, paced_epochs, start_archsearch, stored_states

TINY = ("--budgets", "10000:40000:3", "--trials", "3", "--epochs", "1", "--max-depth", "2", "--seeds", "2",
        "--data-limit", "300", "--device", "cpu")  # fmt: skip
PAUSE = 0.5  # seconds a paced trial sleeps after each epoch it reports


def test_a_frontier_over_three_budgets_has_one_retrained_winner_within_each_budget(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    done = archsearch("frontier", "--study", "f", "--storage", url, *TINY, env=command_env(mnist_root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frontier = api.frontier_of("f", storage=url)
    assert [row.budget for row in frontier.rows] == [10_000, 20_000, 40_000]
    for row in frontier.rows:
        study = optuna.load_study(study_name=row.study, storage=url)
        tolerance = study.user_attrs["config"]["tolerance"]
        assert row.trials == 3 and abs(row.params - row.budget) <= tolerance * row.budget
        assert row.retrained is not None and len(row.retrained.seeds) == len(row.retrained.test_accuracies) == 2
        assert study.user_attrs["retrained"]["trial"] == study.best_trial.number  # the winner by validation loss
    assert (tmp_path / "exports" / "f" / "frontier.html").is_file()
    assert "9. How much does each parameter buy?" in _report(url, tmp_path)


def _report(url: str, tmp_path) -> str:
    assert archsearch("report", "--storage", url, "--out", str(tmp_path / "report")).returncode == 0
    return (tmp_path / "report" / "report.html").read_text()


def test_a_frontier_resumes_to_its_trials_after_sigkill(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    paced = {**dict(zip(TINY[::2], TINY[1::2], strict=True)), "--epochs": "2"}
    argv = ["frontier", "--study", "k", "--storage", url, *(word for pair in paced.items() for word in pair)]
    env = {**os.environ, **command_env(mnist_root)}
    # Paced (conftest.paced_epochs): each trial's epoch lasts PAUSE seconds, asleep, a window wide enough for the
    # kill to land mid-trial; the resume runs unpaced, in this process.
    first = start_archsearch(*argv, env={**env, **paced_epochs(tmp_path, PAUSE)}, cwd=tmp_path)
    deadline = time.monotonic() + 600  # a hang guard: the second budget's first trial starts long before
    while TrialState.RUNNING not in _states(url, "k@20000"):
        assert time.monotonic() < deadline and first.poll() is None, "no trial of the second budget ran"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert TrialState.RUNNING in _states(url, "k@20000")  # killed mid-trial, in the second budget
    before = api.frontier_of("k", storage=url).rows[0]
    done = archsearch(*argv, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = api.frontier_of("k", storage=url).rows
    for row in rows:
        states = _states(url, row.study)
        assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 3
        assert TrialState.RUNNING not in states and row.retrained is not None
    assert (rows[0].study, rows[0].widths, rows[0].val_loss) == (before.study, before.widths, before.val_loss)


def _states(url: str, study: str) -> list[TrialState]:
    return stored_states(url, study)


@pytest.mark.parametrize(
    ("budgets", "says"),
    [
        ("", "budgets is empty; give at least one value"),
        ("40000:10000", "a range goes from low to high"),
        ("100:5000", "805 parameters is the smallest MLP"),
        ("800,20000", "805 parameters is the smallest MLP"),
        ("5000:5000", "a range needs two different ends"),
        ("10000:20000:1", "must be between 2 and 64"),
        ("10000:20000:3:4", "expected LOW:HIGH or LOW:HIGH:COUNT"),
    ],
)
def test_a_bad_budget_range_is_one_line_and_writes_nothing(budgets, says, tmp_path):
    done = archsearch("frontier", "--budgets", budgets, "--storage", f"sqlite:///{tmp_path / 'b.db'}", cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda url: api.frontier(budgets=[], storage=url),
        lambda url: api.frontier(budgets=[100], storage=url),
        lambda url: api.frontier(budgets=[20_000], seeds=0, storage=url),
        lambda url: api.frontier(budgets=[20_000], budget=20_000, storage=url),
        lambda url: api.frontier(budgets=[20_000], study="a/b", storage=url),
    ],
    ids=["no budgets", "too small", "no seeds", "a budget keyword", "a name with a slash"],
)
def test_the_api_refuses_a_bad_frontier_before_writing(call, tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with pytest.raises(api.UsageError):
        call(url)
    assert not (tmp_path / "b.db").exists()


def _row(budget: int, params: int, error: float) -> FrontierRow:
    accuracies = [1 - error - 0.001, 1 - error + 0.001]
    retrained = Retrained("all images", 0.1, 0.1, sum(accuracies) / 2, [0, 1], accuracies)
    return FrontierRow(budget, f"f@{budget}", 5, "uniform", (40,), params, 0.1, retrained)


def test_the_frontier_plot_carries_the_published_results_and_each_winners_widths():
    plot = frontier_plot([_row(30_000, 31_000, 0.03), _row(100_000, 99_000, 0.018)], "f")
    assert isinstance(plot, Plot)
    ours, published = plot.figure.data
    assert list(ours.x) == [31_000, 99_000] and [round(y, 6) for y in ours.y] == [3.0, 1.8]
    assert list(ours.text) == ["40", "40"] and list(ours.error_y.array) == pytest.approx([0.1414, 0.1414], abs=1e-3)
    assert list(published.x) == [ref.params for ref in LITERATURE]
    assert 266_610 in published.x and 636_010 in published.x  # LeCun's 300-100 and Simard's 800
    assert any(text.startswith("Simard 2003: 800") for text in published.text)
    assert plot.figure.layout.xaxis.type == "log"
    assert json.dumps(plot.rows)  # the CSV behind it


def test_a_frontier_without_a_retrained_winner_has_no_plot_yet():
    unretrained = FrontierRow(20_000, "f@20000", 3, "uniform", (24,), 19_690, 0.5, None)
    assert isinstance(frontier_plot([unretrained], "f"), Skipped)


def test_best_retrains_with_several_seeds_and_reports_mean_and_spread(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 's.db'}"
    env = command_env(mnist_root)
    quick = ("--epochs", "1", "--data-limit", "1000", "--device", "cpu")
    made = archsearch("search", "--study", "s", "--storage", url, "--trials", "2", "--budget", "20000",
                      "--max-depth", "2", *quick, env=env, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = archsearch("best", "--study", "s", "--storage", url, "--retrain", "--seeds", "3", "--json",
                      "--device", "cpu", env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    retrained = json.loads(done.stdout)["retrained"]
    seed = json.loads(done.stdout)["train_config"]["seed"]
    assert retrained["seeds"] == [seed, seed + 1, seed + 2] and len(set(retrained["test_accuracies"])) > 1
    assert retrained["test_accuracy"] == pytest.approx(sum(retrained["test_accuracies"]) / 3)
    text = archsearch("best", "--study", "s", "--storage", url, "--retrain", "--seeds", "2", "--device", "cpu",
                      env=env, cwd=tmp_path).stdout  # fmt: skip
    assert "(mean ± std over seeds)" in text and f"seeds {seed}, {seed + 1}" in text


def test_the_frontier_command_is_listed():
    done = subprocess.run([sys.executable, "-m", "search", "frontier", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--budgets" in done.stdout and "--seeds" in done.stdout


# A stopped frontier prints the frontier command that resumes it ----------------------------------------

SMALL = ("--budgets", "10000,20000", "--trials", "3", "--max-depth", "2", "--seeds", "1", "--data-limit", "300",
         "--device", "cpu")  # fmt: skip


def _resumed_as_printed(printed: str, url: str, name: str, epochs: int, env: dict, cwd) -> list[FrontierRow]:
    """Run the one resume command `printed` says, as a user pastes it, and check that it completed the frontier
    asked for: each budget exactly its trials, with the settings of the first command, its winner retrained."""
    (hint,) = [line for line in printed.splitlines() if "Resume with: " in line]
    words = shlex.split(hint.split("Resume with: ", 1)[1])
    assert words[:2] == ["archsearch", "frontier"] and f"--storage={url}" in words, words
    done = archsearch(*words[1:], env=env, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = api.frontier_of(name, storage=url).rows
    assert [row.budget for row in rows] == [10_000, 20_000]
    for row in rows:
        states = _states(url, row.study)
        assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 3, row.study
        assert TrialState.RUNNING not in states and row.retrained is not None and len(row.retrained.seeds) == 1
        stored = optuna.load_study(study_name=row.study, storage=url).user_attrs["config"]
        assert (stored["epochs"], stored["data_limit"], stored["space"]["max_depth"]) == (epochs, 300, 2)
    return rows


def test_a_frontier_stopped_at_its_timeout_prints_the_frontier_command_that_completes_it(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 't.db'}"
    name = "it's t"  # a name that needs quoting
    env = command_env(mnist_root)
    argv = ["frontier", "--study", name, "--storage", url, *SMALL, "--epochs", "1", "--no-warm-start"]
    stopped = archsearch(*argv, "--timeout", "0.000001s", env=env, cwd=tmp_path)  # over before the first budget
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped at --timeout before budget 10000 was searched. Resume with: " in stopped.stdout
    assert "--no-warm-start" in stopped.stdout and "--timeout" not in stopped.stdout.split("Resume with: ")[1]
    rows = _resumed_as_printed(stopped.stdout, url, name, 1, env, tmp_path)
    for row in rows:  # searched cold, as asked: no trial of the second budget was queued from the first
        assert optuna.load_study(study_name=row.study, storage=url).user_attrs["config"]["warm_start"] == []


def test_a_frontier_terminated_in_its_second_budget_prints_the_frontier_command_that_completes_it(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 's.db'}"
    env = {**os.environ, **command_env(mnist_root)}
    err = tmp_path / "err"
    argv = ["frontier", "--study", "s", "--storage", url, *SMALL, "--epochs", "2"]
    first = start_archsearch(*argv, env={**env, **paced_epochs(tmp_path, PAUSE)}, cwd=tmp_path, stderr=err)
    try:
        deadline = time.monotonic() + 600  # a hang guard: the second budget's first trial starts long before
        while TrialState.RUNNING not in (_states(url, "s@20000") or []):
            assert time.monotonic() < deadline and first.poll() is None, err.read_text()
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=300) != 0
    finally:
        first.kill()
    printed = err.read_text()
    assert "terminated; the running trials were marked failed. Resume with: archsearch frontier " in printed, printed
    assert "archsearch search" not in printed
    _resumed_as_printed(printed, url, "s", 2, command_env(mnist_root), tmp_path)
