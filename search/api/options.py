"""Every setting a command takes, declared once.

A setting is a field of a frozen dataclass, which gives its name, type and default and checks its range
where it is built (`__post_init__`: the one check, whether the value came from a flag, a keyword or a
study file): `StudyConfig` and `GridConfig` for what a study stores, `RunOptions` below for how one run
goes. A row here adds what the command line needs: how a flag's text is read as a value of that type (its
form only: a whole number, a list, a duration; the range is the dataclass's) and the help. From these rows
the CLI builds its flags, a run writes its workers' command line (search/api/handover.py), and the API's
functions take a typed keyword for each, written out in their signatures so that a type checker and
help() see them; tests/test_options.py holds those signatures, the flags, the study-file keys and the
workers' command line to these rows.

A new option is a field of its dataclass (its default and its check), one row here, and one keyword in
the API functions that take it.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.catalog import ACTIVATION_NAMES
from models.profiles import PROFILES
from search.api.args import (
    DURATION_FORMS,
    MAX_DURATION_SECONDS,
    batch_size_form,
    duration,
    finite_float,
    pack_form,
    seconds_text,
    storage,
    study_name,
    whole_number,
    whole_numbers,
)
from search.checks import check_choice, check_float, check_int, shown
from search.engine.config import BASELINE_TRAIN, DEFAULT_DEVICE, DEVICES, OPTIMIZERS, TrainConfig
from search.errors import UsageError
from search.study.config import DATASET_NAMES, DEFAULT_STORAGE, PRUNERS, SAMPLERS, StudyConfig, field_type
from search.study.grid import GridConfig
from search.study.storage import STORAGE_ENV
from search.study.workers import AUTO_PACK, MAX_PACK, PackSize

MAX_WORKERS = 32  # each worker holds its own copy of torch and the data (about 0.5 GB)
DEFAULT_PACK = 1


def check_device(device: str) -> None:
    check_choice("device", device, DEVICES)


@dataclass(frozen=True)
class RunOptions:
    """How one run goes: not stored with its study, so a resume may change them.

    `study`: the study's name (None: the study file's, else one made from the settings); `storage`: an
    Optuna storage URL (None: $ARCHSEARCH_STORAGE, else the default database); `workers`: processes working
    on the study, this one among them; `pack`: trials each process trains at once (or "auto"); `timeout`:
    seconds after which no new trial starts (None: none); `device`: auto, cpu or cuda; `data_dir`: the
    dataset's root (None: $ARCHSEARCH_DATA, else ./data); `artifacts`: the folder of saved models (None:
    the one the study remembers, else beside a SQLite database)."""

    study: str | None = None
    storage: str | None = None
    workers: int = 1
    pack: PackSize = DEFAULT_PACK
    timeout: float | None = None
    device: str = DEFAULT_DEVICE
    data_dir: str | None = None
    artifacts: str | None = None

    def __post_init__(self) -> None:
        check_int("workers", self.workers, 1, MAX_WORKERS, "1 runs the study in this process alone")
        if isinstance(self.pack, str) and self.pack != AUTO_PACK:
            raise UsageError(f'pack must be a whole number or "{AUTO_PACK}", got {shown(self.pack)}')
        if self.pack != AUTO_PACK:
            check_int("pack", self.pack, 1, MAX_PACK, advice=f'or give "{AUTO_PACK}" to measure the size that pays')
        if self.timeout is not None:
            check_float("timeout", self.timeout, 0, None, low_open=True, advice=f"a duration such as {DURATION_FORMS}")
            if self.timeout > MAX_DURATION_SECONDS:
                days = MAX_DURATION_SECONDS // 86_400
                raise UsageError(
                    f"timeout must be at most {days} days ({MAX_DURATION_SECONDS:,} s), got {self.timeout:g}; "
                    "resume the study to run longer"
                )
        check_device(self.device)


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names; the config checks each one against its choices."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def name_list_text(names: str | Sequence[str]) -> str:
    """Names as `name_list` reads them back (a single name given as a string stays itself)."""
    return names if isinstance(names, str) else ",".join(names)


@dataclass(frozen=True)
class Option:
    """One setting: the dataclass field it is (`path`, dotted into nested tables: `space.max_depth`,
    `train.lr`), how a flag's text reads as its value, how a value is written back as that text (for a
    worker's command line), and its help. `choices` are shown in the help; the field's check refuses others.

    `alone`: the field's check holds for it alone, so a flag is checked as it is read, by building its
    dataclass with that one value (the message then names the flag); a grid's budgets, depths and seeds
    are checked against each other, once all are known."""

    owner: type
    path: str
    parse: Callable[[str], Any] = str
    help: str | None = None
    choices: Sequence[str] | None = None
    text: Callable[[Any], str] = str
    alone: bool = True

    @property
    def name(self) -> str:
        """The API keyword, the study file's key and the flag's dest."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> Any:
        return field_type(self.owner, self.path)

    @property
    def table(self) -> type:
        """The dataclass that holds the field itself: the owner, or the nested table the path leads into."""
        owner = self.owner
        for table in self.path.split(".")[:-1]:
            owner = field_type(owner, table)
        return owner

    @property
    def default(self) -> Any:
        (found,) = [f for f in dataclasses.fields(self.table) if f.name == self.name]
        return found.default if found.default is not dataclasses.MISSING else found.default_factory()

    def read(self, text: str) -> Any:
        """A flag's text as this setting's value, refused as argparse refuses a value (one line, exit 2)."""
        value = self.parse(text)
        if self.alone:
            try:
                self.table(**{self.name: value})  # the field's one check, its dataclass's own
            except UsageError as error:
                raise argparse.ArgumentTypeError(str(error)) from None
        return value

    @property
    def stored(self) -> bool:
        """A setting that an omitted flag or keyword leaves as it is kept elsewhere: as its study file or
        stored study has it, or (a baseline's training) as the original study's baseline has it."""
        return self.owner is not RunOptions


