"""Typed configuration with the one set of defaults; TOML study files mirror these fields."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from models.catalog import ACTIVATION_NAMES
from models.profiles import PROFILES
from search.errors import UsageError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
DEFAULT_STORAGE = "sqlite:///studies/archsearch.db"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `batch_size` 0 means full batch."""

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
        check_positive("epochs", self.epochs)
        check_range("batch_size", self.batch_size, 0, None)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("activation", self.activation, ACTIVATION_NAMES)
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0, 1)
        check_range("weight_decay", self.weight_decay, 0, None)
        check_dropout("dropout", self.dropout)
        check_choice("device", self.device, ("auto", "cpu", "cuda"))


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
        check_positive("max_depth", self.max_depth)
        if not self.profiles:
            raise UsageError("profiles is empty; choose one or more of " + ", ".join(PROFILES))
        for profile in self.profiles:
            check_choice("profile", profile, PROFILES)
        for name in ("taper", "free_width", "weight_decay", "lr"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise UsageError(f"{name} range must satisfy 0 < low <= high, got [{low}, {high}]")
        check_dropout("dropout range low", self.dropout[0])
        check_dropout("dropout range high", self.dropout[1])
        if self.dropout[0] > self.dropout[1]:
            raise UsageError(f"dropout range must satisfy low <= high, got {list(self.dropout)}")
        if self.taper[1] > 1:
            raise UsageError(f"taper range must lie in (0, 1], got {list(self.taper)}")
        for value in self.optimizers:
            check_choice("optimizer", value, OPTIMIZERS)
        for value in self.schedules:
            check_choice("schedule", value, SCHEDULES)
        for value in self.activations:
            check_choice("activation", value, ACTIVATION_NAMES)
        for value in self.batch_sizes:
            check_range("batch_size", value, 0, None)


@dataclass(frozen=True)
class StudyConfig:
    """A profile-search study: what a TOML file in studies/ describes."""

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
        check_range("budget", self.budget, 805, None)
        if not 0 < self.tolerance <= 0.5:
            raise UsageError(f"tolerance must be in (0, 0.5], got {self.tolerance}")
        check_positive("trials", self.trials)
        check_positive("epochs", self.epochs)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_run_settings(self.data_limit, self.heartbeat_seconds, self.grace_seconds)


def check_run_settings(data_limit: int, heartbeat_seconds: int, grace_seconds: int) -> None:
    """The settings every study kind (search and grid) shares: data subset and heartbeat timing."""
    check_range("data_limit", data_limit, 0, None)
    check_positive("heartbeat_seconds", heartbeat_seconds)
    if grace_seconds <= heartbeat_seconds:
        raise UsageError("grace_seconds must be larger than heartbeat_seconds")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"{name} must be positive, got {value}")


def check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise UsageError(f"{name} must be {bounds}, got {value}")


def check_dropout(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise UsageError(f"{name} must be in [0, 1), got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")


# The original study's linear baseline: full-batch SGD at lr 0.2 for 150 epochs.
BASELINE_TRAIN = TrainConfig(epochs=150, batch_size=0, optimizer="sgd", lr=0.2)


def _coerce(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Build a dataclass from TOML values, checking names and types so typos fail loudly."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known keys: {', '.join(sorted(known))}"
        )
    values = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [{key}] must be a table")
            values[key] = _coerce(hint, value, f"{where} [{key}]")
            continue
        values[key] = _convert(value, hint, f"{where}: {key}")
    return cls(**values)


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UsageError(f"{where} must be a list, got {value!r}")
        element = get_args(hint)[0]
        return tuple(_convert(v, element, where) for v in value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise UsageError(f"{where} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")


def load_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"study file {path} not found; see studies/ for examples") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"study file {path} is not valid TOML: {error}") from None
    except OSError as error:
        raise UsageError(f"cannot read study file {path}: {error.strerror}") from None


def study_from_dict(raw: dict[str, Any], where: str = "study") -> StudyConfig:
    return _coerce(StudyConfig, raw, where)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def replace(config: Any, **changes: Any) -> Any:
    """dataclasses.replace that skips None, so unset CLI flags keep the file's values."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
