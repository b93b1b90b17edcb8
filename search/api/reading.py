"""Reading stored studies from Python: the trials as rows, the best trial as a record, the figures as
plotly Figures, and the files `export` and `report` write. Nothing here writes to a storage."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna
import plotly.graph_objects as go

from search.api.basics import baseline_config, check_init_seeds, divergence_refused
from search.api.calls import api_call
from search.api.handover import flag
from search.api.options import check_device
from search.api.progress import progress
from search.api.running import artifacts_dir, storage_url
from search.checks import check_int
from search.engine.config import DEFAULT_DEVICE
from search.errors import UsageError, worded
from search.files import replaced_atomically
from search.results.frontier_plot import frontier_plot
from search.results.plots import Plot, Skipped, study_plots
from search.results.tables import BestTrial, FrontierRow, Retrained, TrialRow, frontier_rows, trial_rows
from search.study.lifecycle import best_trial, frontier_studies, load_study, study_names
from search.study.objective import build_model
from search.study.record import StudyRecord
from search.study.storage import describe, open_storage

OURS = ("search", "grid")
MAX_RETRAIN_SEEDS = 100
INIT_FILE = "init-study.json"
INIT_ATTR = "init_study"
HOW_TO_MEASURE = (
    "Run `archsearch report --init-study` to measure it here (it trains the linear model once per "
    "initialization and seed of `archsearch baseline --init-study`), or run `archsearch baseline --init-study "
    "--json > init-study.json` and pass `--init-json init-study.json`."
)


def open_study(study: str, storage: str | None, purpose: str) -> tuple[optuna.Study, str]:
    """An archsearch study, opened read-only, and its storage URL."""
    url = storage_url(storage)
    opened = load_study(open_storage(url, read_only=True), study)
    kind = StudyRecord.of(opened).kind
    if kind not in OURS:
        raise UsageError(f"study {study!r} was not made by archsearch (kind {kind!r}); {purpose}")
    return opened, url


def stored_frontier(study: str, storage: str | None) -> tuple[list[optuna.Study], str] | None:
    """The studies of the frontier named `study` (one per budget, NAME@BUDGET) and the storage URL, for
    `best` and `export`; None where a study has that very name, or no frontier does.

    A study named NAME wins over a frontier named NAME: its name is the only way to reach it, while
    each of the frontier's studies stays reachable as NAME@BUDGET. A name of neither kind is then
    opened as a study, which refuses it in one line listing the studies there."""
    url = storage_url(storage)
    opened = open_storage(url, read_only=True)
    if study in study_names(opened):
        return None
    members = frontier_studies(opened, study)
    return (members, url) if members else None


@api_call
def trials(study: str, *, storage: str | None = None) -> list[TrialRow]:
    """Every trial of a study as a row, in number order: `pandas.DataFrame(trials(...))` is its table."""
    opened, _ = open_study(study, storage, "it has no trials of ours to list")
    return trial_rows(opened.get_trials(deepcopy=False))


@api_call
def figures(study: str, *, storage: str | None = None) -> dict[str, go.Figure]:
    """The study's figures by name as plotly Figures (a notebook shows each inline); the ones its trials
    cannot support yet are left out (`export` says why)."""
    opened, _ = open_study(study, storage, "it has no figures of ours")
    return {result.name: result.figure for result in study_plots(opened) if isinstance(result, Plot)}


@dataclass(frozen=True)
class FrontierBest:
    """`best` of a frontier: each budget's winner by validation loss and, once retrained, its test error
    (mean and standard deviation over the seeds), in budget order."""

    name: str
    rows: list[FrontierRow]
    storage: str  # described, without a password

    def to_json(self) -> dict:
        """The winners as `best --json` prints them: the retrained test error beside each seed's accuracy."""
        budgets = []
        for row in self.rows:
            fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in ("settings", "retrained")}
            fields["widths"] = list(row.widths)
            done = row.retrained
            errors = {"test_error": done.test_error, "test_error_std": done.test_error_std} if done else {}
            budgets.append({**fields, "retrained": {**dataclasses.asdict(done), **errors} if done else None})
        return {"frontier": self.name, "budgets": budgets}


def check_retrain_seeds(seeds: int) -> None:
    """How many seeds a winner is retrained with (`best`, `frontier`); also their --seeds flag's check."""
    check_int("seeds", seeds, 1, MAX_RETRAIN_SEEDS)


