"""Faults: a worker killed mid-trial, Ctrl-C, and training that diverges. Nothing asked for is lost."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.study.storage import open_storage
from tests.conftest import archsearch, children_of, command_env, paced_epochs, start_archsearch, wait_for

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials on a few hundred images, paced (conftest.paced_epochs) so that each epoch lasts PAUSE seconds, asleep:
# long enough to be caught part-way, without the CPU that real long trials would take from the other tests.
EPOCHS = 6
PAUSE = 0.3
TRIALS = 4  # two caught mid-trial by the fault, their retries, and the others


def write_study(
    folder: Path, name: str, trials: int, epochs: int, data_limit: int, space: str, max_depth: int = 2
) -> Path:
    """A study file with a 1 s heartbeat and a 3 s grace period, so a dead worker's trial goes stale fast."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nbudget = 20000\ntrials = {trials}\nepochs = {epochs}\ndata_limit = {data_limit}\n'
        f'sampler = "random"\npruner = "none"\nseed = 3\nheartbeat_seconds = 1\ngrace_seconds = 3\n'
        f'storage = "sqlite:///{folder / "studies.db"}"\n\n[space]\nmax_depth = {max_depth}\n{space}\n'
    )
    return path


# One kind of trial, the slowest per image (batch 16), so every trial is alike.
SLOW_SPACE = 'batch_sizes = [16]\noptimizers = ["adam"]\nschedules = ["constant"]'
# With depth 1, one structure (search/study/packs.py is_proven): every trial after the first joins a pack.
ONE_STRUCTURE = SLOW_SPACE + '\nprofiles = ["uniform"]\nactivations = ["tanh"]'


def trials_of(folder: Path, name: str) -> list[FrozenTrial]:
    storage = open_storage(f"sqlite:///{folder / 'studies.db'}")
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def mid_trial(folder: Path) -> int:
    """How many trials are running and have reported at least one epoch with two more to go.

    Polled several times a second, so it reads Optuna's tables directly instead of opening a storage."""
    try:
        with sqlite3.connect(f"file:{folder / 'studies.db'}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT COUNT(v.trial_id) FROM trials t LEFT JOIN trial_intermediate_values v"
                " ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING' GROUP BY t.trial_id"
            ).fetchall()
    except sqlite3.OperationalError:  # no database or no tables yet
        return 0
    return sum(1 <= epochs < EPOCHS - 2 for (epochs,) in rows)


def integrity(folder: Path) -> str:
    with sqlite3.connect(folder / "studies.db") as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def test_killed_worker_trial_is_failed_retried_and_nothing_is_lost(tmp_path, mnist_root):
    config = write_study(tmp_path, "crash", trials=TRIALS, epochs=EPOCHS, data_limit=300, space=SLOW_SPACE)
    err_path = tmp_path / "err"
    env = command_env(mnist_root, **paced_epochs(tmp_path, PAUSE, processes=2))
    search = start_archsearch(
        "search", "--config", str(config), "--workers", "2", "--device", "cpu",
        env=env, cwd=tmp_path, stdout=tmp_path / "out", stderr=err_path,
    )  # fmt: skip
    try:
        # Both processes (the search and its one spawned worker) are in the middle of a trial: the pacing holds
        # each process's first trial at its first epoch until the other has reached its own.
        wait_for(lambda: mid_trial(tmp_path) == 2 and children_of(search.pid), search, err_path)
        (worker,) = children_of(search.pid)
        os.kill(worker, signal.SIGKILL)
        assert search.wait(timeout=300) == 0, err_path.read_text()
    finally:
        search.kill()
    assert "Traceback" not in err_path.read_text()
    trials = trials_of(tmp_path, "crash")
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == TRIALS, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    # The killed trial: failed by the heartbeat (no fail_reason of ours), after it had trained part-way.
    (killed,) = [t for t in trials if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs]
    assert 1 <= len(killed.intermediate_values) < EPOCHS
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state in FINISHED and retry.params == killed.params
    assert len(retry.intermediate_values) == EPOCHS
    assert integrity(tmp_path) == "ok"


