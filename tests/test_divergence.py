"""A baseline whose learning rate makes training diverge is a result of its settings, never a bug: one line,
exit 2, that says so and what to change (generated learning rates, the issue's 1e308 among them)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from search import api
from search.cli import main

QUICK = {"epochs": 2, "data_limit": 200, "device": "cpu", "quiet": True}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lr=st.one_of(st.floats(min_value=1.0, max_value=1e308), st.sampled_from([1e308, 1e30, 1e10, 5.0])))
@example(lr=1e308)
def test_a_diverging_learning_rate_is_a_result_or_one_usage_error(lr, mnist_root, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    for call in (lambda: api.baseline(lr=lr, **QUICK), lambda: api.init_study(lr=lr, seeds=[0], **QUICK)):
        try:
            result = call()
        except api.UsageError as refused:
            message = str(refused)
            assert "diverged" in message and "smaller lr=" in message and "\n" not in message, message
            continue
        losses = [result.train_loss, result.test_loss] if isinstance(result, api.Baseline) else []
        assert all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize("command", [["baseline"], ["baseline", "--init-study", "--seeds", "0"]])
def test_the_cli_says_so_in_one_line_with_exit_2(command, mnist_root, monkeypatch, capsys):
    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    status = main([*command, "--lr", "1e308", "--epochs", "2", "--data-limit", "200", "--device", "cpu", "--json"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("archsearch: error: training diverged at epoch") and err.count("\n") == 1, err


@pytest.mark.parametrize("lr", [1e308, 1e200])
def test_retraining_a_configuration_that_diverges_is_one_usage_error(lr, mnist_root, tmp_path, monkeypatch):
    """`best --retrain` trains the best trial's configuration on all training images: where that diverges,
    it is the configuration's result, said in one line, and the study is left as it was."""
    import dataclasses

    from search.engine.config import TrainConfig
    from tests.studies import add_search_study
    from tests.test_damaged_records import damage

    monkeypatch.setenv("ARCHSEARCH_DATA", str(mnist_root))
    database = tmp_path / "s.db"
    add_search_study(f"sqlite:///{database}", "s")
    config = dataclasses.asdict(TrainConfig(lr=lr, epochs=1, batch_size=0, optimizer="sgd", device="cpu"))
    damage(database, "trial", "train_config", config)
    before = database.read_bytes()
    with pytest.raises(api.UsageError, match="diverged") as raised:
        api.best("s", storage=f"sqlite:///{database}", retrain=True, device="cpu", quiet=True)
    assert "\n" not in str(raised.value) and "retrain=False" in str(raised.value)  # an argument, not a flag
    assert database.read_bytes() == before