def _run(name: str, parse: Callable[[str], Any], help: str, **more: Any) -> Option:
    return Option(RunOptions, name, parse, help, **more)


RUN_OPTIONS = (
    _run("study", study_name, "study name"),
    _run("storage", storage, f"Optuna storage URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE}), or journal:PATH"),
    _run(
        "workers",
        whole_number,
        f"processes working on the study: 1 (default) runs it in this process alone, at most {MAX_WORKERS}",
    ),
    _run(
        "pack",
        pack_form,
        f"trials each process trains at once, as one batched model (1: one at a time; at most {MAX_PACK}; "
        f"{AUTO_PACK}: for each pack, the size measured to pay on this machine; default {DEFAULT_PACK}); "
        "a search packs only around the structures of its best trials, and explores alone",
    ),
    _run(
        "timeout",
        duration,
        "stop starting trials after this wall-clock time (90m, 2h, 45s); the same command resumes",
        text=seconds_text,
    ),
    _run("device", str, "training device", choices=DEVICES),
    _run("data_dir", str, "dataset root in torchvision's layout (default: $ARCHSEARCH_DATA or ./data)"),
    _run("artifacts", str, "folder for saved models (default: artifacts/ beside a SQLite database)"),
)
RUN = {option.name: option for option in RUN_OPTIONS}
GRID_RUN_OPTIONS = tuple(option for option in RUN_OPTIONS if option.name != "artifacts")  # a grid saves no models
# What a run hands each worker process it spawns; the storage goes through the environment, never argv.
HANDED_OPTIONS = tuple(RUN[name] for name in ("study", "device", "pack", "timeout", "data_dir", "artifacts"))

SEARCH_OPTIONS = (
    Option(StudyConfig, "budget", whole_number, "parameter budget P"),
    Option(StudyConfig, "tolerance", finite_float, "allowed relative distance to P (default 0.02)"),
    Option(StudyConfig, "trials", whole_number, "finished trials wanted in total (resume counts)"),
    Option(StudyConfig, "epochs", whole_number),
    Option(
        StudyConfig,
        "space.profiles",
        name_list,
        f"comma-separated subset of {','.join(PROFILES)}",
        text=name_list_text,
    ),
    Option(StudyConfig, "space.max_depth", whole_number),
    Option(StudyConfig, "sampler", choices=SAMPLERS),
    Option(StudyConfig, "pruner", choices=PRUNERS),
    Option(StudyConfig, "seed", whole_number),
    Option(
        StudyConfig,
        "warm_start",
        name_list,
        "comma-separated search studies of this storage, at any budget, whose best trials this new study tries first",
        text=name_list_text,
    ),
    Option(
        StudyConfig,
        "warm_start_top",
        whole_number,
        f"best trials a warm start takes from each source study (default {StudyConfig.warm_start_top})",
    ),
)

