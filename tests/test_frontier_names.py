"""A frontier's name where a study's name goes: `export` writes its plot and every budget's study's plots,
`best` lists each budget's winner and retrained error, the same through the API; a study of that very
name wins, a name of neither kind is refused as before, and what cannot be done is one line that writes
nothing. The frontier is a real one, run once through the CLI on a few hundred images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import optuna
import pytest

from search import api
from search.results import export as export_module
from search.results.plots import in_legend
from search.study.record import write_study
from tests.conftest import archsearch
from tests.studies import SEARCH_PLOTS, add_search_study

BUDGETS = (10_000, 20_000)
TINY = ("--budgets", ",".join(map(str, BUDGETS)), "--trials", "2", "--epochs", "1", "--max-depth", "2",
        "--seeds", "2", "--data-limit", "300", "--device", "cpu", "--format", "html")  # fmt: skip
QUICK = "quick run (first 300 images of each split, 1 epoch)"
REFUSED = (
    "'f' is a frontier, which retrains its winners itself; to retrain or export one winner, name its budget's study"
)


@pytest.fixture(scope="module")
def frontier_db(tmp_path_factory, mnist_root) -> Path:
    """The SQLite file of frontier 'f': two budgets of two trials, each winner retrained with two seeds."""
    folder = tmp_path_factory.mktemp("frontier")
    env = {"ARCHSEARCH_DATA": str(mnist_root), "OMP_NUM_THREADS": "1"}
    done = archsearch(
        "frontier", "--study", "f", "--storage", f"sqlite:///{folder / 'f.db'}", *TINY, env=env, cwd=folder
    )
    assert done.returncode == 0, done.stderr
    return folder / "f.db"


@pytest.fixture()
def url(frontier_db, tmp_path) -> str:
    """A copy of the frontier's storage for one test, which may add studies to it."""
    shutil.copy(frontier_db, tmp_path / "f.db")
    return f"sqlite:///{tmp_path / 'f.db'}"


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_export_of_a_frontier_writes_its_plot_and_every_budgets_plots(url, tmp_path):
    done = archsearch("export", "--study", "f", "--storage", url, "--format", "html", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = tmp_path / "exports" / "f"  # the frontier command's own folder for its plot
    expected = ["frontier.csv", "frontier.html"] + [
        f"budget-{budget}/{name}.{ext}" for budget in BUDGETS for name in SEARCH_PLOTS for ext in ("csv", "html")
    ]
    assert _files(out) == sorted(expected)
    frontier = [row for row in _csv(out / "frontier.csv") if row["budget"]]
    winners = api.frontier_of("f", storage=url).rows
    assert [(int(r["budget"]), r["study"], r["widths"]) for r in frontier] == [
        (row.budget, row.study, " ".join(map(str, row.widths))) for row in winners
    ]
    for budget in BUDGETS:  # each budget's study as `export --study f@BUDGET` writes it
        alone = tmp_path / "alone"
        single = archsearch("export", "--study", f"f@{budget}", "--storage", url, "--out", str(alone),
                            "--format", "html", cwd=tmp_path)  # fmt: skip
        assert single.returncode == 0, single.stderr
        for name in SEARCH_PLOTS:
            assert _csv(out / f"budget-{budget}" / f"{name}.csv") == _csv(alone / f"{name}.csv"), name
        shutil.rmtree(alone)
    assert f"frontier 'f' in sqlite:///{tmp_path / 'f.db'}: wrote {len(expected)} files to exports/f/" in done.stdout
    assert all(f"budget-{budget}/: {2 * len(SEARCH_PLOTS)} files" in done.stdout for budget in BUDGETS)


def test_a_quick_frontiers_exported_plots_say_so_in_title_and_legend(url, tmp_path):
    done = api.export("f", storage=url, out=tmp_path / "out", formats="html")
    assert done.kind == "frontier" and done.plots == ["frontier"] and len(done.studies) == len(BUDGETS)
    page = (tmp_path / "out" / "frontier.html").read_text()
    assert f"{QUICK.capitalize()}, not a result" in page and f", {QUICK}" in page  # title, then legend entry
    figures = api.figures("f@10000", storage=url)  # each budget's figures, as export drew them
    assert set(figures) == set(SEARCH_PLOTS)
    for name, figure in figures.items():
        assert figure.layout.title.text.startswith(f"{QUICK.capitalize()}, not a result"), name
        assert figure.layout.showlegend and any(in_legend(trace) for trace in figure.data), name
        legend = [figure.layout.legend.title.text or ""] + [t.name or "" for t in figure.data if in_legend(t)]
        assert any(QUICK in text for text in legend), name


def test_best_of_a_frontier_lists_each_budgets_winner_and_retrained_error(url, tmp_path):
    done = archsearch("best", "--study", "f", "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = api.frontier_of("f", storage=url).rows
    lines = done.stdout.splitlines()
    assert len(lines) == 2 + len(BUDGETS) and "test error (mean ± std)" in lines[1]
    for row, line in zip(rows, lines[2:], strict=True):
        error = f"{row.retrained.test_error:.2%} ± {row.retrained.test_error_std:.2%} (2 seeds)"
        assert line.split()[:3] == [str(row.budget), str(row.params), "2"], line
        assert f"{row.profile} {list(row.widths)}" in line and f"{row.val_loss:.4f}" in line and error in line
    printed = json.loads(archsearch("best", "--study", "f", "--storage", url, "--json", cwd=tmp_path).stdout)
    record = api.best("f", storage=url)
    assert isinstance(record, api.FrontierBest) and printed == record.to_json()
    assert [b["budget"] for b in printed["budgets"]] == list(BUDGETS)
    for budget, row in zip(printed["budgets"], rows, strict=True):
        assert budget["widths"] == list(row.widths) and budget["val_loss"] == row.val_loss
        assert budget["retrained"]["test_error"] == pytest.approx(1 - sum(row.retrained.test_accuracies) / 2)
        assert len(budget["retrained"]["seeds"]) == 2


def test_the_report_covers_the_frontier(url, tmp_path):
    assert archsearch("report", "--storage", url, "--out", str(tmp_path / "report"), cwd=tmp_path).returncode == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h3>Frontier f</h3>" in page
    for row in api.frontier_of("f", storage=url).rows:
        assert f"{row.retrained.test_error:.2%} ± {row.retrained.test_error_std:.2%}" in page


@pytest.mark.parametrize("flags", [["--retrain"], ["--export", "model.pt"], ["--retrain", "--seeds", "3"]])
def test_best_refuses_to_retrain_or_export_a_whole_frontier_in_one_line(flags, url, tmp_path):
    before = Path(url.removeprefix("sqlite:///")).read_bytes()
    done = archsearch("best", "--study", "f", "--storage", url, *flags, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr == f"archsearch: error: {REFUSED}: one of f@10000, f@20000\n"
    assert not (tmp_path / "model.pt").exists() and Path(url.removeprefix("sqlite:///")).read_bytes() == before
    with pytest.raises(api.UsageError) as raised:
        api.best(
            "f",
            storage=url,
            retrain="--retrain" in flags,
            export=str(tmp_path / "m.pt") if "--export" in flags else None,
        )
    assert f"archsearch: error: {raised.value}\n" == done.stderr and not (tmp_path / "m.pt").exists()


def test_a_study_named_like_the_frontier_wins(url, tmp_path):
    add_search_study(url, name="f")  # a plain study called f, beside frontier f's f@10000 and f@20000
    done = archsearch("export", "--study", "f", "--storage", url, "--format", "html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path / "exports" / "f") == sorted(f"{n}.{e}" for n in SEARCH_PLOTS for e in ("csv", "html"))
    best = api.best("f", storage=url)
    assert isinstance(best, api.BestTrial) and best.val_loss == 0.21  # the plain study's best, not a frontier's
    assert api.export("f", storage=url, out=tmp_path / "api", formats="html").kind == "search"


def test_a_name_of_neither_kind_lists_the_studies_there(url, tmp_path):
    for command in (["export"], ["best"]):
        done = archsearch(*command, "--study", "g", "--storage", url, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr == (
            "archsearch: error: no study named 'g' in this storage (studies there: f@10000, f@20000)\n"
        )
    with pytest.raises(api.UsageError, match=r"^no study named 'g' in this storage \(studies there: f@10000"):
        api.export("g", storage=url)
    assert [path.name for path in tmp_path.iterdir() if not path.name.startswith("f.db")] == []  # no export folder


# Budgets of the frontiers made without training: tests/studies.py's search shapes fit these.
STORED_BUDGETS = (20_000, 40_000)


def _unretrained_frontier(url: str, name: str) -> None:
    """A frontier whose searches ran but whose winners were never retrained (stopped at its timeout)."""
    for budget in STORED_BUDGETS:
        write_study(add_search_study(url, name=f"{name}@{budget}", budget=budget), frontier=name)


def _empty_frontier(url: str, name: str) -> None:
    """A frontier stopped before any budget's study completed a trial."""
    for budget in STORED_BUDGETS:
        study = optuna.create_study(study_name=f"{name}@{budget}", storage=url)
        write_study(study, kind="search", config={"budget": budget, "tolerance": 0.08, "trials": 2, "epochs": 1})
        write_study(study, frontier=name)


def test_an_unretrained_frontier_exports_its_budgets_and_says_why_it_has_no_plot(tmp_path):
    url = f"sqlite:///{tmp_path / 'u.db'}"
    _unretrained_frontier(url, "u")
    done = archsearch("export", "--study", "u", "--storage", url, "--format", "html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "skipped frontier: no winner of frontier 'u' has been retrained yet" in done.stdout
    files = _files(tmp_path / "exports" / "u")
    assert not any(f.startswith("frontier.") for f in files) and len(files) == len(STORED_BUDGETS) * 2 * len(
        SEARCH_PLOTS
    )
    best = archsearch("best", "--study", "u", "--storage", url, cwd=tmp_path)
    assert best.returncode == 0 and best.stdout.count("not retrained") == len(STORED_BUDGETS), best.stdout
    assert all(row["retrained"] is None for row in api.best("u", storage=url).to_json()["budgets"])


def test_a_frontier_with_nothing_to_draw_is_one_line_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _empty_frontier(url, "e")
    done = archsearch("export", "--study", "e", "--storage", url, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == (
        "archsearch: error: nothing to export from frontier 'e' yet: no budget's study has completed a trial\n"
    )
    assert [path.name for path in tmp_path.iterdir() if not path.name.startswith("e.db")] == []  # no export folder


def test_a_frontiers_pngs_go_each_to_its_budgets_folder(tmp_path, monkeypatch):
    """Drawn in one browser session for all folders; the browser is stood in for, so no Chrome is needed."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    _unretrained_frontier(url, "p")
    drawn: list[Path] = []

    def draw(specs):
        for spec in specs:
            drawn.append(Path(spec["path"]))
            Path(spec["path"]).write_bytes(b"png")

    monkeypatch.setattr(export_module.kaleido, "write_fig_from_object_sync", draw)
    done = api.export("p", storage=url, out=tmp_path / "out", formats="png")
    assert done.png_written and len(drawn) == len(STORED_BUDGETS) * len(SEARCH_PLOTS)
    assert _files(tmp_path / "out") == sorted(
        f"budget-{b}/{n}.{e}" for b in STORED_BUDGETS for n in SEARCH_PLOTS for e in ("csv", "png")
    )
    assert not list((tmp_path / "out").glob(".export-*"))  # the staging folder is gone
