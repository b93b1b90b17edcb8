"""Typed configuration with the one set of defaults; TOML study files mirror these fields.

Every field is checked where its dataclass is built, so a study file, a stored study and the flags
all meet the same limits, and bad input is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from models.budget import MAX_BUDGET, MAX_DEPTH, MIN_BUDGET
from models.catalog import ACTIVATION_NAMES, DATASET_FOLDERS
from models.profiles import PROFILES
from search.checks import (
    check_choice,
    check_choices,
    check_float,
    check_float_range,
    check_int,
    check_ints,
    is_finite,
    shown,
)
from search.engine.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_SEED, OPTIMIZERS, SCHEDULES
from search.errors import UsageError, printable
from search.study.storage import DEFAULT_GRACE_SECONDS, DEFAULT_HEARTBEAT_SECONDS

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
DATASET_NAMES = tuple(DATASET_FOLDERS)
DEFAULT_STORAGE = "sqlite:///studies/archsearch.db"

# Upper limits of every setting, so that a typo of a few digits is refused in one line instead of
# running for years or allocating far more memory than the machine has.
MAX_TRIALS = 1_000_000  # finished trials of one study, or points of one grid
MAX_SEED_COUNT = 1_000  # seeds per grid shape, or per initialization of the baseline's init study
MAX_DATA_LIMIT = 2**31 - 1  # an int32 index; the datasets hold 70,000 images anyway
MAX_TOLERANCE = 0.5  # relative distance to the budget: beyond it the budget means nothing
MAX_HEARTBEAT_SECONDS = 3_600  # a trial silent for an hour is surely gone
MAX_GRACE_SECONDS = 86_400  # a day: longer would leave a dead worker's trial blocking its point
MAX_STUDY_NAME_LENGTH = 200  # room for any sensible name, and short enough for file names derived from it
MAX_STUDY_FILE_BYTES = 1_000_000  # a study file is about 1 KB; this refuses /dev/zero and stray data files
DEFAULT_WARM_START_TOP = 8  # best trials a warm start takes from each source study
# Settings that act only before a study's first trial (search/study/warm.py): a resume may leave them out or
# change them without making another experiment; what was done is the study's record (StudyRecord.warm_start).
WARM_START_SETTINGS = ("warm_start", "warm_start_top")

STUDY_NAME_EXAMPLE = "choose another, e.g. profiles-50k"
BUDGET_ADVICE = (
    f"{MIN_BUDGET} parameters is the smallest MLP (one hidden layer of width 1), "
    f"and {MAX_BUDGET:,} is far beyond what an MNIST study needs"
)


@dataclass(frozen=True)
class SearchSpace:
    """Ranges the profile search samples from; every `suggest_*` reads them (search/study/space.py).

    The defaults are the wide space narrowed by evidence: a choice is left out where no recorded search
    that offered it picked it, and the space widens again in a study file (`studies/wide.toml` holds the
    wide space). The searches behind each narrowing are in docs/frontier.md ("Profile searches at one
    budget", "The targets", "Ablations"): profiles-50k and profiles-100k (wide space, 80 trials each),
    t636 (wide space, 91 trials), target-100k, target-100k-b and target-266k. The test set decided none
    of it: those searches chose by validation loss."""

    # Every winner had 1 to 4 hidden layers (the 8-budget frontier's too), and the k-sweep's loss rises beyond 4.
    max_depth: int = 4
    profiles: tuple[str, ...] = PROFILES
    taper: tuple[float, float] = (0.1, 1.0)
    free_width: tuple[float, float] = (0.1, 1.0)
    weight_decay: tuple[float, float] = (1e-6, 1e-1)  # wide enough for AdamW's decoupled decay
    allow_zero_weight_decay: bool = True
    dropout: tuple[float, float] = (0.0, 0.3)
    # Pixels dropped before the first layer, (0, 0) for none. Every winner at 100,000 and 266,610 that could
    # took 0.26 to 0.29, and bench/ablation.py measured 0.2 at -0.14 and -0.16 points of test error (3 of 3 seeds).
    input_dropout: tuple[float, float] = (0.0, 0.3)
    # Every winner's learning rate was between 5.7e-4 and 1.4e-3.
    lr: tuple[float, float] = (3e-4, 3e-3)
    # SGD was in none of the ten best trials of profiles-50k or profiles-100k, nor t636's winner.
    optimizers: tuple[str, ...] = ("adam", "adamw")
    # A constant learning rate won none of the three searches that offered it: every winner used cosine or one-cycle.
    schedules: tuple[str, ...] = ("cosine", "onecycle")
    # Every winner trained in batches of 64 or 128, in the searches that offered 256 and 512 too.
    batch_sizes: tuple[int, ...] = (64, 128)
    # tanh won none of the three searches that offered it; GELU won every search that offered it, and ReLU,
    # though it won none of the five that offered it, stays as the usual alternative to compare against.
    activations: tuple[str, ...] = ("relu", "gelu")

    def __post_init__(self) -> None:
        check_int("max_depth", self.max_depth, 1, MAX_DEPTH)
        check_choices("profiles", "profile", self.profiles, PROFILES)
        # Taper and relative widths are ratios of widths, so (0, 1] holds every shape.
        check_float_range("taper", self.taper, 0, 1, low_open=True)
        check_float_range("free_width", self.free_width, 0, 1, low_open=True)
        check_float_range("weight_decay", self.weight_decay, 0, None, low_open=True)  # sampled on a log scale
        check_float_range("lr", self.lr, 0, None, low_open=True)  # too large diverges: pruned, with its reason
        check_float_range("dropout", self.dropout, 0, 1, high_open=True)
        check_float_range("input_dropout", self.input_dropout, 0, 1, high_open=True)
        if not isinstance(self.allow_zero_weight_decay, bool):
            allowed = shown(self.allow_zero_weight_decay)
            raise UsageError(f"allow_zero_weight_decay must be true or false, got {allowed}")
        check_choices("optimizers", "optimizer", self.optimizers, OPTIMIZERS)
        check_choices("schedules", "schedule", self.schedules, SCHEDULES)
        check_choices("activations", "activation", self.activations, ACTIVATION_NAMES)
        check_ints("batch_sizes", self.batch_sizes, 1, MAX_BATCH_SIZE, "a searched batch size cannot be the full batch")


@dataclass(frozen=True)
class StudyConfig:
    """A profile-search study: what a TOML file in studies/ describes.

    `name` may be left empty while `search` merges its flags: it then names the study after its
    budget. Any other name must pass `check_study_name`."""

    name: str = "profiles-50k"
    budget: int = 50_000
    tolerance: float = 0.02
    trials: int = 40
    epochs: int = 30
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    dataset: str = "mnist"
    data_limit: int = 0
    storage: str = DEFAULT_STORAGE
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    warm_start: tuple[str, ...] = ()  # stored search studies whose best trials this one tries first
    warm_start_top: int = DEFAULT_WARM_START_TOP
    space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        if self.name != "":
            check_study_name(self.name)
        check_int("budget", self.budget, MIN_BUDGET, MAX_BUDGET, BUDGET_ADVICE)
        check_float("tolerance", self.tolerance, 0, MAX_TOLERANCE, low_open=True)
        check_int("trials", self.trials, 1, MAX_TRIALS)
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_run_settings(self.dataset, self.data_limit, self.heartbeat_seconds, self.grace_seconds)
        if not isinstance(self.warm_start, tuple):
            raise UsageError(f"warm_start must be a list of study names, got {shown(self.warm_start)}")
        for source in self.warm_start:
            check_study_name(source)
        check_int("warm_start_top", self.warm_start_top, 1, MAX_TRIALS)
        if not isinstance(self.storage, str):
            raise UsageError(f"storage must be a URL, got {shown(self.storage)}")
        if not isinstance(self.space, SearchSpace):
            raise UsageError(f"space must be a table of search ranges, got {shown(self.space)}")


def check_data_settings(dataset: str | None, data_limit: int | None) -> None:
    """The data a command trains on; None: not given, the default."""
    if dataset is not None:
        check_choice("dataset", dataset, DATASET_NAMES)
    if data_limit is not None:
        check_int("data_limit", data_limit, 0, MAX_DATA_LIMIT, "0 uses every sample")


def check_run_settings(dataset: str, data_limit: int, heartbeat_seconds: int, grace_seconds: int) -> None:
    """The settings every study kind (search and grid) shares: the data and the heartbeat timing."""
    check_data_settings(dataset, data_limit)
    check_int("heartbeat_seconds", heartbeat_seconds, 1, MAX_HEARTBEAT_SECONDS)
    check_int("grace_seconds", grace_seconds, 1, MAX_GRACE_SECONDS)
    if grace_seconds <= heartbeat_seconds:
        raise UsageError(
            f"grace_seconds must be larger than heartbeat_seconds, got {grace_seconds} and {heartbeat_seconds}; "
            "a live worker must get at least one heartbeat in before its trial counts as stale"
        )


def check_study_name(name: str) -> None:
    """Refuse a study name that cannot be stored, printed on one line or pasted into a command.

    Storages take any string, but the name also appears in one-line messages, in the resume command
    a message prints, and in folder and file names derived from it. Any other printable name
    (spaces, quotes, semicolons, letters of any script) is allowed: it is quoted wherever it is
    printed, and file names are derived from it safely elsewhere."""
    if not isinstance(name, str):
        raise UsageError(f"study name must be text, got {shown(name)}; {STUDY_NAME_EXAMPLE}")
    if not name.strip():
        raise UsageError(f"study name must not be empty, got {name!r}; {STUDY_NAME_EXAMPLE}")
    if len(name) > MAX_STUDY_NAME_LENGTH:
        raise UsageError(
            f"study name must be at most {MAX_STUDY_NAME_LENGTH} characters, got {len(name):,} "
            f"({shown(name)}); choose a shorter one"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"study name must be valid UTF-8, got {name!a} (bytes of another encoding); "
            "retype it in a UTF-8 terminal or choose an ASCII name"
        ) from None
    invisible = next((char for char in name if not char.isprintable()), None)
    if invisible is not None:
        raise UsageError(
            f"study name must not contain control or invisible characters, got {name!r} "
            f"(with {invisible!a}); {STUDY_NAME_EXAMPLE}"
        )
    if name in (".", ".."):
        raise UsageError(f"study name must not be {name!r}, which names a folder; {STUDY_NAME_EXAMPLE}")
    if name == "--":  # `--study=--` is read as the flag without a value: no command line could name it
        raise UsageError(f"study name must not be {name!r}, which no command line can give; {STUDY_NAME_EXAMPLE}")
    if "/" in name or "\\" in name:
        raise UsageError(f"study name must not contain / or \\, got {name!r}; use - or _ instead")


def _coerce(cls: type, raw: object, where: str) -> Any:
    """Build a dataclass from TOML values, checking names and types so typos fail loudly."""
    where = printable(where)
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a table of settings, got {shown(raw)}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        listed = ", ".join(key if str(key).isidentifier() else shown(key) for key in sorted(unknown, key=str))
        raise UsageError(f"{where}: unknown key(s) {listed}; known keys: {', '.join(sorted(known))}")
    values = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [{key}] must be a table, got {shown(value)}")
            values[key] = _coerce(hint, value, f"{where} [{key}]")
            continue
        values[key] = to_value(value, hint, f"{where}: {key}")
    return cls(**values)


def field_type(cls: type, path: str) -> Any:
    """The declared type of a config field by dotted path (`space.max_depth`, `train.lr`)."""
    head, _, rest = path.partition(".")
    hint = get_type_hints(cls)[head]
    return field_type(hint, rest) if rest else hint


def to_value(value: Any, hint: Any, where: str) -> Any:
    """One TOML value (or an API keyword's) as the field's declared type: `tuple[X, ...]` takes any number
    of items, `tuple[X, Y]` exactly two; a float must be finite; a bool is never a number."""
    if get_origin(hint) is tuple:
        items = get_args(hint)
        if not isinstance(value, list | tuple):
            raise UsageError(f"{where} must be a list, got {shown(value)}")
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        elif len(value) != len(items):
            raise UsageError(f"{where} must be a list of exactly {len(items)} values, got {shown(value)}")
        return tuple(to_value(item, item_hint, where) for item, item_hint in zip(value, items, strict=True))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not is_finite(value):
            raise UsageError(f"{where} must be a finite number, got {shown(value)}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise UsageError(f"{where} must be of type {getattr(hint, '__name__', hint)}, got {shown(value)}")


PRESETS_PACKAGE = "search.presets"  # the study files of studies/, shipped in the wheel under this name


def preset_folder() -> Path | None:
    """Where the shipped study files are: the installed package, else studies/ of this checkout.

    An editable install maps the package onto studies/ in a way importlib cannot find (studies/ has
    no __init__.py), so a checkout falls back to the folder itself."""
    spec = importlib.util.find_spec(PRESETS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    checkout = Path(__file__).resolve().parents[2] / "studies"
    return checkout if checkout.is_dir() else None


def presets() -> dict[str, Path]:
    """The shipped study files by name (profiles-50k, ksweep, ...)."""
    folder = preset_folder()
    return {path.stem: path for path in sorted(folder.glob("*.toml"))} if folder else {}


def study_file(name_or_path: str | Path) -> Path:
    """A study file given by path (as today) or by the name of a shipped preset, from any folder.

    An existing path wins; a name is only ever looked up among the presets, never joined to a path."""
    path = Path(name_or_path)
    if path.exists() or path.is_symlink():
        return path
    return presets().get(str(name_or_path).removesuffix(".toml"), path)


def load_toml(path: str | Path) -> dict[str, Any]:
    """A study file's tables (by path or preset name), or one UsageError line for every way it can be unreadable."""
    where = f"study file {printable(str(path))}"
    path = study_file(path)
    try:
        status = Path(path).stat()
        if stat.S_ISDIR(status.st_mode):
            raise UsageError(f"{where} is a folder; give a .toml file, e.g. studies/profiles-50k.toml")
        if not stat.S_ISREG(status.st_mode):
            raise UsageError(f"{where} is not a regular file; give a .toml file, e.g. studies/profiles-50k.toml")
        with open(path, "rb") as handle:
            data = handle.read(MAX_STUDY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(
            f"{where} not found; give the path of a .toml file or a preset: {', '.join(presets()) or 'none installed'}"
        ) from None
    except OSError as error:
        raise UsageError(f"cannot read {where}: {error.strerror or error}") from None
    if len(data) > MAX_STUDY_FILE_BYTES:
        raise UsageError(f"{where} is larger than {MAX_STUDY_FILE_BYTES:,} bytes; is it really a study file?")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UsageError(f"{where} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{where} is not valid TOML: {printable(str(error))}") from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise UsageError(f"{where} holds a number too long to read; numbers there have a few digits") from None
    except RecursionError:
        raise UsageError(f"{where} nests lists or tables too deeply to read; is it really a study file?") from None


def study_from_dict(raw: dict[str, Any], where: str = "study") -> StudyConfig:
    config = _coerce(StudyConfig, raw, where)
    check_study_name(config.name)  # a file or stored study may not leave the name empty
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def replace(config: Any, **changes: Any) -> Any:
    """dataclasses.replace that skips None, so unset CLI flags keep the file's values."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
