"""The report: one HTML page that answers each question of the original notebook.

Every number comes from the stored studies or from models.budget's math; every sentence about
a trend is computed from those numbers, so the page stays true when the studies change.
"""

from __future__ import annotations

import html
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import plotly.io as pio
from optuna.trial import FrozenTrial
from plotly.offline import get_plotlyjs

from models.budget import (
    CLASSES,
    INPUTS,
    LINEAR_PARAMETERS,
    WIDTH_ONE_OFFSET,
    budget_table,
    count_parameters,
    depth_range,
)
from models.budget import uniform_parameters as parameters_km
from models.profiles import UNIFORM
from search.engine.baseline import InitOutcome, conclude
from search.results.frontier_plot import frontier_plot
from search.results.plots import Plot, ksweep, search_plots
from search.results.tables import FrontierRow, GridRow, completed, frontier_names, frontier_rows, grid_table
from search.study.record import StudyRecord, TrialRecord

FEW_TRIALS = 5


@dataclass(frozen=True)
class Entry:
    """A completed search trial with the study it came from."""

    study: str
    trial: FrozenTrial

    @property
    def loss(self) -> float:
        return self.trial.value

    @property
    def record(self) -> TrialRecord:
        return TrialRecord.of(self.trial)

    @property
    def profile(self) -> str:
        return self.record.profile

    @property
    def weight_decay(self) -> float | None:
        return self.record.weight_decay

    def label(self) -> str:
        return (
            f"{self.profile} {list(self.record.widths)} ({self.record.params:,} parameters, "
            f"trial {self.trial.number} of study {self.study})"
        )


def sweep_findings(points: Sequence[GridRow], baseline_loss: float | None) -> list[str]:
    """Sentences on the k-sweep: best depth per budget, direction with depth, baseline, budgets, noise."""
    sentences = []
    lines = {
        b: sorted((p for p in points if p.budget == b), key=lambda p: p.depth)
        for b in sorted({p.budget for p in points})
    }
    for budget, line in lines.items():
        best = min(line, key=lambda p: p.mean)
        parts = [
            f"P = {budget:,}: the lowest final training loss, {best.mean:.4f}, is at k = {best.depth} "
            f"(width {best.width}, {best.params:,} parameters)"
        ]
        if len(line) > 1:
            parts.append(_direction(line, best))
        if baseline_loss is not None:
            below = [p.depth for p in line if p.mean < baseline_loss]
            reference = f"the linear baseline's {baseline_loss:.4f}"
            if len(below) == len(line):
                parts.append(f"every depth ends below {reference}")
            elif not below:
                parts.append(f"no depth ends below {reference}")
            else:
                above = [p.depth for p in line if p.depth not in below]
                parts.append(f"k = {_list(below)} end below {reference}, k = {_list(above)} do not")
        sentences.append("; ".join(parts) + ".")
    if len(lines) > 1:
        bests = [(budget, min(p.mean for p in line)) for budget, line in lines.items()]
        trail = ", ".join(f"{loss:.4f} at P = {budget:,}" for budget, loss in bests)
        steps = [b[1] - a[1] for a, b in itertools.pairwise(bests)]
        if all(step < 0 for step in steps):
            sentences.append(f"The best loss falls as the budget grows: {trail}.")
        elif all(step > 0 for step in steps):
            sentences.append(f"The best loss rises as the budget grows: {trail}.")
        else:
            sentences.append(f"The best loss does not change steadily with the budget: {trail}.")
    seeds = max(len(p.losses) for p in points)
    if seeds > 1:
        spread = max(points, key=lambda p: p.spread)
        sentences.append(
            f"Over {seeds} seeds the largest spread (highest minus lowest) of one shape's loss is {spread.spread:.4f} "
            f"(P = {spread.budget:,}, k = {spread.depth}); differences smaller than that are within seed noise."
        )
    return sentences


def _direction(line: Sequence[GridRow], best: GridRow) -> str:
    """How the loss moves with depth: steadily up, steadily down, down then up, or neither."""
    first, last = line[0], line[-1]
    before = line[: line.index(best) + 1]
    after = line[line.index(best) :]
    falls_to_best = all(b.mean < a.mean for a, b in itertools.pairwise(before))
    rises_after = all(b.mean > a.mean for a, b in itertools.pairwise(after))
    at = f"{first.mean:.4f} at k = {first.depth}"
    end = f"{last.mean:.4f} at k = {last.depth}"
    if best is first and rises_after:
        return f"the loss rises with every added layer, from {at} to {end}"
    if best is last and falls_to_best:
        return f"the loss falls with every added layer, from {at} to {end}"
    if falls_to_best and rises_after:
        return f"the loss falls from {at} to the lowest at k = {best.depth}, then rises with every added layer to {end}"
    rises = sum(b.mean > a.mean for a, b in itertools.pairwise(line))
    return f"the loss goes up and down with depth, rising in {rises} of {len(line) - 1} steps, from {at} to {end}"