@api_call
def best(
    study: str,
    *,
    storage: str | None = None,
    export: str | None = None,
    retrain: bool = False,
    seeds: int = 1,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    artifacts: str | None = None,
    quiet: bool = False,
) -> BestTrial | FrontierBest:
    """The best trial by validation loss (`archsearch best`); `export` writes its model to a file,
    `retrain` trains the same configuration on all training images with `seeds` seeds and tests it
    (the mean and each seed's accuracy; an exported retrained model is the first seed's).

    `study` may name a frontier: the result is then a FrontierBest, each budget's winner and the test
    error of its retraining, which the frontier did itself. `retrain` and `export` are refused there:
    `best` only reads, so retraining every budget here would be a long run whose results are lost and
    disagree with the stored ones; `export` writes one model. Naming a budget's study does either for
    its winner. A study named like the frontier wins (see `stored_frontier`)."""
    check_device(device)
    check_retrain_seeds(seeds)
    frontier = stored_frontier(study, storage)
    if frontier is not None:
        return _frontier_best(study, *frontier, retrain or bool(export))
    opened, url = open_study(study, storage, "it has no best model to show")
    trial = best_trial(opened)
    record = BestTrial.of(trial, StudyRecord.of(opened).settings, len(opened.trials), opened)
    if export:
        check_export_target(Path(export))
    model = None
    if retrain:
        retrained, model = retrain_trial(opened, record, seeds, device, data_dir, quiet)
        record = replace(record, retrained=retrained)
    if export:
        if model is not None:
            _export_retrained(export, record, model)
        else:
            from search.study.checkpoints import download_model

            download_model(
                open_storage(url, read_only=True), opened, trial, artifacts_dir(artifacts, opened, url), export
            )
        record = replace(record, exported=str(Path(export).resolve()))
    return record


def _frontier_best(name: str, members: list[optuna.Study], url: str, asked_to_write: bool) -> FrontierBest:
    if asked_to_write:
        studies = ", ".join(study.study_name for study in members)
        raise UsageError(
            f"{name!r} is a frontier, which retrains its winners itself; to retrain or export one winner, "
            f"name its budget's study: one of {studies}"
        )
    return FrontierBest(name, frontier_rows(members, name), describe(url))


def check_export_target(target: Path) -> None:
    """The model goes to a new file or replaces a regular one; never through a link or onto a device."""
    if target.is_symlink():
        raise UsageError(f"{target} is a symbolic link; give the path of a regular file to write the model to")
    if target.exists() and not target.is_file():
        raise UsageError(f"{target} exists and is not a regular file; give a new file name for the model")
    if not target.resolve().parent.is_dir():
        raise UsageError(f"cannot write {target}: its folder does not exist")


def retrain_trial(
    study: optuna.Study, record: BestTrial, seeds: int, device: str, data_dir: str | None, quiet: bool
) -> tuple[Retrained, object]:
    """The best configuration trained on all training images once per seed (the trial's own seed, then
    the next ones) and tested; returns the summary and the first seed's model."""
    from search.engine.config import TrainConfig
    from search.engine.data import load_data
    from search.engine.trainer import resolve_device, train

    stored = StudyRecord.of(study).settings
    first = TrainConfig(**{**record.train_config, "device": device})
    torch_device = resolve_device(device)
    data = load_data(
        data_dir, stored.get("dataset", "mnist"), str(torch_device), limit=stored.get("data_limit") or None
    )
    chosen = [first.seed + offset for offset in range(seeds)]
    runs, kept = [], None
    without = worded(cli="run without --retrain", api="call with retrain=False")
    advice = f"this configuration diverges on all training images; retrain another trial, or {without}"
    with progress(first.epochs * seeds, "retrain", quiet) as bar, divergence_refused(first, advice):
        for seed in chosen:
            config = dataclasses.replace(first, seed=seed)
            model = build_model(record.widths, config)
            result = train(model, data.train_full, config, test=data.test, on_epoch=lambda r: bar.update(1))
            runs.append((result.train.loss, result.test.loss, result.test.accuracy))
            kept = kept or model
    return Retrained.of_runs(f"all {len(data.train_full):,} training images", chosen, runs), kept


