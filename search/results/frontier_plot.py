"""The budget frontier's figure: each budget's retrained winner against the classic fully connected results.

Apart from plots.py because it draws stored rows (a frontier's table), not a study's trials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from models.budget import count_parameters
from search.results.plots import TEMPLATE, Plot, Skipped, quick_run, quick_title
from search.results.tables import FrontierRow


@dataclass(frozen=True)
class Reference:
    """A published fully connected MNIST result (no convolutions, no augmentation) to place on the frontier."""

    source: str
    widths: tuple[int, ...]
    test_error: float  # a fraction
    note: str = ""

    @property
    def params(self) -> int:
        return count_parameters(self.widths)

    @property
    def label(self) -> str:
        shape = "-".join(map(str, (784, *self.widths, 10)))
        return f"{self.source}: {shape}{f' ({self.note})' if self.note else ''}"

    @property
    def short(self) -> str:
        """The label beside the marker: first author, year and hidden widths."""
        author, _, year = self.source.partition(" et al. ")
        return f"{author} {year}: {'-'.join(map(str, self.widths))}{' max-norm' if 'max-norm' in self.note else ''}"


LITERATURE = (
    Reference("LeCun et al. 1998", (300,), 0.047),
    Reference("LeCun et al. 1998", (1000,), 0.045),
    Reference("LeCun et al. 1998", (300, 100), 0.0305),
    Reference("LeCun et al. 1998", (500, 150), 0.0295),
    Reference("Simard et al. 2003", (800,), 0.016, "cross-entropy"),
    Reference("Srivastava et al. 2014", (1024, 1024, 1024), 0.0125, "dropout"),
    Reference("Srivastava et al. 2014", (1024, 1024, 1024), 0.0106, "dropout, max-norm"),
)


def _warm_note(source: str | None) -> str:
    return f"warm start from {source}" if source else "sampled by this study (not a warm start)"


def frontier_plot(rows: Sequence[FrontierRow], name: str) -> Plot | Skipped:
    """Test error of each budget's retrained winner against its parameters (log x), mean and standard
    deviation over seeds, the winner's widths beside it, and the classic MLP results as labelled markers.
    A frontier of quick runs (see quick_run) says so in its title and legend."""
    done = [row for row in rows if row.retrained is not None]
    if not done:
        return Skipped("frontier", f"no winner of frontier {name!r} has been retrained yet")
    table = [
        {
            "budget": row.budget,
            "study": row.study,
            "trials": row.trials,
            "profile": row.profile,
            "widths": " ".join(map(str, row.widths)),
            "params": row.params,
            "val_loss": row.val_loss,
            "seeds": len(row.retrained.seeds) if row.retrained else 0,
            "test_error_mean": row.retrained.test_error if row.retrained else None,
            "test_error_std": row.retrained.test_error_std if row.retrained else None,
            "warm_start": row.warm_start,
        }
        for row in rows
    ] + [
        {"budget": None, "study": ref.label, "params": ref.params, "test_error_mean": ref.test_error}
        for ref in LITERATURE
    ]
    quick = next((note for note in (quick_run(row.settings) for row in rows) if note), "")
    return Plot("frontier", frontier_figure(table, name, quick), table)


def _number(value: Any) -> float | None:
    """A table cell as a number: None for an empty cell (a CSV's) or None."""
    return None if value is None or value == "" else float(value)


def frontier_figure(rows: Sequence[Mapping[str, Any]], name: str, quick: str = "") -> go.Figure:
    """The frontier drawn from its table (the rows `frontier_plot` makes, or the CSV `export` writes of
    them): the retrained winners with their widths, and the published MLPs of LITERATURE. A row with a
    `target_error` also places that target, as the runs that chased the classic nets' sizes have."""
    done = [
        row
        for row in rows
        if _number(row.get("budget")) is not None and _number(row.get("test_error_mean")) is not None
    ]
    seeds = {int(_number(row.get("seeds")) or 0) for row in done}
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[int(_number(row["params"])) for row in done],
            y=[100 * _number(row["test_error_mean"]) for row in done],
            error_y={"type": "data", "array": [100 * (_number(row.get("test_error_std")) or 0) for row in done]},
            mode="lines+markers+text",
            text=[str(row["widths"]) + (" (warm)" if row.get("warm_start") else "") for row in done],
            textposition="top center",
            name=f"{name}: best by validation, retrained ({'/'.join(map(str, sorted(seeds)))} seeds)"
            + (f", {quick}" if quick else "")
            + ("; a star: the winner came from a warm start" if any(row.get("warm_start") for row in done) else ""),
            marker={
                "size": 9,
                "color": qualitative.Plotly[0],
                "symbol": ["star" if row.get("warm_start") else "circle" for row in done],
            },
            customdata=[
                [int(_number(row["budget"])), row.get("profile"), row.get("study"), _warm_note(row.get("warm_start"))]
                for row in done
            ],
            hovertemplate="budget %{customdata[0]}<br>%{customdata[1]} %{text}<br>%{x} parameters"
            "<br>test error %{y:.2f}%<br>study %{customdata[2]}<br>%{customdata[3]}<extra></extra>",
        )
    )
    targets = [row for row in done if _number(row.get("target_error")) is not None]
    if targets:
        figure.add_trace(
            go.Scatter(
                x=[int(_number(row["params"])) for row in targets],
                y=[100 * _number(row["target_error"]) for row in targets],
                mode="markers",
                name="target test error at that size",
                marker={"symbol": "line-ew-open", "size": 18, "color": qualitative.Plotly[2], "line": {"width": 2}},
                hovertemplate="target %{y:.2f}% at %{x} parameters<extra></extra>",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=[ref.params for ref in LITERATURE],
            y=[100 * ref.test_error for ref in LITERATURE],
            mode="markers+text",
            text=[ref.short for ref in LITERATURE],
            textposition=[
                "middle left" if ref.params > 2_000_000 else ("top center" if index % 2 == 0 else "bottom center")
                for index, ref in enumerate(LITERATURE)
            ],
            textfont={"size": 10},
            customdata=[ref.label for ref in LITERATURE],
            name="published MLPs (no convolution, no augmentation)",
            marker={"symbol": "diamond", "size": 10, "color": qualitative.Plotly[1]},
            hovertemplate="%{customdata}<br>%{x} parameters<br>test error %{y:.2f}%<extra></extra>",
        )
    )
    figure.update_layout(
        template=TEMPLATE,
        title=quick_title(f"Frontier {name}: test error of the best network at each budget", quick),
        xaxis={"type": "log", "title": "trainable parameters (log scale)"},
        yaxis={"type": "log", "title": "test error (%, log scale), mean ± std over seeds"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.15},  # below: a quick run's long name fits
        height=650,
    )
    return figure
