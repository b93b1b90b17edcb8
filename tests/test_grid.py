"""Grid studies: every (budget, depth, seed) trains exactly once, with workers and across resumes."""

from __future__ import annotations

import hashlib
import itertools
import re
import signal
import sqlite3
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.engine.config import TrainConfig
from search.engine.data import load_data
from search.errors import UsageError
from search.study.grid import (
    GridConfig,
    GridObjective,
    GridPoint,
    config_from_dict,
    enqueue_missing,
    grid_points,
    make_grid_sampler,
    point_of,
    settings,
)
from search.study.lifecycle import create_study
from search.study.storage import open_storage
from search.study.workers import FINISHED, run_until
from tests.conftest import REPO, archsearch, command_env, paced_epochs, start_archsearch, stored_states, wait_for

GRID = ("--budgets", "1000,2000", "--depths", "1,2", "--seeds", "2")
FULL = sorted(GridPoint(b, d, s) for b in (1000, 2000) for d in (1, 2) for s in (0, 1))
# Small and quick: a few hundred images; one thread per process on the 2-core machine.
QUICK = ("--epochs", "1", "--data-limit", "300", "--device", "cpu")
INTERRUPT_PAUSE = 0.5
WORKERS_PAUSE = 0.2  # after the barrier, each epoch's pause keeps the two workers' trials overlapping, asleep


@pytest.fixture()
def env(mnist_root: Path) -> dict[str, str]:
    return command_env(mnist_root, PYTHONUNBUFFERED="1")


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def check_exactly_once(trials: list[optuna.trial.FrozenTrial], points: list[GridPoint] = FULL) -> None:
    """Each point finished once; any other trial failed without training to the end."""
    finished = [t for t in trials if t.state in FINISHED]
    assert sorted(point_of(t) for t in finished) == sorted(points)
    assert all(t.state == TrialState.COMPLETE for t in finished)
    for trial in trials:
        if trial.state not in FINISHED:
            assert trial.state == TrialState.FAIL and "train_loss" not in trial.user_attrs


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_grid_with_two_workers_trains_every_point_once(tmp_path, env):
    """On SQLite (tests/test_workers.py runs it on PostgreSQL): the two workers' trials overlap, paced
    (conftest.paced_epochs: each process's first trial waits at its first epoch for the other's), nothing is
    locked, and each point trains once however the two pop the queue."""
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    out, err = tmp_path / "out", tmp_path / "err"
    paced = {**env, **paced_epochs(tmp_path, WORKERS_PAUSE, processes=2)}
    command = ["grid", *GRID, *QUICK, "--workers", "2", "--study", "g", "--storage", url]
    process = start_archsearch(*command, env=paced, cwd=tmp_path, stdout=out, stderr=err)
    try:
        assert process.wait(timeout=600) == 0, err.read_text()  # a hang guard
    finally:
        process.kill()  # only if the hang guard expired
    stdout, stderr = out.read_text(), err.read_text()
    assert "Traceback" not in stderr and "database is locked" not in stdout + stderr
    with sqlite3.connect(tmp_path / "grid.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    trials = trials_of(url, "g")
    check_exactly_once(trials)
    done = [t for t in trials if t.state in FINISHED]
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a, b in itertools.combinations(done, 2))  # fmt: skip
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            attrs = trial.user_attrs
            assert trial.value == attrs["train_loss"] and attrs["seed"] == trial.params["seed"]
            assert attrs["widths"] == [attrs["width"]] * trial.params["depth"]
            assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy", "params"} <= attrs.keys()
    study = optuna.load_study(study_name="g", storage=url)
    assert study.user_attrs["kind"] == "grid"
    assert {"train_loss", "test_loss", "train_accuracy", "test_accuracy"} <= study.user_attrs["baseline"].keys()
    assert "linear baseline" in stdout and "2/2" in stdout