GRID_OPTIONS = (
    Option(
        GridConfig, "budgets", whole_numbers, "comma-separated parameter budgets, e.g. 25000,50000,100000", alone=False
    ),
    Option(
        GridConfig, "depths", whole_numbers, "comma-separated numbers of hidden layers, e.g. 1,2,3,4,6,8", alone=False
    ),
    Option(GridConfig, "seeds", whole_number, "seeds per shape: 0, 1, ..., N-1", alone=False),
    Option(GridConfig, "train.epochs", whole_number),
    Option(GridConfig, "train.lr", finite_float),
    Option(GridConfig, "train.batch_size", batch_size_form, "'full' or a mini-batch size"),
    Option(GridConfig, "train.optimizer", choices=OPTIMIZERS),
    Option(GridConfig, "train.activation", choices=ACTIVATION_NAMES),
)

# The linear baseline's training (`baseline`, and `report --init-study`, which runs it): a setting left out
# is the original study's (BASELINE_TRAIN); `seed` is the lone baseline's, the initialization study's are its own.
BASELINE_OPTIONS = (
    Option(TrainConfig, "lr", finite_float, f"learning rate (default {BASELINE_TRAIN.lr:g})"),
    Option(TrainConfig, "epochs", whole_number, f"default {BASELINE_TRAIN.epochs}"),
    Option(TrainConfig, "batch_size", batch_size_form, "'full' (default) or a mini-batch size"),
)
BASELINE = {option.name: option for option in BASELINE_OPTIONS}
BASELINE_SEED = Option(TrainConfig, "seed", whole_number, f"default {TrainConfig.seed}")

# Shared with the commands that only read data (baseline, best, report), where they are plain flags.
DATA_OPTIONS = (
    Option(StudyConfig, "dataset", help="default mnist", choices=DATASET_NAMES),
    Option(StudyConfig, "data_limit", whole_number, "use only the first N samples of each split (quick runs)"),
)

# A frontier searches several budgets in one sitting, and every budget after the first starts from the best
# trials of the one below it, so each budget's study asks fewer trials than a lone search: with 30, the
# default frontier of three budgets (100,000 to 636,010) searches and retrains in about 90 minutes on 2 cores.
FRONTIER_TRIALS = 30

# The frontier sets each study's budget and warm-start sources itself (warm_start_top still applies).
FRONTIER_OPTIONS = tuple(
    dataclasses.replace(
        option, help=f"finished trials wanted in each budget's study (default {FRONTIER_TRIALS}; resume counts)"
    )
    if option.name == "trials"
    else option
    for option in SEARCH_OPTIONS
    if option.name not in ("budget", "warm_start")
)


def given_settings(arguments: dict[str, Any], options: Sequence[Option]) -> dict[str, Any]:
    """The settings among a call's `arguments` (its locals()) that were given: None leaves one as stored."""
    return {option.name: arguments[option.name] for option in options if arguments[option.name] is not None}


def apply_settings(config: Any, values: dict[str, Any], options: Sequence[Option]) -> Any:
    """`config` with the settings of `values` (by name) laid over it; the others keep the config's value."""
    changes: dict[str, Any] = {}
    nested: dict[str, list[Option]] = {}
    for option in options:
        head, _, rest = option.path.partition(".")
        if rest:
            inner = dataclasses.replace(option, owner=field_type(option.owner, head), path=rest)
            nested.setdefault(head, []).append(inner)
        elif values.get(option.name) is not None:
            changes[head] = values[option.name]
    for head, inner in nested.items():
        changes[head] = apply_settings(getattr(config, head), values, inner)
    return dataclasses.replace(config, **changes)
