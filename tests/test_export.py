import csv
from pathlib import Path

import optuna
import pytest

from models.budget import width_for_budget
from search.study.record import write_study
from tests.conftest import archsearch
from tests.studies import BASELINE, SEARCH_PLOTS, SEARCH_TRIALS, add_grid_study, add_search_study, grid_loss

NO_BROWSER = {"BROWSER_PATH": "/nonexistent/chromium"}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_grid_study(url)
    add_search_study(url)
    return url


def test_grid_export_writes_ksweep_html_csv_and_the_png_hint(storage, tmp_path):
    out = tmp_path / "out"
    result = archsearch("export", "--study", "ksweep", "--storage", storage, "--out", str(out), env=NO_BROWSER)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["k-sweep.csv", "k-sweep.html"]
    hint = result.stderr.strip().splitlines()
    assert len(hint) == 1 and "apt-get install chromium" in hint[0] and "plotly_get_chrome" in hint[0]
    page = (out / "k-sweep.html").read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page and "Final training loss" in page
    table = rows(out / "k-sweep.csv")
    assert list(table[0]) == [
        "series",
        "budget",
        "depth",
        "width",
        "params",
        "seeds",
        "train_loss_mean",
        "train_loss_min",
        "train_loss_max",
    ]
    assert len(table) == 2 * 4 + 1
    point = next(r for r in table if r["budget"] == "50000" and r["depth"] == "3")
    assert int(point["width"]) == width_for_budget(50_000, 3) and point["seeds"] == "2"
    assert float(point["train_loss_mean"]) == pytest.approx((grid_loss(50_000, 3, 0) + grid_loss(50_000, 3, 1)) / 2)
    assert float(point["train_loss_max"]) == pytest.approx(grid_loss(50_000, 3, 1))
    baseline = table[-1]
    assert baseline["series"] == "linear baseline" and float(baseline["train_loss_mean"]) == BASELINE["train_loss"]


def test_search_export_writes_every_plot_with_its_data(storage, tmp_path):
    out = tmp_path / "out"
    result = archsearch("export", "--study", "profiles", "--storage", storage, "--out", str(out), env=NO_BROWSER)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{e}" for n in SEARCH_PLOTS for e in ("html", "csv"))
    assert "skipped" not in result.stdout
    history = rows(out / "optimization-history.csv")
    assert [float(r["best_so_far"]) for r in history] == [0.30, 0.28, 0.21, 0.21, 0.21, 0.21]
    importances = rows(out / "param-importances.csv")
    assert {r["param"] for r in importances} <= {
        "depth",
        "profile",
        "taper",
        "use_weight_decay",
        "weight_decay",
        "lr",
        "optimizer",
    }
    assert sum(float(r["importance"]) for r in importances) == pytest.approx(1.0)
    curves = rows(out / "intermediate-values.csv")
    assert len(curves) == 6 * 3 + 1 and {r["state"] for r in curves} == {"complete", "pruned"}
    shapes = rows(out / "loss-vs-params.csv")
    assert len(shapes) == 6 and {r["profile"] for r in shapes} == {"uniform", "decreasing", "increasing", "free"}
    best = rows(out / "best-shapes.csv")
    assert best[0]["rank"] == "1" and best[0]["profile"] == "decreasing" and float(best[0]["val_loss"]) == 0.21
    assert len(best) == sum(depth for _, depth, *_ in SEARCH_TRIALS)
    decay = rows(out / "loss-vs-weight-decay.csv")
    assert sorted(float(r["weight_decay"]) for r in decay) == sorted(t[3] for t in SEARCH_TRIALS)
    assert list(rows(out / "loss-by-profile.csv")[0]) == ["number", "profile", "val_loss"]


def test_html_only_export_gives_no_png_hint(storage, tmp_path):
    out = tmp_path / "out"
    result = archsearch(
        "export", "--study", "ksweep", "--storage", storage, "--out", str(out), "--format", "html", env=NO_BROWSER
    )
    assert result.returncode == 0 and result.stderr == ""
    assert sorted(p.name for p in out.iterdir()) == ["k-sweep.csv", "k-sweep.html"]


def test_small_search_study_skips_what_it_cannot_draw(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    add_search_study(url, "one", trials=SEARCH_TRIALS[:1])
    out = tmp_path / "out"
    result = archsearch("export", "--study", "one", "--storage", url, "--out", str(out), "--format", "html")
    assert result.returncode == 0, result.stderr
    assert "skipped param-importances: needs at least 2 completed trials, the study has 1" in result.stdout
    assert not (out / "param-importances.html").exists() and (out / "optimization-history.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nosuch"], "no study named 'nosuch'"),
        (["--study", "ksweep", "--format", "pdf"], "unknown format 'pdf'"),
        (["--study", "ksweep", "--out", "{blocked}/out"], "cannot write to --out folder"),
        (["--study", "ksweep", "--storage", "sqlite:///{tmp}/missing.db"], "no study database at"),
        (["--study", "ksweep", "--format", "png"], "cannot write PNG"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(storage, tmp_path, args, message):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    args = [a.format(blocked=blocked, tmp=tmp_path) for a in args]
    if "--storage" not in args:
        args += ["--storage", storage]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = archsearch("export", *args, env=NO_BROWSER)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch") and "error: " in lines[0], result.stderr
    assert message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "missing.db").exists()


def test_empty_grid_study_has_nothing_to_export(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    empty = optuna.create_study(study_name="empty", storage=url)
    write_study(empty, kind="grid")
    result = archsearch("export", "--study", "empty", "--storage", url, "--out", str(tmp_path / "out"))
    assert (
        result.returncode == 2 and "nothing to export" in result.stderr and "no completed grid trials" in result.stderr
    )
    assert not (tmp_path / "out").exists()
