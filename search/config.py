"""Typed configuration with the one set of defaults; TOML study files mirror these fields.

Every field is checked where its dataclass is built, so a study file, a stored study and the flags
all meet the same limits, and bad input is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from models.budget import MAX_BUDGET, MAX_DEPTH, MIN_BUDGET
from models.catalog import ACTIVATION_NAMES, DATASET_FOLDERS
from models.profiles import PROFILES
from search.errors import UsageError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
DEVICES = ("auto", "cpu", "cuda")
DATASET_NAMES = tuple(DATASET_FOLDERS)
DEFAULT_STORAGE = "sqlite:///studies/archsearch.db"

# Upper limits of every setting, so that a typo of a few digits is refused in one line instead of
# running for years or allocating far more memory than the machine has.
MAX_EPOCHS = 10_000  # the studies train 10 to 150 epochs
MAX_TRIALS = 1_000_000  # finished trials of one study, or points of one grid
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds from 0 to 2**32 - 1
MAX_SEED_COUNT = 1_000  # seeds per grid shape, or per initialization of the baseline's init study
MAX_BATCH_SIZE = 1_000_000  # above any split (MNIST's has 60,000 images); 0 asks for the full batch
MAX_DATA_LIMIT = 2**31 - 1  # an int32 index; the datasets hold 70,000 images anyway
MAX_TOLERANCE = 0.5  # relative distance to the budget: beyond it the budget means nothing
MAX_HEARTBEAT_SECONDS = 3_600  # a trial silent for an hour is surely gone
MAX_GRACE_SECONDS = 86_400  # a day: longer would leave a dead worker's trial blocking its point
MAX_STUDY_NAME_LENGTH = 200  # room for any sensible name, and short enough for file names derived from it
MAX_STUDY_FILE_BYTES = 1_000_000  # a study file is about 1 KB; this refuses /dev/zero and stray data files
SHOWN_LENGTH = 80  # how much of a bad value an error message echoes

STUDY_NAME_EXAMPLE = "choose another, e.g. profiles-50k"
BUDGET_ADVICE = (
    f"{MIN_BUDGET} parameters is the smallest MLP (one hidden layer of width 1), "
    f"and {MAX_BUDGET:,} is far beyond what an MNIST study needs"
)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `batch_size` 0 means full batch.

    `lr` has no upper limit here: a learning rate that diverges is a result the trainer reports."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    dropout: float = 0.0
    schedule: str = "constant"
    activation: str = "tanh"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 0, MAX_BATCH_SIZE, "0 means the full batch")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("activation", self.activation, ACTIVATION_NAMES)
        check_float("lr", self.lr, 0, None, low_open=True)
        check_float("momentum", self.momentum, 0, 1)
        check_float("weight_decay", self.weight_decay, 0, None)
        check_float("dropout", self.dropout, 0, 1, high_open=True)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_choice("device", self.device, DEVICES)


@dataclass(frozen=True)
class SearchSpace:
    """Ranges the profile search samples from; every `suggest_*` reads them (search/space.py)."""

    max_depth: int = 8
    profiles: tuple[str, ...] = PROFILES
    taper: tuple[float, float] = (0.1, 1.0)
    free_width: tuple[float, float] = (0.1, 1.0)
    weight_decay: tuple[float, float] = (1e-6, 1e-1)  # wide enough for AdamW's decoupled decay
    allow_zero_weight_decay: bool = True
    dropout: tuple[float, float] = (0.0, 0.3)
    lr: tuple[float, float] = (1e-4, 1e-2)
    optimizers: tuple[str, ...] = ("adam", "adamw", "sgd")
    schedules: tuple[str, ...] = SCHEDULES
    batch_sizes: tuple[int, ...] = (64, 128, 256, 512)
    activations: tuple[str, ...] = ACTIVATION_NAMES

    def __post_init__(self) -> None:
        check_int("max_depth", self.max_depth, 1, MAX_DEPTH)
        check_choices("profiles", "profile", self.profiles, PROFILES)
        # Taper and relative widths are ratios of widths, so (0, 1] holds every shape.
        check_float_range("taper", self.taper, 0, 1, low_open=True)
        check_float_range("free_width", self.free_width, 0, 1, low_open=True)
        check_float_range("weight_decay", self.weight_decay, 0, None, low_open=True)  # sampled on a log scale
        check_float_range("lr", self.lr, 0, None, low_open=True)  # too large diverges: pruned, with its reason
        check_float_range("dropout", self.dropout, 0, 1, high_open=True)
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
    heartbeat_seconds: int = 5
    grace_seconds: int = 20
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
        if not isinstance(self.storage, str):
            raise UsageError(f"storage must be a URL, got {shown(self.storage)}")
        if not isinstance(self.space, SearchSpace):
            raise UsageError(f"space must be a table of search ranges, got {shown(self.space)}")


def check_run_settings(dataset: str, data_limit: int, heartbeat_seconds: int, grace_seconds: int) -> None:
    """The settings every study kind (search and grid) shares: the data and the heartbeat timing."""
    check_choice("dataset", dataset, DATASET_NAMES)
    check_int("data_limit", data_limit, 0, MAX_DATA_LIMIT, "0 uses every sample")
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
    if "/" in name or "\\" in name:
        raise UsageError(f"study name must not contain / or \\, got {name!r}; use - or _ instead")


def check_int(name: str, value: object, low: int | None, high: int, advice: str = "") -> None:
    """A whole number in [low, high] (no lower limit if `low` is None); a bool is not one to a user."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be a whole number, got {shown(value)}")
    if (low is not None and value < low) or value > high:
        raise UsageError(f"{name} must be {int_bounds(low, high)}, got {shown(value)}{_then(advice)}")


