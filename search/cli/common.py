"""The flags the commands share, built from the declared options (search/api/options.py); each sets the
API keyword of the same name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from search.api.options import DATA_OPTIONS, RUN, Option
from search.api.outputs import FORMATS

STORAGE_HELP = RUN["storage"].help


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], required: Sequence[str] = (), **help: str
) -> None:
    """A flag for each declared option: its text read by the option's type, its help (or the one given
    here by name, where a command says more). A study's setting left out is None, so the study file's
    value stands; a run option left out takes its default."""
    for option in options:
        parser.add_argument(
            option.flag,
            dest=option.name,
            type=option.read,
            default=None if option.stored else option.default,
            metavar="{" + ",".join(option.choices) + "}" if option.choices else None,
            help=help.get(option.name, option.help),
            required=option.name in required,
        )


def add_storage_options(parser, study_required: bool = False, artifacts: bool = True) -> None:
    chosen = [RUN["study"], RUN["storage"], *([RUN["artifacts"]] if artifacts else [])]
    add_options(parser, chosen, required=("study",) if study_required else ())


def add_device_option(parser) -> None:
    add_options(parser, [RUN["device"]])


def add_worker_options(parser) -> None:
    add_options(parser, [RUN["workers"], RUN["pack"], RUN["timeout"]])


def add_data_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser, [RUN["data_dir"], *DATA_OPTIONS])


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")


def given(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The options of `options` as the API's keyword arguments: a study's setting only where its flag was given."""
    return {
        option.name: getattr(args, option.name)
        for option in options
        if not (option.stored and getattr(args, option.name) is None)
    }


def formats(text: str) -> list[str]:
    """--format: html, png or both, comma-separated."""
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {text!r}; choose one or more of {','.join(FORMATS)}")
    return chosen
