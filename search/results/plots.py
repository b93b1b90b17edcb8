"""Figures of the studies, each with the rows of numbers it draws: trials in, plotly figure out.

Nothing here writes files or touches storage beyond reading a study's trials, so export, report
and dashboard all show the same figures from the same numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from models.budget import CLASSES, INPUTS, LINEAR_PARAMETERS, count_parameters
from models.profiles import PROFILES
from search.results.tables import FrontierRow, GridRow, completed, grid_table, shape_rows
from search.study.record import StudyRecord

TEMPLATE = "plotly_white"
PROFILE_COLORS = dict(zip(PROFILES, qualitative.Plotly, strict=False))
BEST_SHAPES = 10
VALIDATION = "validation loss (cross-entropy, final epoch)"
OBJECTIVE = "validation loss"
# Fewer epochs than this is a quick run: the shipped studies train 10 to 60, and after 2 or 3 epochs a
# network's error is still several times its final one, so its plot must not read as a result.
FEW_EPOCHS = 5


@dataclass(frozen=True)
class Plot:
    """One figure and the table behind it; `name` is also its file name."""

    name: str
    figure: go.Figure
    rows: list[dict]


@dataclass(frozen=True)
class Skipped:
    """A figure the study's trials cannot support yet, and why."""

    name: str
    reason: str


def quick_run(settings: Mapping[str, Any]) -> str:
    """What makes a study's settings a quick run (a data limit, fewer than FEW_EPOCHS epochs), in words
    for a plot's title and legend; empty for a full run. A grid keeps its epochs under `train`."""
    epochs = settings.get("epochs", (settings.get("train") or {}).get("epochs"))
    limit = settings.get("data_limit") or 0
    reasons = [f"first {limit:,} images of each split"] if limit else []
    if epochs is not None and epochs < FEW_EPOCHS:
        reasons.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    return f"quick run ({', '.join(reasons)})" if reasons else ""


def _quick_title(title: str, quick: str) -> str:
    return f"{quick.capitalize()}, not a result: {title[0].lower()}{title[1:]}" if quick else title


def ksweep(
    points: Sequence[GridRow], baseline: dict | None, settings: Mapping[str, Any] | None = None
) -> Plot | Skipped:
    """Final training loss against depth, one line per budget, the linear baseline as reference; a quick
    run's `settings` (see quick_run) put that in the title and legend."""
    if not points:
        return Skipped("k-sweep", "no completed grid trials yet")
    rows = []
    for budget in sorted({p.budget for p in points}):
        line = [p for p in points if p.budget == budget]
        rows += [
            {
                "series": f"P = {budget}",
                "budget": budget,
                "depth": p.depth,
                "width": p.width,
                "params": p.params,
                "seeds": len(p.losses),
                "train_loss_mean": p.mean,
                "train_loss_min": min(p.losses),
                "train_loss_max": max(p.losses),
            }
            for p in line
        ]
    if baseline is not None:
        loss = baseline["train_loss"]
        rows.append(
            {
                "series": "linear baseline",
                "budget": "",
                "depth": 0,
                "width": "",
                "params": LINEAR_PARAMETERS,
                "seeds": "",
                "train_loss_mean": loss,
                "train_loss_min": loss,
                "train_loss_max": loss,
            }
        )
    return Plot("k-sweep", ksweep_figure(rows, quick_run(settings or {})), rows)