def profile_finding(budget: int, entries: Sequence[Entry]) -> str:
    """Whether the best shape found beats the best uniform shape at this budget, and by how much."""
    best = min(entries, key=lambda e: e.loss)
    uniform = [e for e in entries if e.profile == UNIFORM]
    head = f"At P = {budget:,} the best shape found is {best.label()} with validation loss {best.loss:.4f}"
    if not uniform:
        return head + "; no uniform trial completed, so there is no uniform shape to compare it with."
    best_uniform = min(uniform, key=lambda e: e.loss)
    if best is best_uniform:
        others = sorted({e.profile for e in entries} - {UNIFORM})
        tried = f" ({', '.join(others)} tried)" if others else " (no other profile completed)"
        return head + f": uniform layers won; no other profile beat it{tried}."
    gain = best_uniform.loss - best.loss
    return (
        head + f"; the best uniform shape, {best_uniform.label()}, reached {best_uniform.loss:.4f}: "
        f"{best.profile} layers are better by {gain:.4f} ({gain / best_uniform.loss:.1%} lower loss)."
    )


def decay_finding(budget: int, entries: Sequence[Entry]) -> str:
    """Whether the best trial with weight decay beats the best one without, at one budget."""
    if not entries:
        return f"At P = {budget:,} no search trial has completed yet."
    with_decay = [e for e in entries if e.weight_decay is not None and e.weight_decay > 0]
    without = [e for e in entries if e.weight_decay == 0]
    if not with_decay or not without:
        missing = "without" if with_decay else "with"
        return f"At P = {budget:,} there is no completed trial {missing} weight decay, so this cannot be told yet."
    best_with = min(with_decay, key=lambda e: e.loss)
    best_without = min(without, key=lambda e: e.loss)
    counts = f"{_trials(len(with_decay))} with weight decay, {len(without)} without"
    caution = "; with this few trials, treat it as a hint" if min(len(with_decay), len(without)) < FEW_TRIALS else ""
    gap = best_without.loss - best_with.loss
    if gap > 0:
        verdict = (
            f"weight decay helped: the best trial with it, {best_with.label()} at weight decay "
            f"{best_with.weight_decay:.2e}, reached validation loss {best_with.loss:.4f}, {gap:.4f} below the best "
            f"without it ({best_without.loss:.4f})"
        )
    else:
        verdict = (
            f"weight decay did not help: the best trial without it, {best_without.label()}, reached validation "
            f"loss {best_without.loss:.4f}, against {best_with.loss:.4f} for the best with it "
            f"(weight decay {best_with.weight_decay:.2e})"
        )
    return f"At P = {budget:,} {verdict} ({counts}{caution})."


def init_rows(outcomes: Sequence[InitOutcome]) -> list[list[str]]:
    return [
        [
            o.init,
            str(len(o.seeds)),
            f"{o.mean('train_loss'):.4f} ± {o.spread('train_loss') / 2:.4f}",
            f"{o.mean('test_loss'):.4f}",
            f"{o.mean('train_accuracy'):.2%}",
            f"{o.mean('test_accuracy'):.2%}",
        ]
        for o in outcomes
    ]


def outcomes_from(init: dict) -> list[InitOutcome]:
    """The outcomes in the JSON that `archsearch baseline --init-study --json` prints."""
    return [InitOutcome(**o) for o in init["outcomes"]]


def budgets_of(grids: Sequence[optuna.Study], searches: Sequence[optuna.Study]) -> dict[int, list[int] | None]:
    """Each budget studied, with the depths a grid swept for it (None: the default table)."""
    budgets: dict[int, list[int] | None] = {}
    for study in searches:
        budgets.setdefault(int(StudyRecord.of(study).settings["budget"]), None)
    for study in grids:
        config = StudyRecord.of(study).settings
        for budget in config.get("budgets", []):
            budgets[int(budget)] = sorted(int(d) for d in config.get("depths", [])) or None
    return dict(sorted(budgets.items()))