def _export_retrained(path: str, record: BestTrial, model) -> None:
    from models.mlp import save_model

    metadata = {k: v for k, v in record.to_json().items() if k not in ("retrained", "train_config", "exported")}
    metadata |= {"trained_on": record.retrained.trained_on, "test_accuracy": record.retrained.test_accuracy}
    try:
        with replaced_atomically(path) as handle:
            save_model(model, record.train_config["activation"], handle, {"metadata": metadata})
    except OSError as error:  # a full disk, say: nothing half-written is left
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


@dataclass(frozen=True)
class Exported:
    """What `export` wrote: the files, the figures, those skipped and why, and whether PNGs were made;
    `optuna_study` is the optuna.Study the figures were drawn from."""

    folder: Path
    files: list[Path]
    plots: list[str]
    skipped: list[Skipped]
    kind: str  # "frontier" for a frontier: its plot here, each budget's study exported into `studies`
    png_written: bool  # or not asked for; False: kaleido found no Chrome (PNG_HINT says what to do)
    storage: str  # described, without a password
    # The study the figures were drawn from; None for a frontier, whose budgets' studies are in `studies`.
    optuna_study: optuna.Study | None = field(repr=False, compare=False)
    studies: list[Exported] = dataclasses.field(default_factory=list)  # a frontier's, one per budget


@api_call
def export(
    study: str,
    *,
    storage: str | None = None,
    out: str | None = None,
    formats: Sequence[str] | str = ("html", "png"),
) -> Exported:
    """A study's figures as HTML and PNG, each with its data as CSV (`archsearch export`), in `out`
    (default exports/STUDY).

    `study` may name a frontier: its plot goes to `out`, and each budget's study is exported as a study
    is, into the subfolder budget-BUDGET; the files of each are in `studies`. A study named like the
    frontier wins (see `stored_frontier`)."""
    from search.results.export import FORMATS, output_folder, safe_file_name, write_plots

    chosen = tuple(formats) if not isinstance(formats, str) else tuple(p.strip() for p in formats.split(","))
    if not chosen or any(part not in FORMATS for part in chosen):
        raise UsageError(f"unknown format {','.join(map(str, chosen))!r}; choose one or more of {','.join(FORMATS)}")
    frontier = stored_frontier(study, storage)
    if frontier is not None:
        return _export_frontier(study, *frontier, out or f"exports/{safe_file_name(study)}", chosen)
    opened, url = open_study(study, storage, "it is not an archsearch grid or search study")
    kind = StudyRecord.of(opened).kind
    results = study_plots(opened)
    plots = [r for r in results if isinstance(r, Plot)]
    skipped = [r for r in results if not isinstance(r, Plot)]
    if not plots:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped)
        raise UsageError(f"nothing to export from study {study!r} yet ({reasons})")
    with output_folder(out or f"exports/{safe_file_name(study)}") as folder:
        written, png = write_plots(plots, folder, chosen)
    names = [p.name for p in plots]
    return Exported(folder, written, names, skipped, kind, png or "png" not in chosen, describe(url), opened)


def _export_frontier(name: str, members: list[optuna.Study], url: str, out: str, chosen: tuple[str, ...]) -> Exported:
    """The frontier's plot in `out`, each budget's study's plots in out/budget-BUDGET, written together
    once every figure is drawn, so nothing is written when nothing can be."""
    from search.results.export import output_folder, write_plot_folders

    rows = frontier_rows(members, name)
    by_name = {study.study_name: study for study in members}
    frontier = frontier_plot(rows, name)
    budgets = {f"budget-{row.budget}": study_plots(by_name[row.study]) for row in rows}
    folders = {"": [frontier] if isinstance(frontier, Plot) else []}
    folders |= {sub: [r for r in results if isinstance(r, Plot)] for sub, results in budgets.items()}
    if not any(folders.values()):
        raise UsageError(f"nothing to export from frontier {name!r} yet: no budget's study has completed a trial")
    with output_folder(out) as folder:
        written, png = write_plot_folders(folders, folder, chosen)
    png_written = png or "png" not in chosen
    storage = describe(url)
    studies = []
    for row in rows:
        sub = f"budget-{row.budget}"
        files = [path for path in written if path.parent == folder / sub]
        skipped_here = [r for r in budgets[sub] if not isinstance(r, Plot)]
        names = [plot.name for plot in folders[sub]]
        opened = by_name[row.study]
        studies.append(Exported(folder / sub, files, names, skipped_here, "search", png_written, storage, opened))
    skipped = [] if isinstance(frontier, Plot) else [frontier]
    return Exported(
        folder, written, [p.name for p in folders[""]], skipped, "frontier", png_written, storage, None, studies
    )


