"""Redraw the documentation's figures from the committed results: `make figures`.

The results are data: docs/results/*.csv hold the tables of real runs (the CSVs `archsearch export`
writes, and the target runs' table), and each PNG under docs/figures/ is drawn from one of them by the
project's own plotting code (search.results.plots). Each PNG carries the numbers it plots in a text
chunk, so a test can redraw the figures and check the committed pictures show the committed data.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from PIL import Image, PngImagePlugin

from search.results.export import write_plots
from search.results.frontier_plot import frontier_figure
from search.results.plots import Plot, ksweep_figure

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"
FIGURES = DOCS / "figures"
DATA_KEY = "archsearch-plotted-data"  # the PNG text chunk that holds the plotted numbers

# figure name -> (its CSV under results/, how to draw it)
SOURCES = {
    "k-sweep": ("ksweep.csv", lambda rows: ksweep_figure(rows)),
    "frontier": ("frontier.csv", lambda rows: frontier_figure(rows, "mlp-frontier")),
    "targets": ("targets.csv", lambda rows: frontier_figure(rows, "targets")),
    "default-frontier": ("default-frontier.csv", lambda rows: frontier_figure(rows, "(defaults)")),
}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def draw(results: Path = RESULTS) -> list[Plot]:
    """Every documentation figure, drawn from the CSVs in `results`."""
    plots = []
    for name, (file, figure_of) in SOURCES.items():
        rows = read_rows(results / file)
        plots.append(Plot(name, figure_of(rows), rows))
    return plots


def _percent(row: dict[str, str]) -> str:
    return f"{100 * float(row['test_error_mean']):.2f}% ± {100 * float(row['test_error_std']):.2f}%"


def _winner(row: dict[str, str]) -> str:
    return f"{row['profile']} [{', '.join(row['widths'].split())}]"


def _searched(path: Path) -> dict[str, dict[str, str]]:
    """A frontier CSV's searched budgets (its rows without a budget are the published networks), by budget."""
    return {r["budget"]: r for r in read_rows(path) if r["budget"]}


def tables(results: Path = RESULTS) -> dict[str, str]:
    """The pages' result tables in Markdown, drawn from the same CSVs as the figures: NAME.table.md."""
    sweep = read_rows(results / "ksweep.csv")
    shapes = [row for row in sweep if row["budget"]]
    budgets = sorted({int(row["budget"]) for row in shapes})
    depths = sorted({int(row["depth"]) for row in shapes})
    cell = {(int(row["budget"]), int(row["depth"])): row for row in shapes}

    def sweep_cell(budget: int, depth: int) -> str:
        row = cell.get((budget, depth))
        if row is None:
            return ""
        spread = f" ({float(row['train_loss_min']):.4f} to {float(row['train_loss_max']):.4f})"
        return (
            f"{float(row['train_loss_mean']):.4f}" + (spread if int(row["seeds"]) > 1 else "") + f", m = {row['width']}"
        )

    lines = ["| k | " + " | ".join(f"P = {b:,}" for b in budgets) + " |", "| ---: |" + " --- |" * len(budgets)]
    lines += [f"| {d} | " + " | ".join(sweep_cell(b, d) for b in budgets) + " |" for d in depths]
    lines += [
        "",
        *(
            f"Linear softmax baseline (no hidden layer): final training loss {float(row['train_loss_mean']):.4f}."
            for row in sweep
            if not row["budget"]
        ),
    ]
    frontier = [
        "| budget | winner (hidden widths) | parameters | val loss | test error |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    frontier += [
        f"| {int(r['budget']):,} | {_winner(r)} | {int(r['params']):,} | {float(r['val_loss']):.4f} | {_percent(r)} |"
        for r in read_rows(results / "frontier.csv")
    ]
    targets = [
        "| budget | target | study | trials | winner | parameters | val loss | test error |",
        "| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    targets += [
        f"| {int(r['budget']):,} | {100 * float(r['target_error']):.2f}% | `{r['study']}` | {r['trials']} "
        f"| {_winner(r)} | {int(r['params']):,} | {float(r['val_loss']):.4f} | **{_percent(r)}** |"
        for r in read_rows(results / "targets.csv")
    ]
    default = [
        "| budget | target | trials | winner | parameters | val loss | test error | from |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    default += [
        f"| {int(r['budget']):,} | {100 * float(r['target_error']):.2f}% | {r['trials']} | {_winner(r)} "
        f"| {int(r['params']):,} | {float(r['val_loss']):.4f} | **{_percent(r)}** "
        f"| {'warm start: `' + r['warm_start'] + '`' if r['warm_start'] else 'its own search'} |"
        for r in read_rows(results / "default-frontier.csv")
        if r["budget"]
    ]
    warm = [
        "| budget | warm: winner | val loss | test error | cold: winner | val loss | test error |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    cold = _searched(results / "default-frontier-cold.csv")
    warm += [
        f"| {int(budget):,} | {_winner(r)} | {float(r['val_loss']):.4f} | {_percent(r)} "
        f"| {_winner(cold[budget])} | {float(cold[budget]['val_loss']):.4f} | {_percent(cold[budget])} |"
        for budget, r in _searched(results / "default-frontier.csv").items()
    ]
    return {
        "ksweep": "\n".join(lines).rstrip() + "\n",
        "default-frontier": "\n".join(default) + "\n",
        "default-frontier-cold": "\n".join(warm) + "\n",
        "frontier": "\n".join(frontier) + "\n",
        "targets": "\n".join(targets) + "\n",
    }


def write_tables(results: Path = RESULTS) -> list[Path]:
    written = []
    for name, text in tables(results).items():
        path = results / f"{name}.table.md"
        path.write_text(text)
        written.append(path)
    return written


def plotted_data(figure: go.Figure) -> str:
    """The numbers and words a figure shows (title, each trace's name, points, bars and labels), as JSON."""

    def listed(values) -> list | None:
        return None if values is None else [v if isinstance(v, str) else round(float(v), 10) for v in values]

    traces = [
        {
            "name": trace.name,
            "x": listed(trace.x),
            "y": listed(trace.y),
            "error": listed(getattr(trace.error_y, "array", None)),
            "error_minus": listed(getattr(trace.error_y, "arrayminus", None)),
            "text": listed(trace.text) if isinstance(trace.text, tuple | list) else trace.text,
        }
        for trace in figure.data
    ]
    return json.dumps({"title": figure.layout.title.text, "traces": traces}, sort_keys=True)


def stored_data(png: Path) -> str | None:
    """The plotted data a PNG written by `write_figures` carries."""
    with Image.open(png) as image:
        return image.text.get(DATA_KEY)


def write_figures(plots: list[Plot], out: Path) -> list[Path]:
    """Each plot as out/NAME.png (kaleido, which needs Chrome or Chromium), its plotted data inside."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as folder:
        write_plots(plots, Path(folder), ("png",))
        for plot in plots:
            info = PngImagePlugin.PngInfo()
            info.add_text(DATA_KEY, plotted_data(plot.figure), zip=True)
            with Image.open(Path(folder) / f"{plot.name}.png") as image:
                image.save(out / f"{plot.name}.png", pnginfo=info)
            written.append(out / f"{plot.name}.png")
    return written


def main() -> int:
    for path in [*write_tables(), *write_figures(draw(), FIGURES)]:
        print(path.relative_to(DOCS.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