def test_two_workers_popping_one_queue_train_each_point_once(tmp_path, env, mnist_root):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    config = GridConfig(budgets=(1000, 2000), depths=(1, 2), seeds=2, data_limit=300, train=TrainConfig(epochs=1))
    study = create_study(
        open_storage(url), "g", "grid", settings(config), make_grid_sampler(config), optuna.pruners.NopPruner()
    )
    assert enqueue_missing(study, grid_points(config)) == 8
    command = ["worker", "--study", "g", "--storage", url, "--device", "cpu", "--quiet"]
    errors = [tmp_path / f"err{i}" for i in range(2)]
    workers = [
        start_archsearch(*command, "--worker-index", str(i), env=env, cwd=tmp_path, stderr=errors[i]) for i in range(2)
    ]
    for worker, error in zip(workers, errors, strict=True):
        assert worker.wait(timeout=300) == 0, error.read_text()
    check_exactly_once(trials_of(url, "g"))


def test_interrupted_grid_resumes_without_duplicates(tmp_path, env):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    points = [GridPoint(b, d, 0) for b in (1000, 2000) for d in (1, 2)]
    # Paced (conftest.paced_epochs): each trial sleeps INTERRUPT_PAUSE after its one epoch, so Ctrl-C, sent once
    # the first point has finished, has three paced trials' time (1.5 s at least) before the last one could.
    paced = {**env, **paced_epochs(tmp_path, INTERRUPT_PAUSE)}
    err = tmp_path / "err"
    command = ["grid", *GRID[:4], "--seeds", "1", *QUICK, "--study", "g", "--storage", url]
    process = start_archsearch(*command, env=paced, cwd=tmp_path, stderr=err)
    try:
        wait_for(lambda: any(state in FINISHED for state in stored_states(url, "g")), process, err)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        process.kill()  # only if it did not stop
    stderr = err.read_text()
    assert process.returncode == 130, stderr
    assert f"Resume with: archsearch grid --study=g --device=cpu --storage={url}" in stderr
    assert "Traceback" not in stderr
    assert sum(t.state in FINISHED for t in trials_of(url, "g")) < len(points)

    partial = archsearch("worker", "--study", "g", "--storage", url, "--trials", "3", "--quiet", env=env)
    assert partial.returncode == 0, partial.stderr
    assert sum(t.state in FINISHED for t in trials_of(url, "g")) == 3

    resumed = archsearch("grid", "--study", "g", "--storage", url, env=env)
    assert resumed.returncode == 0, resumed.stderr
    check_exactly_once(trials_of(url, "g"), points)


def test_duplicate_and_lost_queue_entries_still_train_each_point_once(tmp_path, mnist_root):
    """A racing second refill queues points twice; an interrupted trial leaves its point unqueued."""
    config = GridConfig(budgets=(1000,), depths=(1, 2), seeds=2, data_limit=300, train=TrainConfig(epochs=1))
    points = grid_points(config)
    storage = open_storage(f"sqlite:///{tmp_path / 'grid.db'}")
    study = create_study(storage, "g", "grid", settings(config), make_grid_sampler(config), optuna.pruners.NopPruner())
    enqueue_missing(study, points)
    for point in points[2:]:
        study.enqueue_trial(point._asdict())
    study.tell(study.ask(), state=TrialState.FAIL)
    data = load_data(str(mnist_root), limit=300)
    run_until(study, GridObjective(config, data), len(points))
    trials = study.get_trials()
    check_exactly_once(trials, points)
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials if t.state == TrialState.FAIL]
    assert sum("belongs to trial" in r for r in reasons) == 2
    assert any("queued 1 unfinished grid point" in r for r in reasons)