def build(studies: Sequence[optuna.Study], init: dict | None, init_source: str) -> str:
    """The whole page; `init_source` says where `init` (the initialization study) came from, or how to make it."""
    grids = [s for s in studies if StudyRecord.of(s).kind == "grid"]
    searches = [s for s in studies if StudyRecord.of(s).kind == "search"]
    entries = _entries_by_budget(searches)
    figures = [p for s in searches for p in search_plots(s) if isinstance(p, Plot)]
    sections = [
        _linear(),
        _baseline(grids),
        _initialization(init, init_source),
        _formula(),
        _depths(budgets_of(grids, searches)),
        _sweep(grids),
        _profiles(entries, [p for p in figures if p.name != "loss-vs-weight-decay"]),
        _decay(entries, [p for p in figures if p.name == "loss-vs-weight-decay"]),
        _frontiers(searches),
    ]
    names = ", ".join(f"{s.study_name} ({StudyRecord.of(s).kind})" for s in studies)
    return PAGE.format(
        plotlyjs=get_plotlyjs(),
        studies=html.escape(names),
        body="\n".join(sections),
    )


def _linear() -> str:
    count = count_parameters([])
    return _section(
        "1. How many parameters does the linear softmax model have?",
        f"<p><b>{LINEAR_PARAMETERS:,}</b>: a weight for each of the {INPUTS} inputs and each of the {CLASSES} classes "
        f"({INPUTS} × {CLASSES} = {INPUTS * CLASSES:,}) plus one bias per class ({CLASSES}); counting the weights "
        f"and biases of the built model gives {count:,}.</p>",
    )


def _baseline(grids: Sequence[optuna.Study]) -> str:
    recorded = [(s.study_name, StudyRecord.of(s).baseline) for s in grids if StudyRecord.of(s).baseline is not None]
    if not recorded:
        body = (
            "<p>Not measured yet: the baseline is recorded by a grid study (study attribute <code>baseline</code>). "
            "Run <code>archsearch grid</code> (see <code>archsearch grid --help</code>), or "
            "<code>archsearch baseline</code> on its own.</p>"
        )
    else:
        rows = [
            [
                name,
                f"{b['train_loss']:.4f}",
                f"{b['test_loss']:.4f}",
                f"{b['train_accuracy']:.2%}",
                f"{b['test_accuracy']:.2%}",
            ]
            for name, b in recorded
        ]
        body = _table(["recorded by study", "train loss", "test loss", "train accuracy", "test accuracy"], rows)
        body += "".join(f"<p>{html.escape(name)}: {html.escape(_training(b))}</p>" for name, b in recorded)
    return _section("2. What loss and accuracy does the linear softmax model reach?", body)


def _initialization(init: dict | None, source: str) -> str:
    question = "3. Does the end result change with a different initialization?"
    if init is None:
        return _section(question, f"<p>Not measured yet. {html.escape(source)}</p>")
    outcomes = outcomes_from(init)
    body = _table(
        ["initialization", "seeds", "train loss (± half spread)", "test loss", "train accuracy", "test accuracy"],
        init_rows(outcomes),
    )
    body += f"<p>{html.escape(conclude(outcomes))}</p><p class='note'>Source: {html.escape(source)}.</p>"
    return _section(question, body)


def _formula() -> str:
    examples = [(1, 64), (2, 50), (4, 30)]
    checks = ", ".join(
        f"Parameters({k}, {m}) = {parameters_km(k, m):,} = count of {[m] * k}: {count_parameters([m] * k):,}"
        for k, m in examples
    )
    return _section(
        "4. How many parameters does a network of k hidden layers of m units have?",
        "<p class='math'>Parameters(k, m) = 785m + (k − 1)(m² + m) + 10m + 10 = (k − 1)m² + (794 + k)m + 10</p>"
        "<p>The first hidden layer has 784 weights and a bias per unit, each further hidden layer m weights and "
        f"a bias per unit, the output layer m weights and a bias per class. Checked against the built models: "
        f"{html.escape(checks)}.</p>",
    )