def ksweep_figure(rows: Sequence[Mapping[str, Any]], quick: str = "") -> go.Figure:
    """The k-sweep drawn from its table (the rows `ksweep` makes, or the CSV `export` writes of them):
    one line per budget, mean and min to max over seeds, the linear baseline dashed across the depths."""
    figure = go.Figure()
    shapes = [row for row in rows if str(row["budget"]) != ""]
    budgets = sorted({int(row["budget"]) for row in shapes})
    for index, budget in enumerate(budgets):
        line = sorted((row for row in shapes if int(row["budget"]) == budget), key=lambda row: int(row["depth"]))
        seeds = max(int(row["seeds"]) for row in line)
        means = [float(row["train_loss_mean"]) for row in line]
        figure.add_trace(
            go.Scatter(
                x=[int(row["depth"]) for row in line],
                y=means,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [float(row["train_loss_max"]) - m for row, m in zip(line, means, strict=True)],
                    "arrayminus": [m - float(row["train_loss_min"]) for row, m in zip(line, means, strict=True)],
                    "visible": seeds > 1,
                },
                mode="lines+markers",
                name=f"P = {budget:,}"
                + (f" (mean of {seeds} seeds, bars: min to max)" if seeds > 1 else "")
                + (f", {quick}" if quick else ""),
                line={"color": qualitative.D3[index % len(qualitative.D3)]},
                customdata=[[int(row["width"]), int(row["params"]), int(row["seeds"])] for row in line],
                hovertemplate="k = %{x}, width %{customdata[0]} (%{customdata[1]:,} parameters)<br>"
                "mean final training loss %{y:.4f} over %{customdata[2]} seed(s)<extra>P = " + f"{budget:,}</extra>",
            )
        )
    for row in (row for row in rows if str(row["budget"]) == ""):
        loss = float(row["train_loss_mean"])
        depths = [min(int(r["depth"]) for r in shapes), max(int(r["depth"]) for r in shapes)]
        figure.add_trace(
            go.Scatter(
                x=depths,
                y=[loss, loss],
                mode="lines",
                name=f"linear softmax baseline, no hidden layer ({LINEAR_PARAMETERS:,} parameters): {loss:.4f}",
                line={"color": "black", "dash": "dash"},
                hovertemplate=f"linear baseline: final training loss {loss:.4f}<extra></extra>",
            )
        )
    figure.update_layout(
        template=TEMPLATE,
        title=_quick_title(
            "Final training loss of uniform MLPs (k hidden layers of width m_P(k)) at fixed parameter budgets P", quick
        ),
        xaxis={"title": "k: number of hidden layers, each of width m_P(k)", "dtick": 1},
        yaxis={"title": "final training loss (cross-entropy on the training set)"},
        legend={"title": "parameter budget", "orientation": "h", "yanchor": "top", "y": -0.15},
        height=620,
    )
    return figure


def optuna_plots(study: optuna.Study) -> list[Plot | Skipped]:
    """Optuna's standard figures of a search study, with the trial tables they draw."""
    trials = study.get_trials(deepcopy=False)
    done = sorted(completed(trials), key=lambda t: t.number)
    params = sorted({name for t in done for name in t.params if not name.startswith("relative_width_")})
    table = [{"number": t.number, "value": t.value, **{p: t.params.get(p) for p in params}} for t in done]
    history = [
        {"number": t.number, "value": t.value, "best_so_far": best}
        for t, best in zip(done, itertools.accumulate((t.value for t in done), min), strict=True)
    ]
    visualization = optuna.visualization
    if done:
        results = [
            Plot(
                "optimization-history", visualization.plot_optimization_history(study, target_name=OBJECTIVE), history
            ),
            _importances(study, done, params),
            Plot(
                "parallel-coordinate",
                visualization.plot_parallel_coordinate(study, params=params, target_name=OBJECTIVE),
                table,
            ),
            Plot("slice", visualization.plot_slice(study, params=params, target_name=OBJECTIVE), table),
        ]
    else:
        names = ("optimization-history", "param-importances", "parallel-coordinate", "slice")
        results = [Skipped(name, "no completed trials yet") for name in names]
    curves = [t for t in trials if t.intermediate_values]
    if curves:
        figure = visualization.plot_intermediate_values(study).update_layout(
            xaxis={"title": "epoch", "dtick": 1},
            yaxis_title="validation loss (cross-entropy)",
            showlegend=True,
            legend_title="trial",
        )
        rows = [
            {"number": t.number, "state": t.state.name.lower(), "epoch": step, "val_loss": value}
            for t in curves
            for step, value in sorted(t.intermediate_values.items())
        ]
        results.append(Plot("intermediate-values", figure, rows))
    else:
        results.append(Skipped("intermediate-values", "no trial has reported a validation loss yet"))
    return [_titled(result, study) for result in results]