@dataclass(frozen=True)
class Report:
    """The report page and what it was built from; `optuna_studies` holds each optuna.Study it read, by name."""

    path: Path
    grids: int
    searches: int
    storage: str  # described, without a password
    init_answered: bool
    optuna_studies: dict[str, optuna.Study] = field(repr=False, compare=False)  # the studies read, by name


@api_call
def report(
    *,
    storage: str | None = None,
    out: str = "report",
    init_json: str | None = None,
    init_study: bool = False,
    init_epochs: int | None = None,
    seeds: Sequence[int] | None = None,
    device: str = DEFAULT_DEVICE,
    data_dir: str | None = None,
    dataset: str | None = None,
    data_limit: int | None = None,
) -> Report:
    """report.html: the answers to the original study's questions, from every study in the storage."""
    from search.results import report as pages
    from search.results.export import output_folder, write_text

    check_device(device)
    if init_epochs is not None:
        baseline_config(None, init_epochs, None, 0, device)  # the initialization study's own check of its epochs
    if seeds is not None:
        check_init_seeds(tuple(seeds))
    url = storage_url(storage)
    opened = open_storage(url, read_only=True)
    ours = [s for s in (load_study(opened, name) for name in study_names(opened)) if StudyRecord.of(s).ours]
    if not ours:
        raise UsageError(
            f"no grid or search study in {describe(url)}; run `archsearch search` or `archsearch grid` first"
        )
    folder = Path(out)
    init, source = _stored_init(init_json, ours, folder)
    measured = None
    if init is None and init_study:
        measured = _measure_init(init_epochs, seeds, device, data_dir, dataset, data_limit)
        init, source = measured, f"measured by `archsearch report --init-study` and kept in {folder / INIT_FILE}"
    text = pages.build(ours, init, source if init is not None else HOW_TO_MEASURE)
    with output_folder(folder):
        if measured is not None:
            write_text(folder / INIT_FILE, json.dumps(measured, indent=1))
        write_text(folder / "report.html", text)
    kinds = [StudyRecord.of(s).kind for s in ours]
    studies = {study.study_name: study for study in ours}
    return Report(
        folder / "report.html", kinds.count("grid"), kinds.count("search"), describe(url), init is not None, studies
    )


def _stored_init(init_json: str | None, studies, out: Path) -> tuple[dict | None, str]:
    """The initialization study from `init_json`, a study attribute, or an earlier --init-study, in that order."""
    if init_json:
        given = _read_init(Path(init_json), worded(cli="--init-json", api="init_json"))
        return given, f"{init_json} (archsearch baseline --init-study)"
    for study in studies:
        stored = StudyRecord.of(study).init_study
        if stored is not None:
            init = _check_init(stored, f"study attribute {INIT_ATTR} of {study.study_name!r}")
            return init, f"study attribute {INIT_ATTR} of study {study.study_name}"
    cached = out / INIT_FILE
    if cached.is_file():
        return _read_init(cached, "cached"), f"{cached}, kept by an earlier `archsearch report --init-study`"
    return None, ""


def _read_init(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {what} file {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(
            f"{what} file {path} is not JSON; make it with `archsearch baseline --init-study --json`"
        ) from None
    return _check_init(data, f"{what} file {path}")


def _check_init(data, what: str) -> dict:
    from search.results import report as pages

    try:
        pages.outcomes_from(data)
    except (KeyError, TypeError):
        raise UsageError(f"{what} is not the JSON of `archsearch baseline --init-study --json`") from None
    return data


def _measure_init(init_epochs, seeds, device, data_dir, dataset, data_limit) -> dict:
    """Run the baseline command's own initialization study, so its settings stay in one place."""
    command = [sys.executable, "-m", "search", "baseline", "--init-study", "--json", flag("--device", device)]
    for name, value in (
        ("--epochs", init_epochs),
        ("--seeds", ",".join(map(str, seeds)) if seeds else None),
        ("--data-dir", data_dir),
        ("--dataset", dataset),
        ("--data-limit", data_limit),
    ):
        if value is not None:
            command.append(flag(name, value))  # one word each: a data folder named "-x" stays a value
    print("running the initialization study of the linear baseline (archsearch baseline --init-study) ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        raise UsageError(f"the initialization study failed: {lines[-1].removeprefix('archsearch: error: ')}")
    return _check_init(json.loads(done.stdout), "the initialization study's output")
