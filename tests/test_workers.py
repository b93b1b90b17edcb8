"""Many workers on one study, on SQLite and on PostgreSQL: exactly N finished trials, nothing locked."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.study.storage import open_storage
from tests.conftest import command_env, paced_epochs, start_archsearch

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


# Each command runs forked (conftest.start_archsearch: no interpreter start), with its workers paced
# (conftest.paced_epochs): every process's first trial waits at its first epoch until each of the `workers`
# processes has reached its own, so the spawned workers, fresh interpreters that take seconds to import torch,
# overlap the first process's trials however busy the machine (rather than finding the study finished), and
# each reported epoch then sleeps PAUSE, so that trials overlap without taking the CPU the others need. Grid
# trials report their epochs through the same reporter (search/study/objective.py train_alone), and a grid's
# linear baseline, trained before the workers start, reports none.
PAUSE = 0.2
# A search's pack forms only after the first trials, which train alone, once the barrier has let them go: each of
# its 4 trials' epochs then sleeps this long, so that one worker's pack still runs when the other's starts.
PACK_PAUSE = 0.5


def run_workers(
    *args: str, tmp_path: Path, mnist_root: Path, workers: int, pause: float = PAUSE
) -> subprocess.CompletedProcess:
    """Run a command of `workers` paced processes to its end; its status and streams."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = command_env(mnist_root, **paced_epochs(tmp_path, pause, processes=workers))
    process = start_archsearch(*args, "--workers", str(workers), env=env, cwd=tmp_path, stdout=out, stderr=err)
    try:
        status = process.wait(timeout=600)  # a hang guard
    finally:
        process.kill()  # only if the hang guard expired
    return subprocess.CompletedProcess(args, status, out.read_text(), err.read_text())


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


def test_four_workers_finish_exactly_6_trials(storage, tmp_path, mnist_root):
    """Four processes write to one storage at once (SQLite's locking sees more contention than with two) and race
    for the last trials: the four first trials run together (the pacing's barrier), and then the four workers,
    let go at once, race for the two trials left."""
    url, name = storage
    result = run_workers(
        "search", "--study", name, "--storage", url, "--trials", "6", "--budget", "20000", "--max-depth", "2",
        *QUICK, tmp_path=tmp_path, mnist_root=mnist_root, workers=4,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 6, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    # The only failures allowed are surplus trials, failed unrun by the exactly-N guard.
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
            assert not trial.intermediate_values
    assert most_at_once([t for t in trials if t.state in FINISHED]) >= 4  # every worker trained at the barrier
    assert result.stdout.count("\nbest: #") == 1


# On SQLite: tests/test_grid.py test_grid_with_two_workers_trains_every_point_once, which checks the same.
@pytest.mark.parametrize("storage", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_two_workers_run_each_grid_point_once(storage, tmp_path, mnist_root):
    """Two workers suffice: a point's claim is decided between two live trials of it (GridObjective._claim).
    Four points, twice the workers: each worker pops more than one from the queue the other pops too."""
    url, name = storage
    result = run_workers(
        "grid", "--study", name, "--storage", url, "--budgets", "5000,10000", "--depths", "1,2", "--seeds", "1",
        *QUICK, tmp_path=tmp_path, mnist_root=mnist_root, workers=2,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    done = [t for t in trials if t.state in FINISHED]
    points = Counter((t.params["budget"], t.params["depth"], t.params["seed"]) for t in done)
    expected = {(b, d, 0) for b in (5000, 10000) for d in (1, 2)}
    assert set(points) == expected
    assert all(count == 1 for count in points.values()), points
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
    assert most_at_once(done) >= 2


def test_two_workers_training_packs_of_4_finish_exactly_9_trials(tmp_path, mnist_root):
    """Each worker's first trial trains alone (no structure has proved itself yet), then packs of 4 do; the 7
    left, not a multiple of 4, cut a pack short to end at exactly 9."""
    url, name = f"sqlite:///{tmp_path / 'studies.db'}", "packs"
    config = tmp_path / "one-structure.toml"  # every first trial's structure has proved itself once one completes
    config.write_text(
        'budget = 20000\n[space]\nmax_depth = 1\nprofiles = ["uniform"]\nactivations = ["tanh"]\n'
        'optimizers = ["adam"]\nbatch_sizes = [64]\n'
    )
    result = run_workers(
        "search", "--config", str(config), "--study", name, "--storage", url, "--trials", "9", "--pack", "4",
        *QUICK, tmp_path=tmp_path, mnist_root=mnist_root, workers=2, pause=PACK_PAUSE,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 9, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs["fail_reason"].startswith("surplus"), trial.user_attrs
    assert most_at_once([t for t in trials if t.state in FINISHED]) >= 5  # packs, and both workers at once
    assert result.stdout.count("\nbest: #") == 1


def test_two_workers_training_packs_of_4_run_each_grid_point_once(tmp_path, mnist_root):
    """Twelve points, six of each depth: one worker's first pack takes four of depth 1 and the other's the next
    ones (both packs are running at the pacing's barrier: at least 5 trials at once), and a point of depth 2
    cannot join a pack of depth 1, so it starts a pack of its own."""
    url, name = f"sqlite:///{tmp_path / 'studies.db'}", "packs"
    result = run_workers(
        "grid", "--study", name, "--storage", url, "--budgets", "5000,10000", "--depths", "1,2", "--seeds", "3",
        "--pack", "4", *QUICK, tmp_path=tmp_path, mnist_root=mnist_root, workers=2,
    )  # fmt: skip
    check_clean_run(result, url)
    trials = trials_of(url, name)
    done = [t for t in trials if t.state in FINISHED]
    points = Counter((t.params["budget"], t.params["depth"], t.params["seed"]) for t in done)
    assert set(points) == {(b, d, s) for b in (5000, 10000) for d in (1, 2) for s in range(3)}
    assert all(count == 1 for count in points.values()), points
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert most_at_once(done) >= 5