def _importances(study: optuna.Study, done: list[FrozenTrial], params: list[str]) -> Plot | Skipped:
    """PED-ANOVA importances (Optuna's default, numpy only), skipped where the trials cannot support them."""
    if len(done) < 2:
        return Skipped("param-importances", f"needs at least 2 completed trials, the study has {len(done)}")
    varying = [p for p in params if len({repr(t.params.get(p)) for t in done}) > 1]
    if not varying:
        return Skipped("param-importances", "no parameter varies across the completed trials")
    try:
        figure = optuna.visualization.plot_param_importances(study, params=varying, target_name=OBJECTIVE)
    except (ValueError, RuntimeError) as error:
        return Skipped("param-importances", str(error).strip().splitlines()[0])
    bar = figure.data[0]
    rows = [{"param": name, "importance": value} for name, value in zip(bar.y, bar.x, strict=True)]
    return Plot("param-importances", figure, rows[::-1])


def _titled(result: Plot | Skipped, study: optuna.Study) -> Plot | Skipped:
    """The study's name in the title, so an exported file says where it came from, and a quick run's
    settings in the title and legend, so its figure is not read as a result."""
    if isinstance(result, Plot):
        title = result.figure.layout.title.text or result.name
        quick = quick_run(StudyRecord.of(study).settings)
        result.figure.update_layout(title=_quick_title(f"{title}: study {study.study_name}", quick), template=TEMPLATE)
        if quick:
            result.figure.update_layout(legend_title_text=quick, showlegend=True)
    return result


def search_plots(study: optuna.Study) -> list[Plot | Skipped]:
    """Our figures of a search study, the ones Optuna has no function for."""
    rows = shape_rows(study.get_trials(deepcopy=False))
    return [
        _titled(plot, study)
        for plot in (loss_vs_params(rows), loss_by_profile(rows), best_shapes(rows), loss_vs_weight_decay(rows))
    ]


def _by_profile(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    names = [p for p in PROFILES if any(r["profile"] == p for r in rows)]
    return [(name, [r for r in rows if r["profile"] == name]) for name in names]


def _hover(rows: list[dict]) -> dict:
    return {
        "customdata": [[r["number"], r["widths"], r["params"]] for r in rows],
        "hovertemplate": "trial %{customdata[0]}: widths [%{customdata[1]}], %{customdata[2]:,} parameters"
        "<br>validation loss %{y:.4f}<extra></extra>",
    }


def loss_vs_params(rows: list[dict]) -> Plot | Skipped:
    if not rows:
        return Skipped("loss-vs-params", "no completed trials yet")
    figure = go.Figure(
        [
            go.Scatter(
                x=[r["params"] for r in group],
                y=[r["val_loss"] for r in group],
                mode="markers",
                name=profile,
                marker={"color": PROFILE_COLORS[profile], "size": 9},
                **_hover(group),
            )
            for profile, group in _by_profile(rows)
        ]
    )
    figure.update_layout(
        template=TEMPLATE,
        title="Validation loss against parameter count, by profile",
        xaxis_title="trainable parameters (weights and biases)",
        yaxis_title=VALIDATION,
        legend_title="profile",
        height=600,
    )
    return Plot("loss-vs-params", figure, rows)


def loss_by_profile(rows: list[dict]) -> Plot | Skipped:
    if not rows:
        return Skipped("loss-by-profile", "no completed trials yet")
    figure = go.Figure(
        [
            go.Box(
                y=[r["val_loss"] for r in group],
                name=f"{profile} ({len(group)})",
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"color": PROFILE_COLORS[profile]},
                **_hover(group),
            )
            for profile, group in _by_profile(rows)
        ]
    )
    figure.update_layout(
        template=TEMPLATE,
        title="Validation loss per profile (each point a trial; trials in brackets)",
        xaxis_title="profile (completed trials)",
        yaxis_title=VALIDATION,
        showlegend=False,
        height=600,
    )
    return Plot("loss-by-profile", figure, [{k: r[k] for k in ("number", "profile", "val_loss")} for r in rows])


