import html
import json
import re
import statistics

import optuna
import pytest

from models.budget import width_for_budget
from search.results.report import sweep_findings
from search.results.tables import GridRow
from tests.conftest import archsearch
from tests.studies import add_grid_study, add_search_study, grid_loss

# Deliberately unlike the original notebook's figures, so a hard-coded number would show.
BASELINE = {"train_loss": 0.5123, "test_loss": 0.4987, "train_accuracy": 0.8611, "test_accuracy": 0.8702}
INIT = {
    "config": {"epochs": 3},
    "outcomes": [
        {
            "init": "default",
            "seeds": [0, 1],
            "train_loss": [0.61, 0.63],
            "test_loss": [0.6, 0.6],
            "train_accuracy": [0.85, 0.86],
            "test_accuracy": [0.86, 0.87],
        },
        {
            "init": "constant(1000)",
            "seeds": [0, 1],
            "train_loss": [9.5, 9.7],
            "test_loss": [9.0, 9.1],
            "train_accuracy": [0.41, 0.43],
            "test_accuracy": [0.4, 0.42],
        },
    ],
    "conclusion": "stored text the report must not rely on",
}


def text_of(page: str) -> str:
    """The readable text of the report, without scripts and tags."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture()
def storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_grid_study(url, budgets=(20_000, 50_000), depths=(1, 2, 3, 4), seeds=2, baseline=BASELINE)
    add_search_study(url)
    return url


def test_report_answers_from_the_stored_studies(storage, tmp_path):
    init_file = tmp_path / "init.json"
    init_file.write_text(json.dumps(INIT))
    out = tmp_path / "report"
    result = archsearch("report", "--storage", storage, "--out", str(out), "--init-json", str(init_file))
    assert result.returncode == 0, result.stderr
    assert "1 grid and 1 search studies" in result.stdout
    page = (out / "report.html").read_text()
    text = text_of(page)
    assert (
        "7,850" in text and "Parameters(k, m) = 785m + (k − 1)(m² + m) + 10m + 10 = (k − 1)m² + (794 + k)m + 10" in text
    )
    assert "0.5123 0.4987 86.11% 87.02%" in text
    assert "default 2 0.6200 ± 0.0100" in text and "constant(1000) 2 9.6000 ± 0.1000" in text
    assert "stored text" not in text and "worse: constant(1000) (9.6000" in text
    assert "k ranges from 1 to 24,598 ((P − 803) / 2 = 24,598.5)" in text
    for budget in (20_000, 50_000):
        best = statistics.fmean(grid_loss(budget, 2, s) for s in (0, 1))
        last = statistics.fmean(grid_loss(budget, 4, s) for s in (0, 1))
        assert (
            f"P = {budget:,}: the lowest final training loss, {best:.4f}, is at k = 2 (width "
            f"{width_for_budget(budget, 2)}" in text
        )
        assert f"then rises with every added layer to {last:.4f} at k = 4; every depth ends below the linear " in text
    assert "The best loss falls as the budget grows" in text
    assert (
        "the best shape found is decreasing" in text and "decreasing layers are better by 0.0700 (25.0% lower" in text
    )
    assert (
        "weight decay helped" in text
        and "reached validation loss 0.2100, 0.0500 below the best without it (0.2600)" in text
    )
    assert page.count('class="plotly-graph-div"') == 5 and "<script src=" not in page


def test_report_without_init_study_says_how_to_measure_it(storage, tmp_path):
    out = tmp_path / "report"
    result = archsearch("report", "--storage", storage, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "archsearch report --init-study" in result.stdout
    assert "Not measured yet. Run `archsearch report --init-study`" in text_of((out / "report.html").read_text())


def test_report_measures_the_init_study_once_and_keeps_it(storage, tmp_path, mnist_root):
    out = tmp_path / "report"
    args = ["report", "--storage", storage, "--out", str(out)]
    env = {"ARCHSEARCH_DATA": str(mnist_root)}
    measured = archsearch(
        *args, "--init-study", "--init-epochs", "2", "--seeds", "0", "--data-limit", "300", "--device", "cpu", env=env
    )
    assert measured.returncode == 0, measured.stderr
    kept = json.loads((out / "init-study.json").read_text())
    assert [o["seeds"] for o in kept["outcomes"]] == [[0]] * len(kept["outcomes"]) and kept["config"]["epochs"] == 2
    default = next(o for o in kept["outcomes"] if o["init"] == "default")
    assert f"default 1 {default['train_loss'][0]:.4f} ± 0.0000" in text_of((out / "report.html").read_text())
    again = archsearch(*args)
    assert again.returncode == 0 and "kept by an earlier `archsearch report --init-study`" in text_of(
        (out / "report.html").read_text()
    )


def test_report_of_a_real_search(tmp_path, mnist_root):
    url = f"sqlite:///{tmp_path / 'real.db'}"
    env = {"ARCHSEARCH_DATA": str(mnist_root)}
    search = archsearch(
        "search",
        "--study",
        "real",
        "--storage",
        url,
        "--budget",
        "20000",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--data-limit",
        "300",
        "--max-depth",
        "2",
        "--device",
        "cpu",
        env=env,
        cwd=tmp_path,
    )
    assert search.returncode == 0, search.stderr
    out = tmp_path / "report"
    result = archsearch("report", "--storage", url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = text_of((out / "report.html").read_text())
    study = optuna.load_study(study_name="real", storage=url)
    best = study.best_trial
    assert f"validation loss {best.value:.4f}" in text and f"trial {best.number} of study real" in text
    assert "No grid study in this storage yet" in text


def points(losses: dict[int, list[float]], budget: int = 50_000) -> list[GridRow]:
    return [GridRow(budget, k, 10 * k, 1000 * k, tuple(v), ()) for k, v in losses.items()]


def test_findings_say_where_the_loss_rises_and_how_it_compares_with_the_baseline():
    rising = sweep_findings(points({1: [0.10, 0.12], 2: [0.20, 0.20], 3: [0.50, 0.52]}), baseline_loss=0.3)
    assert rising[0] == (
        "P = 50,000: the lowest final training loss, 0.1100, is at k = 1 (width 10, 1,000 parameters); the loss "
        "rises with every added layer, from 0.1100 at k = 1 to 0.5100 at k = 3; k = 1, 2 end below the linear "
        "baseline's 0.3000, k = 3 do not."
    )
    assert rising[1].startswith("Over 2 seeds the largest spread (highest minus lowest) of one shape's loss is 0.0200")
    mixed = sweep_findings(points({1: [0.3], 2: [0.2], 3: [0.25], 4: [0.1]}), baseline_loss=0.05)
    assert "goes up and down with depth, rising in 1 of 3 steps" in mixed[0] and "no depth ends below" in mixed[0]
    assert len(mixed) == 1


def test_findings_compare_budgets():
    findings = sweep_findings(points({1: [0.3], 2: [0.2]}, 25_000) + points({1: [0.4], 2: [0.35]}, 100_000), None)
    assert "the loss falls with every added layer" in findings[0]
    assert findings[-1] == "The best loss rises as the budget grows: 0.2000 at P = 25,000, 0.3500 at P = 100,000."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "sqlite:///{tmp}/missing.db"], "no study database at"),
        (["--storage", "sqlite:///{tmp}/empty.db"], "no grid or search study in"),
        (["--out", "{blocked}/report"], "cannot write to --out folder"),
        (["--init-json", "{tmp}/none.json"], "cannot read --init-json file"),
        (["--init-json", "{blocked}"], "is not JSON"),
        (["--init-json", "{tmp}/wrong.json"], "is not the JSON of `archsearch baseline --init-study --json`"),
        (["--seeds", "x"], "expected comma-separated"),
    ],
)
def test_bad_report_input_is_one_line_and_writes_nothing(storage, tmp_path, args, message):
    blocked = tmp_path / "a-file"
    blocked.write_text("not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"outcomes": [{"init": "default"}]}))
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'empty.db'}")
    args = [a.format(blocked=blocked, tmp=tmp_path) for a in args]
    defaults = {"--storage": storage, "--out": str(tmp_path / "report")}
    args += [item for flag, value in defaults.items() if flag not in args for item in (flag, value)]
    result = archsearch("report", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "report").exists() and not (tmp_path / "missing.db").exists()