def _depths(budgets: dict[int, list[int] | None]) -> str:
    question = "5. For a budget P, which depths k are possible, and which width m<sub>P</sub>(k) fits each?"
    intro = (
        "<p>The smallest depth is k = 1. The largest, k<sub>P</sub>, uses width m = 1, where "
        f"Parameters(k, 1) = 2k + {WIDTH_ONE_OFFSET}, so k<sub>P</sub> = ⌊(P − {WIDTH_ONE_OFFSET}) / 2⌋: rounded down, "
        "because a fractional "
        "layer does not exist. m<sub>P</sub>(k) is the positive root of (k − 1)m² + (794 + k)m + (10 − P) = 0, "
        "rounded to the integer whose count is closest to P.</p>"
    )
    if not budgets:
        return _section(question, intro + "<p>No study in this storage names a budget yet.</p>")
    parts = [intro]
    for budget, depths in budgets.items():
        low, high = depth_range(budget)
        rows = [
            [str(r.depth), str(r.width), f"{r.params:,}", f"{r.rel_error:+.3%}"] for r in budget_table(budget, depths)
        ]
        parts.append(
            f"<h3>P = {budget:,}</h3>"
            f"<p>k ranges from {low} to {high:,} "
            f"((P − {WIDTH_ONE_OFFSET}) / 2 = {(budget - WIDTH_ONE_OFFSET) / 2:,.1f}).</p>"
            + _table(["k", "m_P(k)", "Parameters(k, m_P(k))", "distance to P"], rows)
        )
    return _section(question, "\n".join(parts))


def _sweep(grids: Sequence[optuna.Study]) -> str:
    question = "6. How does the final training loss of (k, m<sub>P</sub>(k)) networks change with k?"
    if not grids:
        return _section(question, "<p>No grid study in this storage yet; run <code>archsearch grid</code>.</p>")
    parts = []
    for study in grids:
        points = grid_table(study.get_trials(deepcopy=False))
        baseline = StudyRecord.of(study).baseline
        plot = ksweep(points, baseline, StudyRecord.of(study).settings)
        if not isinstance(plot, Plot):
            parts.append(f"<h3>Grid study {html.escape(study.study_name)}</h3><p>{html.escape(plot.reason)}.</p>")
            continue
        findings = sweep_findings(points, baseline["train_loss"] if baseline else None)
        parts.append(
            f"<h3>Grid study {html.escape(study.study_name)}</h3>{_figure(plot)}"
            + "<ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in findings)
            + "</ul>"
        )
    return _section(question, "\n".join(parts))


def _entries_by_budget(searches: Sequence[optuna.Study]) -> dict[int, list[Entry]]:
    entries: dict[int, list[Entry]] = defaultdict(list)
    for study in searches:
        budget = int(StudyRecord.of(study).settings["budget"])
        entries[budget] += [
            Entry(study.study_name, t) for t in completed(study.get_trials(deepcopy=False)) if TrialRecord.of(t).widths
        ]
    return dict(sorted(entries.items()))


def _profiles(entries: dict[int, list[Entry]], figures: Sequence[Plot]) -> str:
    question = "7. Is there a better shape than uniform layers for the same budget: decreasing, increasing, free?"
    if not entries:
        return _section(question, "<p>No search study in this storage yet; run <code>archsearch search</code>.</p>")
    parts = [
        "<p>Each search trial samples a profile and its training settings (optimizer, learning rate, schedule, "
        "batch size, activation, weight decay, dropout) together, so a profile's best trial reflects both. Trials are "
        "ranked by validation loss; test figures are for information only.</p>"
    ]
    for budget, group in entries.items():
        parts.append(f"<h3>P = {budget:,}</h3>")
        if not group:
            parts.append("<p>No completed search trial at this budget yet.</p>")
            continue
        best: dict[str, Entry] = {}
        for entry in group:
            if entry.profile not in best or entry.loss < best[entry.profile].loss:
                best[entry.profile] = entry
        rows = [
            [
                profile,
                str(sum(e.profile == profile for e in group)),
                f"{e.study} #{e.trial.number}",
                str(list(e.record.widths)),
                f"{e.record.params:,}",
                f"{e.loss:.4f}",
                _percent(e.record.val_accuracy),
                _percent(e.record.test_accuracy),
                "" if e.weight_decay is None else f"{e.weight_decay:.2e}",
            ]
            for profile, e in sorted(best.items(), key=lambda item: item[1].loss)
        ]
        parts.append(
            _table(
                [
                    "profile",
                    "completed trials",
                    "best trial",
                    "widths",
                    "parameters",
                    "validation loss",
                    "validation accuracy",
                    "test accuracy",
                    "weight decay",
                ],
                rows,
            )
        )
        parts.append(f"<p><b>{html.escape(profile_finding(budget, group))}</b></p>")
    parts += [_figure(p) for p in figures]
    return _section(question, "\n".join(parts))


def _decay(entries: dict[int, list[Entry]], figures: Sequence[Plot]) -> str:
    question = "8. Bonus: does weight decay help?"
    if not entries:
        return _section(question, "<p>No search study in this storage yet; run <code>archsearch search</code>.</p>")
    parts = [f"<p><b>{html.escape(decay_finding(budget, group))}</b></p>" for budget, group in entries.items()]
    parts += [_figure(p) for p in figures]
    return _section(question, "\n".join(parts))