def best_shapes(rows: list[dict], count: int = BEST_SHAPES) -> Plot | Skipped:
    """The widths of the best trials, layer by layer, one small panel each on a shared width axis."""
    if not rows:
        return Skipped("best-shapes", "no completed trials yet")
    best = sorted(rows, key=lambda r: r["val_loss"])[:count]
    columns = min(5, len(best))
    lines = math.ceil(len(best) / columns)
    figure = make_subplots(
        rows=lines,
        cols=columns,
        shared_yaxes="all",
        subplot_titles=[f"#{rank} (trial {r['number']})<br>loss {r['val_loss']:.4f}" for rank, r in enumerate(best, 1)],
        vertical_spacing=0.22,
    )
    table = []
    for rank, row in enumerate(best, 1):
        widths = [int(w) for w in row["widths"].split()]
        layers = list(range(1, len(widths) + 1))
        figure.add_trace(
            go.Bar(
                x=layers,
                y=widths,
                marker={"color": PROFILE_COLORS[row["profile"]]},
                name=row["profile"],
                legendgroup=row["profile"],
                showlegend=row["profile"] not in {r["profile"] for r in best[: rank - 1]},
                hovertemplate="layer %{x}: %{y} units<extra>trial " + str(row["number"]) + "</extra>",
            ),
            row=(rank - 1) // columns + 1,
            col=(rank - 1) % columns + 1,
        )
        table += [
            {
                "rank": rank,
                "number": row["number"],
                "profile": row["profile"],
                "val_loss": row["val_loss"],
                "params": row["params"],
                "layer": layer,
                "width": width,
            }
            for layer, width in zip(layers, widths, strict=True)
        ]
    figure.update_xaxes(title_text="hidden layer", dtick=1)
    figure.update_yaxes(title_text="units", col=1)
    figure.update_layout(
        template=TEMPLATE,
        title=f"Layer widths of the {len(best)} best trials, lowest validation loss first",
        legend_title="profile",
        height=360 * lines + 160,
        margin={"t": 120},
    )
    return Plot("best-shapes", figure, table)


def loss_vs_weight_decay(rows: list[dict]) -> Plot | Skipped:
    """Trials without weight decay in their own panel, since 0 has no place on a log axis."""
    rows = [r for r in rows if r["weight_decay"] is not None]
    if not rows:
        return Skipped("loss-vs-weight-decay", "no completed trial records its weight decay")
    figure = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        column_widths=[0.2, 0.8],
        horizontal_spacing=0.03,
        subplot_titles=("no weight decay", "weight decay > 0 (log scale)"),
    )
    for profile, group in _by_profile(rows):
        without = [r for r in group if r["weight_decay"] == 0]
        with_decay = [r for r in group if r["weight_decay"] > 0]
        legend_column = 2 if with_decay else 1
        for column, side in ((1, without), (2, with_decay)):
            figure.add_trace(
                go.Scatter(
                    x=["none"] * len(side) if column == 1 else [r["weight_decay"] for r in side],
                    y=[r["val_loss"] for r in side],
                    mode="markers",
                    name=profile,
                    legendgroup=profile,
                    showlegend=column == legend_column,
                    marker={"color": PROFILE_COLORS[profile], "size": 9},
                    **_hover(side),
                ),
                row=1,
                col=column,
            )
    decay_title = "weight decay (the optimizer's coefficient: L2 for SGD and Adam, decoupled for AdamW)"
    figure.update_xaxes(type="log", title_text=decay_title, row=1, col=2)
    figure.update_yaxes(title_text=VALIDATION, row=1, col=1)
    figure.update_layout(
        template=TEMPLATE,
        title="Validation loss against weight decay, by profile",
        legend_title="profile",
        height=600,
    )
    columns = ("number", "profile", "weight_decay", "val_loss")
    return Plot("loss-vs-weight-decay", figure, [{k: r[k] for k in columns} for r in rows])


def own_plots(study: optuna.Study) -> list[Plot | Skipped]:
    """Our figures of a study, the ones Optuna has no function for: the k-sweep, or the shape figures."""
    record = StudyRecord.of(study)
    if record.kind == "grid":
        return [ksweep(grid_table(study.get_trials(deepcopy=False)), record.baseline, record.settings)]
    return search_plots(study)


def study_plots(study: optuna.Study) -> list[Plot | Skipped]:
    """Every figure of a study of either kind, in the order a reader meets them."""
    if StudyRecord.of(study).kind == "grid":
        return own_plots(study)
    return [*optuna_plots(study), *own_plots(study)]


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
        shape = "-".join(map(str, (INPUTS, *self.widths, CLASSES)))
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
        title=_quick_title(f"Frontier {name}: test error of the best network at each budget", quick),
        xaxis={"type": "log", "title": "trainable parameters (log scale)"},
        yaxis={"type": "log", "title": "test error (%, log scale), mean ± std over seeds"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.15},  # below: a quick run's long name fits
        height=650,
    )
    return figure
