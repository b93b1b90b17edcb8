"""The flags the commands share; each sets an option of the API (search/api) of the same name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from search.api.args import duration, pack_size, positive_int, storage, study_name
from search.api.options import DATA_OPTIONS, ConfigOption
from search.api.outputs import FORMATS
from search.api.running import AUTO_PACK, DEFAULT_PACK, DEFAULT_STORAGE, DEVICES, MAX_PACK, MAX_WORKERS, STORAGE_ENV

STORAGE_HELP = f"Optuna storage URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE}), or journal:PATH"


def add_storage_options(parser, study_required: bool = False, artifacts: bool = True) -> None:
    parser.add_argument("--study", type=study_name, required=study_required, help="study name")
    parser.add_argument("--storage", type=storage, help=STORAGE_HELP)
    if artifacts:
        parser.add_argument(
            "--artifacts", help="folder for saved models (default: artifacts/ beside a SQLite database)"
        )


def add_device_option(parser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto", help="training device")


def add_worker_options(parser) -> None:
    parser.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help=f"processes working on the study: 1 (default) runs it in this process alone, at most {MAX_WORKERS}",
    )
    add_pack_option(parser)
    add_timeout_option(parser)


def add_pack_option(parser) -> None:
    parser.add_argument(
        "--pack",
        type=pack_size,
        default=DEFAULT_PACK,
        help=f"trials each process trains at once, as one batched model (1: one at a time; at most {MAX_PACK}; "
        f"{AUTO_PACK}: for each pack, the size measured to pay on this machine; default {DEFAULT_PACK}); "
        "a search packs only around the structures of its best trials, and explores alone",
    )


def worker_count(text: str) -> int:
    """1 to MAX_WORKERS processes: 1 runs the study in this process alone; 0 would run no worker at all."""
    return positive_int(text, high=MAX_WORKERS)


def add_timeout_option(parser) -> None:
    parser.add_argument(
        "--timeout",
        type=duration,
        help="stop starting trials after this wall-clock time (90m, 2h, 45s); the same command resumes",
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="dataset root in torchvision's layout (default: $ARCHSEARCH_DATA or ./data)")
    add_config_options(parser, DATA_OPTIONS)


def add_config_options(parser: argparse.ArgumentParser, options: Sequence[ConfigOption]) -> None:
    for option in options:
        parser.add_argument(option.flag, dest=option.dest, type=option.type, choices=option.choices, help=option.help)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")


def given_settings(args: argparse.Namespace, options: Sequence[ConfigOption]) -> dict:
    """The settings flags given on the command line, as the API's keyword arguments."""
    return {option.dest: getattr(args, option.dest) for option in options if getattr(args, option.dest) is not None}


def run_options(args: argparse.Namespace) -> dict:
    """How `search` and `grid` run (study, storage, workers, pack, timeout, device, data), as API keywords."""
    names = ("study", "storage", "workers", "pack", "timeout", "device", "data_dir")
    return {name: getattr(args, name) for name in names}


def formats(text: str) -> list[str]:
    """--format: html, png or both, comma-separated."""
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {text!r}; choose one or more of {','.join(FORMATS)}")
    return chosen