def test_ctrl_c_marks_running_trials_failed_and_says_how_to_resume(tmp_path, mnist_root):
    config = write_study(tmp_path, "stop", trials=TRIALS, epochs=EPOCHS, data_limit=300, space=SLOW_SPACE)
    err_path = tmp_path / "err"
    search = start_archsearch(
        "search", "--config", str(config), "--workers", "2", "--device", "cpu",
        env=command_env(mnist_root, **paced_epochs(tmp_path, PAUSE, processes=2)), cwd=tmp_path, stderr=err_path,
        new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: mid_trial(tmp_path) == 2, search, err_path)
        os.killpg(search.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        search.wait(timeout=120)
    finally:
        search.kill()
    stderr = err_path.read_text()
    assert search.returncode == 130, stderr
    assert "Traceback" not in stderr
    hints = [line for line in stderr.splitlines() if "Resume with: archsearch search" in line]
    assert len(hints) == 1, stderr
    trials = trials_of(tmp_path, "stop")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 2 and all(1 <= len(t.intermediate_values) < EPOCHS for t in stopped)
    assert integrity(tmp_path) == "ok"

    # The printed command, as is, finishes the study.
    command = shlex.split(hints[0].split("Resume with: ", 1)[1])
    assert command[:2] == ["archsearch", "search"]
    resumed = archsearch(*command[1:], env=command_env(mnist_root), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sum(t.state in FINISHED for t in trials_of(tmp_path, "stop")) == TRIALS


@pytest.mark.parametrize(
    ("lr", "expect_complete"),
    [pytest.param("[1e6, 1e7]", False, id="all-diverge"), pytest.param("[1e-3, 1e7]", True, id="some-diverge")],
)
def test_diverging_trials_are_pruned_with_their_reason(tmp_path, mnist_root, lr, expect_complete):
    # Uniform profiles meet the budget at every depth, so divergence is the only reason to prune here.
    space = f'lr = {lr}\noptimizers = ["sgd"]\nschedules = ["constant"]\nbatch_sizes = [64]\nprofiles = ["uniform"]'
    config = write_study(tmp_path, "boom", trials=8, epochs=1, data_limit=300, space=space)
    result = archsearch("search", "--config", str(config), "--device", "cpu", env=command_env(mnist_root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    trials = trials_of(tmp_path, "boom")
    assert sum(t.state in FINISHED for t in trials) == 8
    assert not [t for t in trials if t.state not in FINISHED]
    diverged = [t for t in trials if t.state == TrialState.PRUNED]
    assert diverged
    for trial in diverged:
        assert trial.user_attrs["pruned_reason"].startswith("training diverged at epoch 1"), trial.user_attrs
        assert trial.params["lr"] > 1  # only the huge learning rates blow up
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert bool(complete) == expect_complete
    if expect_complete:
        assert "best: #" in result.stdout
    else:
        assert "best: none; all 8 finished trials were pruned (first: training diverged" in result.stdout


def test_a_pack_killed_mid_training_loses_only_its_trials_and_resumes_to_exactly_n(tmp_path, mnist_root):
    # One process: its first trial alone, then a pack of 4, part-way for 3 of its epochs (each member's report
    # is paced, so a pack's epoch lasts 4 pauses).
    config = write_study(tmp_path, "pack", trials=6, epochs=EPOCHS, data_limit=300, space=ONE_STRUCTURE, max_depth=1)
    command = ["search", "--config", str(config), "--pack", "4", "--device", "cpu"]
    err_path = tmp_path / "err"
    env = command_env(mnist_root, **paced_epochs(tmp_path, PAUSE))
    search = start_archsearch(*command, env=env, cwd=tmp_path, stderr=err_path)
    try:
        wait_for(lambda: mid_trial(tmp_path) == 4, search, err_path)  # the whole pack, part-way
        search.send_signal(signal.SIGKILL)
        search.wait(timeout=300)
    finally:
        search.kill()
    killed = [t.number for t in trials_of(tmp_path, "pack") if t.state == TrialState.RUNNING]
    assert len(killed) == 4
    resumed = archsearch(*command, env=command_env(mnist_root), cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    trials = trials_of(tmp_path, "pack")
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 6, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    for number in killed:  # failed at once on resume (its process is gone), and retried with its parameters
        assert trials[number].state == TrialState.FAIL
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert retry.state in FINISHED and retry.params == trials[number].params
    assert integrity(tmp_path) == "ok"