def _frontiers(searches: Sequence[optuna.Study]) -> str:
    question = "9. How much does each parameter buy? The best network at every budget"
    names = frontier_names(searches)
    if not names:
        return _section(
            question,
            "<p>No frontier in this storage yet; run <code>archsearch frontier --budgets 10000:1000000</code>.</p>",
        )
    parts = [
        "<p>Each budget is its own search study; its winner by validation loss is retrained on all training "
        "images with several seeds, and its test error (mean ± standard deviation over the seeds) is drawn "
        "against the parameter count beside published fully connected results. The test set chose nothing.</p>"
    ]
    for name in names:
        rows = frontier_rows(searches, name)
        parts.append(f"<h3>Frontier {html.escape(name)}</h3>")
        parts.append(
            _table(
                ["budget", "winner", "parameters", "trials", "validation loss", "test error", "seeds", "warm start"],
                [
                    [
                        f"{row.budget:,}",
                        f"{row.profile} {list(row.widths)}" if row.widths else "none completed",
                        f"{row.params:,}" if row.params else "",
                        str(row.trials),
                        f"{row.val_loss:.4f}" if row.val_loss is not None else "",
                        f"{row.retrained.test_error:.2%} ± {row.retrained.test_error_std:.2%}" if row.retrained else "",
                        str(len(row.retrained.seeds)) if row.retrained else "",
                        f"from {row.warm_start}" if row.warm_start else "",
                    ]
                    for row in rows
                ],
            )
        )
        parts.append(f"<p><b>{html.escape(frontier_finding(rows))}</b></p>")
        plot = frontier_plot(rows, name)
        if isinstance(plot, Plot):
            parts.append(_figure(plot))
    return _section(question, "\n".join(parts))


def frontier_finding(rows: Sequence[FrontierRow]) -> str:
    """What each step up in budget bought: the test error's change per doubling of the parameters."""
    done = [row for row in rows if row.retrained is not None and row.params]
    if len(done) < 2:
        return "Fewer than two budgets have a retrained winner yet; the frontier needs two points to have a slope."
    steps = []
    for low, high in itertools.pairwise(done):
        doublings = math.log2(high.params / low.params)
        change = (high.retrained.test_error - low.retrained.test_error) / doublings
        steps.append(f"{low.budget:,} to {high.budget:,}: {100 * change:+.2f} points per doubling")
    best = min(done, key=lambda row: row.retrained.test_error)
    return (
        f"Test error by budget: {'; '.join(steps)}. Lowest: {best.retrained.test_error:.2%} at {best.budget:,} "
        f"({best.profile} {list(best.widths)}). A step whose change is near zero, or within the seeds' spread, is "
        "where extra parameters stop paying for this search."
    )


def _training(baseline: dict) -> str:
    """How the recorded baseline was trained, from what the grid study stored with it."""
    config = baseline.get("train_config")
    if not config:
        return "the stored baseline does not record its training settings."
    batch = "full batch" if not config.get("batch_size") else f"batch {config['batch_size']}"
    images = f" on {baseline['train_images']:,} training images" if "train_images" in baseline else ""
    return (
        f"linear softmax model trained with {config.get('optimizer', '?')} at learning rate {config.get('lr', '?')}, "
        f"{batch}, {config.get('epochs', '?')} epochs{images}; test figures on the test set."
    )


def _trials(count: int) -> str:
    return f"{count} trial" if count == 1 else f"{count} trials"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _list(depths: Sequence[int]) -> str:
    return ", ".join(str(d) for d in depths)


def _figure(plot: Plot) -> str:
    return pio.to_html(plot.figure, include_plotlyjs=False, full_html=False, config={"responsive": True})


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(question: str, body: str) -> str:
    return f"<section><h2>{question}</h2>\n{body}\n</section>"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>archsearch report</title>
<style>
body {{ font-family: sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 0.8em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f2f2f2; }}
td:first-child, th:first-child {{ text-align: left; }}
.math {{ font-family: serif; font-size: 1.15em; }}
.note {{ color: #555; font-size: 0.9em; }}
section {{ border-top: 1px solid #ddd; margin-top: 1.5em; }}
</style>
<script>{plotlyjs}</script>
</head><body>
<h1>Architecture search under a parameter budget: answers</h1>
<p class="note">Studies read: {studies}.</p>
{body}
</body></html>
"""
