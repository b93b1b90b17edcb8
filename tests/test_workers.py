"""Many workers on one study, on SQLite and on PostgreSQL: exactly N finished trials, nothing locked."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.study.storage import open_storage
from tests.conftest import archsearch, command_env

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Small and quick: a few hundred images, one epoch; one thread per process on the 2-core machine.
QUICK = ("--epochs", "1", "--data-limit", "200", "--device", "cpu")


@pytest.fixture(scope="module")
def pg_url() -> str:
    url = os.environ.get("ARCHSEARCH_TEST_PG")
    if not url:
        pytest.skip("ARCHSEARCH_TEST_PG is unset: start a server with `. .ci/postgres.sh` (.ci/run does)")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request, tmp_path: Path):
    """(URL, fresh study name); a PostgreSQL study is deleted afterwards."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.db'}", name
        return
    url = request.getfixturevalue("pg_url")
    yield url, name
    if name in optuna.get_all_study_names(open_storage(url)):
        optuna.delete_study(study_name=name, storage=open_storage(url))


# Loaded at start-up by every Python process of a test that uses it (PYTHONPATH). The in-process worker starts
# trials at once while the spawned ones take seconds to import torch (minutes on a busy machine), so with real
# trials of a fraction of a second the first could finish the study alone. So each process's first trial
# waits until every worker has reached its own (a file per process in ARRIVALS is the barrier; ten minutes is
# a hang guard, after which the overlap checks fail), and each trial then lasts long enough to overlap with
# the others' without taking the CPU they need. Only trials wait: a grid trains its linear baseline before
# the workers start.
SLOW_TRIALS = """
import os
import time
from pathlib import Path

import search.study.objective

_train_alone = search.study.objective.train_alone
_train_packed = search.study.objective.train_packed
_ARRIVALS = Path(os.environ["ARCHSEARCH_TEST_ARRIVALS"])
_WORKERS = int(os.environ["ARCHSEARCH_TEST_WORKERS"])


def wait_for_every_worker():
    mine = _ARRIVALS / str(os.getpid())
    if mine.exists():
        return
    mine.touch()
    deadline = time.monotonic() + 600
    while len(list(_ARRIVALS.iterdir())) < _WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)


def train_alone(*args, **kwargs):
    wait_for_every_worker()
    time.sleep(0.5)
    return _train_alone(*args, **kwargs)


def train_packed(*args, **kwargs):
    wait_for_every_worker()
    time.sleep(2.0)  # a pack holds up to 4 trials here: long enough for the other worker's trials to overlap
    return _train_packed(*args, **kwargs)


search.study.objective.train_alone = train_alone
search.study.objective.train_packed = train_packed
"""


def env_for(mnist_root: Path, slow_trials_in: Path | None = None, workers: int = 1) -> dict[str, str]:
    """The command's environment; with `slow_trials_in`, its `workers` processes train as SLOW_TRIALS says."""
    env = command_env(mnist_root)
    if slow_trials_in is not None:
        slow_trials_in.mkdir()
        (slow_trials_in / "sitecustomize.py").write_text(SLOW_TRIALS)
        (slow_trials_in / "arrivals").mkdir()
        env["PYTHONPATH"] = str(slow_trials_in)
        env["ARCHSEARCH_TEST_ARRIVALS"] = str(slow_trials_in / "arrivals")
        env["ARCHSEARCH_TEST_WORKERS"] = str(workers)
    return env


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def most_at_once(trials: list[optuna.trial.FrozenTrial]) -> int:
    """The largest number of trials that were running at one moment."""
    events = sorted(
        [(t.datetime_start, 1) for t in trials if t.datetime_start and t.datetime_complete]
        + [(t.datetime_complete, -1) for t in trials if t.datetime_start and t.datetime_complete]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def check_clean_run(result, url: str) -> None:
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_four_workers_finish_exactly_24_trials(storage, tmp_path, mnist_root):
    url, name = storage
    result = archsearch(
        "search", "--study", name, "--storage", url, "--trials", "24", "--workers", "4",
        "--budget", "20000", "--max-depth", "2", *QUICK,
        env=env_for(mnist_root, tmp_path / "slow", workers=4), cwd=tmp_path,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 24, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    # The only failures allowed are surplus trials, failed unrun by the exactly-N guard.
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
            assert not trial.intermediate_values
    assert most_at_once([t for t in trials if t.state in FINISHED]) >= 2  # workers really overlapped
    assert result.stdout.count("\nbest: #") == 1


def test_four_workers_run_each_grid_point_once(storage, tmp_path, mnist_root):
    url, name = storage
    result = archsearch(
        "grid", "--study", name, "--storage", url, "--budgets", "5000,10000", "--depths", "1,2", "--seeds", "3",
        "--workers", "4", *QUICK,
        env=env_for(mnist_root, tmp_path / "slow", workers=4), cwd=tmp_path,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    done = [t for t in trials if t.state in FINISHED]
    points = Counter((t.params["budget"], t.params["depth"], t.params["seed"]) for t in done)
    expected = {(b, d, s) for b in (5000, 10000) for d in (1, 2) for s in range(3)}
    assert set(points) == expected
    assert all(count == 1 for count in points.values()), points
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
    assert most_at_once(done) >= 2


def test_two_workers_training_packs_of_4_finish_exactly_18_trials(tmp_path, mnist_root):
    url, name = f"sqlite:///{tmp_path / 'studies.db'}", "packs"
    config = tmp_path / "one-structure.toml"  # every first trial's structure has proved itself once one completes
    config.write_text(
        'budget = 20000\n[space]\nmax_depth = 1\nprofiles = ["uniform"]\nactivations = ["tanh"]\n'
        'optimizers = ["adam"]\nbatch_sizes = [64]\n'
    )
    result = archsearch(
        "search", "--config", str(config), "--study", name, "--storage", url, "--trials", "18", "--workers", "2",
        "--pack", "4", *QUICK,
        env=env_for(mnist_root, tmp_path / "slow", workers=2), cwd=tmp_path,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 18, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
    assert most_at_once([t for t in trials if t.state in FINISHED]) >= 5  # packs, and both workers at once
    assert result.stdout.count("\nbest: #") == 1


def test_two_workers_training_packs_of_4_run_each_grid_point_once(tmp_path, mnist_root):
    url, name = f"sqlite:///{tmp_path / 'studies.db'}", "packs"
    result = archsearch(
        "grid", "--study", name, "--storage", url, "--budgets", "5000,10000", "--depths", "1,2", "--seeds", "3",
        "--workers", "2", "--pack", "4", *QUICK,
        env=env_for(mnist_root, tmp_path / "slow", workers=2), cwd=tmp_path,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    done = [t for t in trials if t.state in FINISHED]
    points = Counter((t.params["budget"], t.params["depth"], t.params["seed"]) for t in done)
    assert set(points) == {(b, d, s) for b in (5000, 10000) for d in (1, 2) for s in range(3)}
    assert all(count == 1 for count in points.values()), points
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert most_at_once(done) >= 5
