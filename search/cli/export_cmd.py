"""archsearch export: a study's figures as interactive HTML and PNG, each with its data as CSV."""

from __future__ import annotations

import argparse
import sys

from search.cli.args import storage, study_name
from search.cli.common import STORAGE_HELP, storage_url
from search.errors import UsageError
from search.results.export import FORMATS, PNG_HINT, output_folder, safe_file_name, write_plots
from search.results.plots import Plot, study_plots
from search.study.lifecycle import load_study
from search.study.record import StudyRecord
from search.study.storage import describe, open_storage

HELP = "write a study's plots (k-sweep for a grid study; Optuna's and ours for a search) as HTML, PNG and CSV"


def formats(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {text!r}; choose one or more of {','.join(FORMATS)}")
    return chosen


def add_arguments(parser) -> None:
    parser.add_argument("--study", type=study_name, required=True, help="study name")
    parser.add_argument("--storage", type=storage, help=STORAGE_HELP)
    parser.add_argument("--out", help="output folder (default exports/STUDY, the name made safe as a folder name)")
    parser.add_argument("--format", type=formats, default=list(FORMATS), help="html, png or html,png (default)")


def run(args) -> int:
    url = storage_url(args)
    study = load_study(open_storage(url, read_only=True), args.study)
    kind = StudyRecord.of(study).kind
    if kind not in ("grid", "search"):
        raise UsageError(f"study {args.study!r} is not an archsearch grid or search study (kind {kind!r})")
    results = study_plots(study)
    plots = [r for r in results if isinstance(r, Plot)]
    skipped = [r for r in results if not isinstance(r, Plot)]
    if not plots:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped)
        raise UsageError(f"nothing to export from study {args.study!r} yet ({reasons})")
    with output_folder(args.out or f"exports/{safe_file_name(args.study)}") as out:
        written, png = write_plots(plots, out, args.format)
    for skip in skipped:
        print(f"skipped {skip.name}: {skip.reason}")
    print(
        f"study {args.study!r} ({kind}) in {describe(url)}: wrote {len(written)} files for "
        f"{len(plots)} plots to {out}/ ({', '.join(p.name for p in plots)})"
    )
    if "png" in args.format and not png:
        print(f"archsearch: {PNG_HINT}", file=sys.stderr)
    return 0
