"""archsearch export: a study's figures as interactive HTML and PNG, each with its data as CSV."""

from __future__ import annotations

import sys

from search import api
from search.api.outputs import FORMATS, PNG_HINT
from search.cli.common import add_storage_options, formats

HELP = (
    "write a study's plots (k-sweep for a grid study; Optuna's and ours for a search; for a frontier its plot "
    "and each budget's) as HTML, PNG and CSV"
)


def add_arguments(parser) -> None:
    add_storage_options(parser, study_required=True, artifacts=False)
    parser.add_argument("--out", help="output folder (default exports/STUDY, the name made safe as a folder name)")
    parser.add_argument("--format", type=formats, default=list(FORMATS), help="html, png or html,png (default)")


def run(args) -> int:
    done = api.export(args.study, storage=args.storage, out=args.out, formats=args.format)
    if done.kind == "frontier":
        for skip in done.skipped:
            print(f"skipped {skip.name}: {skip.reason}")
        print(
            f"frontier {args.study!r} in {done.storage}: wrote {len(done.files)} files to {done.folder}/, "
            f"{'the frontier plot there' if done.plots else 'no frontier plot'} and each budget's study's plots:"
        )
        for part in done.studies:
            for skip in part.skipped:
                print(f"  skipped {skip.name}: {skip.reason}")
            print(
                f"  {part.folder.name}/: {len(part.files)} files for {len(part.plots)} plots ({', '.join(part.plots)})"
            )
    else:
        for skip in done.skipped:
            print(f"skipped {skip.name}: {skip.reason}")
        print(
            f"study {args.study!r} ({done.kind}) in {done.storage}: wrote {len(done.files)} files for "
            f"{len(done.plots)} plots to {done.folder}/ ({', '.join(done.plots)})"
        )
    if not done.png_written:
        print(f"archsearch: {PNG_HINT}", file=sys.stderr)
    return 0