def int_bounds(low: int | None, high: int) -> str:
    """How a message states an integer range: "positive and at most 10,000", "between 0 and 255"."""
    if low is None:
        return f"at most {high:,}"
    if low == 1:
        return f"positive and at most {high:,}"
    return f"between {low:,} and {high:,}"


def check_float(
    name: str,
    value: object,
    low: float,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    advice: str = "",
) -> None:
    """A finite number between `low` and `high` (None: no upper limit), each end included unless open."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name} must be a number, got {shown(value)}")
    if not _is_finite(value):
        raise UsageError(f"{name} must be a finite number, got {shown(value)}{_then(advice)}")
    above_low = value > low if low_open else value >= low
    below_high = high is None or (value < high if high_open else value <= high)
    if not (above_low and below_high):
        bounds = float_bounds(low, high, low_open=low_open, high_open=high_open)
        raise UsageError(f"{name} must be {bounds}, got {shown(value)}{_then(advice)}")


def float_bounds(low: float, high: float | None, *, low_open: bool = False, high_open: bool = False) -> str:
    """How a message states a real interval: "positive", "0 or more", "in (0, 0.5]"."""
    if high is None:
        if low == 0:
            return "positive" if low_open else "0 or more"
        return f"above {low:g}" if low_open else f"at least {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_float_range(
    name: str, pair: object, low: float, high: float | None, *, low_open: bool = False, high_open: bool = False
) -> None:
    """A search range [low, high]: two finite numbers within the limits, the first not above the second."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise UsageError(f"{name} range must be two numbers [low, high], got {shown(pair)}")
    for end, value in zip(("low", "high"), pair, strict=True):
        check_float(f"{name} range {end}", value, low, high, low_open=low_open, high_open=high_open)
    if pair[0] > pair[1]:
        raise UsageError(f"{name} range must satisfy low <= high, got {shown(list(pair))}; swap the two")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"unknown {name} {shown(value)}; choose from {', '.join(choices)}")


def check_choices(name: str, singular: str, values: object, choices: tuple[str, ...]) -> None:
    """A non-empty choice among `choices`, each at most once (a repeat would weigh it twice)."""
    if not isinstance(values, tuple) or not values:
        raise UsageError(f"{name} is empty; choose one or more of {', '.join(choices)}")
    for value in values:
        check_choice(singular, value, choices)
    check_distinct(name, values)


def check_ints(name: str, values: object, low: int | None, high: int, advice: str = "") -> None:
    """A non-empty tuple of distinct whole numbers, each in [low, high]."""
    if not isinstance(values, tuple) or not values:
        raise UsageError(f"{name} is empty; give at least one value")
    for value in values:
        check_int(f"every value of {name}", value, low, high, advice)
    check_distinct(name, values)


def check_distinct(name: str, values: tuple) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise UsageError(f"{name} lists a value twice: {shown(value)} in {shown(list(values))}; give each once")
        seen.add(value)


def shown(value: object) -> str:
    """A value as an error message echoes it: its repr, which escapes control characters and lone
    surrogates so that the message stays one printable line, cut short if long."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more than 4,300 digits, or absurdly nested lists
        return "a value too large to show"
    return text if len(text) <= SHOWN_LENGTH else f"{text[: SHOWN_LENGTH - 3]}..."


def printable(text: str) -> str:
    """`text` with each character that would break or garble a one-line message escaped (newline, NUL,
    lone surrogates); everything else, including letters of any script, as it is."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _then(advice: str) -> str:
    return f"; {advice}" if advice else ""


# The original study's linear baseline: full-batch SGD at lr 0.2 for 150 epochs.
BASELINE_TRAIN = TrainConfig(epochs=150, batch_size=0, optimizer="sgd", lr=0.2)


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
        values[key] = _convert(value, hint, f"{where}: {key}")
    return cls(**values)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """One TOML value as the field's declared type: `tuple[X, ...]` takes any number of items,
    `tuple[X, Y]` exactly two; a float must be finite; a bool is never a number."""
    if get_origin(hint) is tuple:
        items = get_args(hint)
        if not isinstance(value, list | tuple):
            raise UsageError(f"{where} must be a list, got {shown(value)}")
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        elif len(value) != len(items):
            raise UsageError(f"{where} must be a list of exactly {len(items)} values, got {shown(value)}")
        return tuple(_convert(item, item_hint, where) for item, item_hint in zip(value, items, strict=True))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not _is_finite(value):
            raise UsageError(f"{where} must be a finite number, got {shown(value)}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise UsageError(f"{where} must be of type {getattr(hint, '__name__', hint)}, got {shown(value)}")


def load_toml(path: str | Path) -> dict[str, Any]:
    """A study file's tables, or one UsageError line for every way it can be unreadable."""
    where = f"study file {printable(str(path))}"
    try:
        status = Path(path).stat()
        if stat.S_ISDIR(status.st_mode):
            raise UsageError(f"{where} is a folder; give a .toml file, e.g. studies/profiles-50k.toml")
        if not stat.S_ISREG(status.st_mode):
            raise UsageError(f"{where} is not a regular file; give a .toml file, e.g. studies/profiles-50k.toml")
        with open(path, "rb") as handle:
            data = handle.read(MAX_STUDY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{where} not found; see studies/ for examples") from None
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