def test_one_point_grid_completes(tmp_path, mnist_root):
    """Plain GridSampler raises KeyError('grid_id') after a queued trial when one point is left."""
    config = GridConfig(budgets=(1000,), depths=(1,), seeds=1, data_limit=300, train=TrainConfig(epochs=1))
    storage = open_storage(f"sqlite:///{tmp_path / 'grid.db'}")
    study = create_study(storage, "g", "grid", settings(config), make_grid_sampler(config), optuna.pruners.NopPruner())
    enqueue_missing(study, grid_points(config))
    run_until(study, GridObjective(config, load_data(str(mnist_root), limit=300)), 1)
    check_exactly_once(study.get_trials(), [GridPoint(1000, 1, 0)])


def test_budget_too_small_for_a_depth_is_refused_in_one_line(tmp_path, env):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    config = GridConfig(budgets=(1000,), depths=(1,), seeds=1)
    storage = open_storage(url)
    create_study(storage, "g", "grid", settings(config), make_grid_sampler(config), None)
    storage.engine.dispose()  # so the write-ahead log is in the file before it is hashed
    before = hashlib.sha256((tmp_path / "grid.db").read_bytes()).hexdigest()
    for name, storage in (("g", url), ("new", f"sqlite:///{tmp_path / 'absent.db'}")):
        result = archsearch(
            "grid", "--budgets", "806,810,50000", "--depths", "1,4,8", "--study", name, "--storage", storage, env=env
        )
        line = one_error_line(result)
        assert "806 (holds at most 1 hidden layer; asked 4, 8)" in line and "810 (" in line and "50000" not in line
    assert hashlib.sha256((tmp_path / "grid.db").read_bytes()).hexdigest() == before
    assert not (tmp_path / "absent.db").exists()


def test_toml_config_with_flag_override(tmp_path, env):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    grid_file = tmp_path / "small.toml"
    grid_file.write_text(
        'name = "small"\nbudgets = [1000]\ndepths = [1, 2]\nseeds = 1\ndata_limit = 300\n'
        "[train]\nepochs = 5\nlr = 0.01\nbatch_size = 64\n"
    )
    result = archsearch("grid", "--config", str(grid_file), "--epochs", "1", "--storage", url, env=env)
    assert result.returncode == 0, result.stderr
    stored = optuna.load_study(study_name="small", storage=url).user_attrs["config"]
    assert stored["budgets"] == [1000] and stored["depths"] == [1, 2] and stored["seeds"] == 1
    assert (stored["train"]["epochs"], stored["train"]["lr"], stored["train"]["batch_size"]) == (1, 0.01, 64)
    trials = trials_of(url, "small")
    check_exactly_once(trials, [GridPoint(1000, 1, 0), GridPoint(1000, 2, 0)])
    assert all(t.user_attrs["train_config"]["epochs"] == 1 for t in trials)

    other = archsearch("grid", "--config", str(grid_file), "--epochs", "2", "--storage", url, env=env)
    assert "exists with other settings" in one_error_line(other)
    assert len(trials_of(url, "small")) == len(trials)


def test_ksweep_file_mirrors_the_defaults():
    with open(REPO / "studies" / "ksweep.toml", "rb") as handle:
        assert config_from_dict(tomllib.load(handle), "ksweep.toml") == GridConfig()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"depths": (1, 1)}, "depths lists a value twice"),
        ({"seeds": 0}, "seeds must be positive"),
        ({"budgets": (800,)}, "800 (no hidden layer fits below 805 parameters)"),
        ({"train": TrainConfig(seed=3)}, "seed and device are not grid settings"),
    ],
)
def test_bad_grid_settings_are_refused(changes, expected):
    with pytest.raises(UsageError, match=re.escape(expected)):
        GridConfig(**changes)


def test_bad_input_is_one_line(tmp_path, env):
    (tmp_path / "bad.toml").write_text("budget = 50000\n")
    result = archsearch(
        "grid", "--config", str(tmp_path / "bad.toml"), "--storage", f"sqlite:///{tmp_path / 'grid.db'}", env=env
    )
    assert "unknown key(s) budget" in one_error_line(result)
    assert not (tmp_path / "grid.db").exists()
