"""One worker, a fixed seed, CPU: the same study run twice in two fresh databases is the same study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.study.storage import open_storage
from tests.conftest import archsearch

# 12 trials: TPE's 10 random start-up trials and then two that it models; the median pruner is on too.
ARGS = ("search", "--study", "again", "--trials", "12", "--budget", "20000", "--max-depth", "3", "--seed", "7",
        "--epochs", "2", "--data-limit", "300", "--device", "cpu")  # fmt: skip


def run_study(folder: Path, mnist_root: Path) -> list[optuna.trial.FrozenTrial]:
    folder.mkdir()
    url = f"sqlite:///{folder / 'studies.db'}"
    result = archsearch(*ARGS, "--storage", url, env={"ARCHSEARCH_DATA": str(mnist_root)}, cwd=folder)
    assert result.returncode == 0, result.stderr
    return optuna.load_study(study_name="again", storage=open_storage(url)).get_trials(deepcopy=False)


def test_same_seed_gives_the_same_architectures_and_losses(tmp_path, mnist_root):
    first = run_study(tmp_path / "first", mnist_root)
    second = run_study(tmp_path / "second", mnist_root)
    assert len(first) == len(second) == 12
    for a, b in zip(first, second, strict=True):
        assert (a.number, a.state) == (b.number, b.state)
        assert a.params == b.params  # sampled exactly alike: depth, profile, widths' shape, optimizer, lr, ...
        assert a.user_attrs["widths"] == b.user_attrs["widths"]
        assert a.user_attrs["train_config"] == b.user_attrs["train_config"]
        assert a.intermediate_values.keys() == b.intermediate_values.keys()
        for epoch, loss in a.intermediate_values.items():
            assert loss == pytest.approx(b.intermediate_values[epoch], abs=1e-6)
        if a.state == optuna.trial.TrialState.COMPLETE:
            assert a.value == pytest.approx(b.value, abs=1e-6)
            assert a.user_attrs["val_loss"] == pytest.approx(b.user_attrs["val_loss"], abs=1e-6)
    assert len({str(t.params) for t in first}) == 12  # and the twelve trials are different architectures
