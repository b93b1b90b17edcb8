import json

import pytest

from tests.conftest import archsearch


def test_budget_json_gives_known_widths():
    result = archsearch("budget", "50000", "--depths", "1,2,3,4", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["min_depth"] == 1 and payload["max_depth"] == (50_000 - 803) // 2
    assert [row["width"] for row in payload["rows"]] == [63, 59, 55, 52]
    assert set(payload["rows"][0]) == {"depth", "width", "params", "rel_error"}


def test_budget_table_is_readable():
    result = archsearch("budget", "100000")
    assert result.returncode == 0
    assert "Parameters(k, m) = (k-1)m^2 + (794+k)m + 10" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 3 + 8


@pytest.mark.parametrize(
    "args",
    [["budget", "804"], ["budget", "abc"], ["budget", "50000", "--depths", "1,x"], ["budget"], ["nosuch"]],
)
def test_bad_budget_input_is_one_line(args):
    result = archsearch(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_baseline_reproduces_the_study(mnist_root):
    result = archsearch("baseline", "--json", "--device", "cpu", env={"ARCHSEARCH_DATA": str(mnist_root)})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["parameters"] == 7850
    assert payload["train_loss"] == pytest.approx(0.4321, abs=0.005)
    assert payload["test_loss"] == pytest.approx(0.4120, abs=0.005)
    assert payload["train_accuracy"] == pytest.approx(0.8855, abs=0.003)
    assert payload["test_accuracy"] == pytest.approx(0.8917, abs=0.003)
    assert len(payload["history_train_loss"]) == 150


def test_init_study_prints_table_and_conclusion(tiny_mnist):
    result = archsearch(
        "baseline",
        "--init-study",
        "--epochs",
        "3",
        "--seeds",
        "0,1",
        "--data-limit",
        "500",
        "--json",
        env={"ARCHSEARCH_DATA": str(tiny_mnist)},
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    names = [o["init"] for o in payload["outcomes"]]
    assert {"default", "zeros", "normal(0.01)", "normal(1)", "constant(1000)"} <= set(names)
    assert all(len(o["train_loss"]) == 2 for o in payload["outcomes"])
    assert "initializations" in payload["conclusion"]


def test_missing_data_is_one_line(tmp_path):
    result = archsearch("baseline", "--data-dir", str(tmp_path / "nothing"), "--epochs", "1")
    assert result.returncode == 2
    assert "MNIST" in result.stderr and len(result.stderr.strip().splitlines()) == 1
