"""archsearch report: one HTML page answering the original study's questions from every stored study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from search.cli.args import epoch_count, seed_list, storage
from search.cli.common import STORAGE_HELP, add_device_option, storage_url
from search.cli.options import add_data_options
from search.errors import UsageError
from search.results import report
from search.results.export import output_folder, write_text
from search.study.lifecycle import load_study, study_names
from search.study.record import StudyRecord
from search.study.storage import describe, open_storage

HELP = "write report.html: the answers to the original study's questions, from all studies in the storage"
INIT_FILE = "init-study.json"
INIT_ATTR = "init_study"
HOW_TO_MEASURE = (
    "Run `archsearch report --init-study` to measure it here (it trains the linear model once per "
    "initialization and seed of `archsearch baseline --init-study`), or run `archsearch baseline --init-study "
    "--json > init-study.json` and pass `--init-json init-study.json`."
)


def add_arguments(parser) -> None:
    parser.add_argument("--storage", type=storage, help=STORAGE_HELP)
    parser.add_argument("--out", default="report", help="output folder (default report/)")
    parser.add_argument(
        "--init-json",
        metavar="FILE",
        help="initialization study as printed by `archsearch baseline --init-study --json`",
    )
    parser.add_argument(
        "--init-study",
        action="store_true",
        help=f"run the initialization study now and keep it as OUT/{INIT_FILE} for later reports",
    )
    parser.add_argument("--init-epochs", type=epoch_count, help="epochs per run of --init-study (default: baseline's)")
    parser.add_argument("--seeds", type=seed_list, help="seeds of --init-study (default: baseline's)")
    add_device_option(parser)
    add_data_options(parser)


def run(args) -> int:
    url = storage_url(args)
    storage = open_storage(url, read_only=True)
    studies = [load_study(storage, name) for name in study_names(storage)]
    ours = [s for s in studies if StudyRecord.of(s).ours]
    if not ours:
        raise UsageError(
            f"no grid or search study in {describe(url)}; run `archsearch search` or `archsearch grid` first"
        )
    out = Path(args.out)
    init, source = _stored_init(args, ours, out)
    measured = None
    if init is None and args.init_study:
        measured = _measure_init(args)
        init, source = measured, f"measured by `archsearch report --init-study` and kept in {out / INIT_FILE}"
    text = report.build(ours, init, source if init is not None else HOW_TO_MEASURE)
    with output_folder(out):
        if measured is not None:
            write_text(out / INIT_FILE, json.dumps(measured, indent=1))
        write_text(out / "report.html", text)
    kinds = [StudyRecord.of(s).kind for s in ours]
    print(
        f"wrote {out / 'report.html'} from {kinds.count('grid')} grid and {kinds.count('search')} search "
        f"studies in {describe(url)}"
    )
    if init is None:
        print("the initialization question is unanswered: " + HOW_TO_MEASURE)
    return 0


def _stored_init(args, studies, out: Path) -> tuple[dict | None, str]:
    """The initialization study from --init-json, a study attribute, or an earlier --init-study, in that order."""
    if args.init_json:
        return _read_init(Path(args.init_json), "--init-json"), f"{args.init_json} (archsearch baseline --init-study)"
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
    try:
        report.outcomes_from(data)
    except (KeyError, TypeError):
        raise UsageError(f"{what} is not the JSON of `archsearch baseline --init-study --json`") from None
    return data


def _measure_init(args) -> dict:
    """Run the baseline command's own initialization study, so its settings stay in one place."""
    command = [sys.executable, "-m", "search", "baseline", "--init-study", "--json", "--device", args.device]
    for flag, value in (
        ("--epochs", args.init_epochs),
        ("--seeds", ",".join(map(str, args.seeds)) if args.seeds else None),
        ("--data-dir", args.data_dir),
        ("--dataset", args.dataset),
        ("--data-limit", args.data_limit),
    ):
        if value is not None:
            command += [flag, str(value)]
    print("running the initialization study of the linear baseline (archsearch baseline --init-study) ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        raise UsageError(f"the initialization study failed: {lines[-1].removeprefix('archsearch: error: ')}")
    return _check_init(json.loads(done.stdout), "the initialization study's output")
