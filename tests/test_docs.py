"""The documentation's figures and tables show the committed results, the README stays a user's page, a
quick run's plots say what they are, and a benchmark's table says what it was measured on.

`make test` also builds the docs with `mkdocs build --strict`, which fails on a broken link or page."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import optuna
import pytest

from bench.stamp import command, markdown_table
from search.results.frontier_plot import frontier_plot
from search.results.plots import Plot, in_legend, ksweep, quick_run, study_plots
from search.results.tables import FrontierRow, GridRow, Retrained
from search.study.record import write_study
from tests.studies import SEARCH_PLOTS, add_search_study

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 250


def _figures_module():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _figures_module()


def _csv(name: str) -> list[dict[str, str]]:
    with open(ROOT / "docs" / "results" / name, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("plot", figures.draw(), ids=lambda plot: plot.name)
def test_each_committed_figure_shows_the_committed_results(plot: Plot):
    """The PNG carries the numbers it was drawn with; redrawn now from the CSVs, they must be the same."""
    png = figures.FIGURES / f"{plot.name}.png"
    assert png.is_file(), f"{png} is missing: run `make figures`"
    assert figures.stored_data(png) == figures.plotted_data(plot.figure), f"{png} is stale: run `make figures`"


def test_the_committed_result_tables_are_drawn_from_the_csvs():
    for name, text in figures.tables().items():
        assert (figures.RESULTS / f"{name}.table.md").read_text() == text, f"run `make figures` ({name})"


def test_the_frontier_figure_plots_each_rows_parameters_and_test_error():
    rows = _csv("frontier.csv")
    ours = figures.draw()[1].figure.data[0]
    assert list(ours.x) == [int(row["params"]) for row in rows]
    assert list(ours.y) == pytest.approx([100 * float(row["test_error_mean"]) for row in rows])
    assert list(ours.error_y.array) == pytest.approx([100 * float(row["test_error_std"]) for row in rows])
    assert list(ours.text) == [row["widths"] for row in rows]


def test_the_targets_figure_places_each_target():
    rows = _csv("targets.csv")
    targets = next(trace for trace in figures.draw()[2].figure.data if trace.name == "target test error at that size")
    assert list(targets.y) == pytest.approx([100 * float(row["target_error"]) for row in rows])


def test_the_ksweep_figure_has_one_line_per_budget_and_the_baseline():
    rows = _csv("ksweep.csv")
    data = figures.draw()[0].figure.data
    budgets = sorted({int(row["budget"]) for row in rows if row["budget"]})
    assert [trace.name.split(" (")[0] for trace in data[: len(budgets)]] == [f"P = {b:,}" for b in budgets]
    for trace, budget in zip(data, budgets, strict=False):
        line = sorted((r for r in rows if r["budget"] == str(budget)), key=lambda r: int(r["depth"]))
        assert list(trace.y) == pytest.approx([float(r["train_loss_mean"]) for r in line])
    (baseline,) = [row for row in rows if not row["budget"]]
    assert data[-1].y[0] == pytest.approx(float(baseline["train_loss_mean"]))


def test_the_readme_is_a_users_page():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    assert "../shared" not in text and "/work/" not in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "no dates in the README"
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"epochs": 30, "data_limit": 0}, ""),
        ({"epochs": 5}, ""),
        ({"epochs": 2, "data_limit": 2000}, "quick run (first 2,000 images of each split, 2 epochs)"),
        ({"epochs": 30, "data_limit": 500}, "quick run (first 500 images of each split)"),
        ({"epochs": 1}, "quick run (1 epoch)"),
        ({"budgets": [25_000], "train": {"epochs": 3}}, "quick run (3 epochs)"),  # a grid's settings
        ({}, ""),
    ],
)
def test_quick_run_names_what_makes_a_run_quick(settings, words):
    assert quick_run(settings) == words


def _frontier_row(budget: int, settings: dict) -> FrontierRow:
    retrained = Retrained("all images", 0.1, 0.1, 0.6, [0, 1], [0.59, 0.61])
    return FrontierRow(budget, f"demo@{budget}", 3, "uniform", (12,), budget, 1.2, retrained, settings)


def test_a_quick_frontier_says_so_in_its_title_and_legend():
    quick = frontier_plot([_frontier_row(10_000, {"epochs": 2, "data_limit": 2000})], "demo")
    assert quick.figure.layout.title.text.startswith("Quick run (first 2,000 images of each split, 2 epochs), not")
    assert "quick run" in quick.figure.data[0].name
    full = frontier_plot([_frontier_row(10_000, {"epochs": 15, "data_limit": 0})], "demo")
    assert full.figure.layout.title.text == "Frontier demo: test error of the best network at each budget"
    assert "quick" not in full.figure.data[0].name


def test_a_quick_ksweep_says_so_in_its_title_and_legend():
    points = [GridRow(25_000, 1, 31, 24_655, (0.2, 0.3), (0.9, 0.9))]
    quick = ksweep(points, None, {"train": {"epochs": 2}})
    assert quick.figure.layout.title.text.startswith("Quick run (2 epochs), not a result:<br>final training loss")
    assert quick.figure.data[0].name.endswith("quick run (2 epochs)")
    assert not ksweep(points, None, {"train": {"epochs": 10}}).figure.layout.title.text.startswith("Quick")


def test_a_quick_search_studys_plots_say_so_in_title_and_legend():
    """Optuna's figures and ours; a legend counts only where plotly draws it: with at least one entry."""
    study = add_search_study(optuna.storages.InMemoryStorage())  # stored with 3 epochs: a quick run
    plots = [p for p in study_plots(study) if isinstance(p, Plot)]
    assert {p.name for p in plots} == set(SEARCH_PLOTS)
    for plot in plots:
        figure = plot.figure
        assert figure.layout.title.text.startswith("Quick run (3 epochs), not a result"), plot.name
        entries = [trace.name for trace in figure.data if in_legend(trace)]
        assert figure.layout.showlegend and entries, plot.name
        legend = (figure.layout.legend.title.text or "").split("<br>")[0]
        assert legend == "quick run (3 epochs)" or "quick run (3 epochs)" in entries, plot.name


def test_a_full_search_studys_plots_say_nothing_of_a_quick_run():
    study = add_search_study(optuna.storages.InMemoryStorage())
    write_study(study, config={**study.user_attrs["config"], "epochs": 30})
    for plot in (p for p in study_plots(study) if isinstance(p, Plot)):
        texts = [
            plot.figure.layout.title.text,
            plot.figure.layout.legend.title.text,
            *(t.name for t in plot.figure.data),
        ]
        assert not any("quick" in (text or "").lower() for text in texts), plot.name


def test_a_benchmarks_command_leaves_out_the_data_folder():
    assert command("pack_size.py", ["--data-dir", "/x", "--threads", "1", "--data-dir=/y"]) == (
        ".venv/bin/python bench/pack_size.py --threads 1"
    )


def test_a_markdown_table_aligns_numbers_right():
    assert markdown_table(["a", "n"], [["x", 1]], right=[False, True]) == "| a | n |\n| --- | ---: |\n| x | 1 |\n"
