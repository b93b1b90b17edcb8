"""The one record of a trial and of a study: the attributes archsearch stores in Optuna, typed.

Objectives write a trial's attributes through `write_trial`, commands write a study's through
`write_study`, and everything else reads them back with `TrialRecord.of` and `StudyRecord.of`. The
defaults for studies made by older versions, which lack a field, live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

import optuna
from optuna.trial import FrozenTrial

from models.catalog import TRAINING_IMAGES, VALIDATION_SIZE
from models.profiles import UNIFORM
from search.checks import shown
from search.errors import UsageError, printable

DEFAULT_PROFILE = UNIFORM  # grid trials, and search trials from before the profile was recorded
SURPLUS = "surplus"  # how a fail reason starts for a trial failed unrun by the exactly-N guard


@dataclass(frozen=True)
class TrialRecord:
    """What one trial stores about itself (Optuna user attributes); None where it was not recorded."""

    profile: str = DEFAULT_PROFILE
    widths: tuple[int, ...] = ()
    params: int | None = None
    seed: int | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    train_images: int | None = None  # the images the model trained on, and was selected on (--data-limit
    validation_images: int | None = None  # shrinks both)
    torch_version: str | None = None
    device: str | None = None
    epoch_seconds: tuple[float, ...] = ()
    val_accuracy_curve: tuple[float, ...] = ()
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    weight_decay: float | None = None
    budget: int | None = None  # grid trials: their point's budget, depth and uniform width
    depth: int | None = None
    width: int | None = None
    pruned_reason: str | None = None
    fail_reason: str | None = None
    pack_size: int | None = None  # trained with --pack: the size of the pack it joined (1: alone)
    worker: dict[str, Any] | None = None  # host, pid and start time of the process that ran it
    warm_start: dict[str, Any] | None = None  # queued by a warm start: {"study": source study, "trial": its number}

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        values = {name: attrs[name] for name in TRIAL_FIELDS if name in attrs}
        if "weight_decay" not in values and isinstance(values.get("train_config"), dict):
            values["weight_decay"] = values["train_config"].get("weight_decay")  # at the top level since searched
        record = _checked(cls, values, f"trial {trial.number}")
        lists = {name: tuple(values[name]) for name in LIST_FIELDS if name in values}  # stored as JSON lists
        return dataclasses.replace(record, **lists) if lists else record

    @property
    def is_surplus(self) -> bool:
        return (self.fail_reason or "").startswith(SURPLUS)

    @property
    def reason(self) -> str:
        """Why a trial did not complete, as a user reads it."""
        return self.pruned_reason or self.fail_reason or "failed"

    @property
    def warm_source(self) -> str | None:
        """Where a warm-started trial's parameters came from, as `STUDY#TRIAL`; None for a sampled trial."""
        if not self.warm_start:
            return None
        return f"{self.warm_start.get('study')}#{self.warm_start.get('trial')}"

    @property
    def dropout(self) -> float:
        return self.train_config.get("dropout", 0.0)  # trained without dropout before it was searched

    @property
    def input_dropout(self) -> float:
        return self.train_config.get("input_dropout", 0.0)


@dataclass(frozen=True)
class StudyRecord:
    """What a study stores about itself: its kind (search or grid), settings and companions."""

    kind: str | None = None  # None: not made by archsearch, or half-made (see study.lifecycle)
    config: dict[str, Any] | None = None
    artifacts: str | None = None  # folder of the saved models
    baseline: dict[str, Any] | None = None  # grid studies: the linear model on the same data
    init_study: dict[str, Any] | None = None  # the initialization study, where one was kept
    frontier: str | None = None  # search studies of a frontier: its name (one study per budget)
    retrained: dict[str, Any] | None = None  # the winner retrained on all images, one run per seed
    warm_start: dict[str, Any] | None = None  # set once its warm start is queued: sources, queued, dropped

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        attrs = study.user_attrs
        values = {name: attrs[name] for name in STUDY_FIELDS if name in attrs}
        return _checked(cls, values, f"study {study.study_name!r}")

    @property
    def ours(self) -> bool:
        return self.kind in ("search", "grid")

    @property
    def settings(self) -> dict[str, Any]:
        return self.config or {}


TRIAL_FIELDS = tuple(f.name for f in fields(TrialRecord))
STUDY_FIELDS = tuple(f.name for f in fields(StudyRecord))
FIELD_TYPES = {TrialRecord: get_type_hints(TrialRecord), StudyRecord: get_type_hints(StudyRecord)}
LIST_FIELDS = tuple(name for name, hint in FIELD_TYPES[TrialRecord].items() if get_origin(hint) is tuple)


class DamagedRecord(UsageError):
    """A stored attribute that is not of its field's type (edited by hand, or written by another tool)."""


def _checked(cls: type, values: dict[str, Any], whose: str) -> Any:
    """The record, once every stored value is of its field's type: else one line naming the field, where a
    damaged value would otherwise fail deep inside whatever reads it."""
    hints = FIELD_TYPES[cls]
    for name, value in values.items():
        if not conforms(value, hints[name]):
            raise DamagedRecord(
                f"the stored record of {whose} is damaged: its field {name!r} holds {shown(value)}, not "
                f"{described(hints[name])}; {REPAIR}"
            )
    for name, check in _CONTENTS.get(cls, {}).items():
        if values.get(name):
            try:
                check(values[name], values)
            except (UsageError, TypeError) as error:  # TypeError: a key that is no setting
                raise DamagedRecord(
                    f"the stored record of {whose} is damaged: its field {name!r} does not hold valid settings "
                    f"({printable(str(error))}); {REPAIR}"
                ) from None
    return cls(**values)


REPAIR = "restore the study from a copy, or repair that attribute"


def _train_config(value: dict[str, Any], values: dict[str, Any]) -> None:
    from search.engine.config import TrainConfig

    TrainConfig(**value)


def _study_config(value: dict[str, Any], values: dict[str, Any]) -> None:
    """A study's settings, as its kind's configuration reads them back (resume, worker, best --retrain)."""
    if values.get("kind") == "search":
        from search.study.config import study_from_dict

        study_from_dict(value, "settings")
    elif values.get("kind") == "grid":
        from search.study.grid import config_from_dict

        config_from_dict(value, "settings")


def _table(schema: dict[str, Any], required: tuple[str, ...], closed: bool = False):
    """A check of a stored table: its `required` keys present, each key of `schema` of its type, and (`closed`)
    no other key."""

    def check(value: dict[str, Any], values: dict[str, Any]) -> None:
        missing = [key for key in required if key not in value]
        if missing:
            raise UsageError(f"{', '.join(missing)} missing")
        unknown = sorted(set(value) - set(schema)) if closed else []
        if unknown:
            raise UsageError(f"unknown key {', '.join(map(repr, unknown))}")
        for key, hint in schema.items():
            if key in value and not conforms(value[key], hint):
                raise UsageError(f"{key} holds {shown(value[key])}, not {described(hint)}")

    return check


SCORES = {"train_loss": float, "test_loss": float, "test_accuracy": float}
# The linear model a grid study keeps (search/study/grid.py reference_baseline), and a frontier winner's
# retraining (search/results/tables.py Retrained, with its trial's number).
_BASELINE = _table({**SCORES, "train_accuracy": float, "params": int, "train_images": int, "train_config": dict},
                   (*SCORES, "train_accuracy"))  # fmt: skip
_RETRAINED = _table(
    {**SCORES, "trial": int, "trained_on": str, "seeds": tuple[int, ...], "test_accuracies": tuple[float, ...]},
    (*SCORES, "trained_on"),
    closed=True,
)

# Fields whose contents other code reads key by key: checked as those settings and tables are.
_CONTENTS = {
    TrialRecord: {"train_config": _train_config},
    StudyRecord: {"config": _study_config, "baseline": _BASELINE, "retrained": _RETRAINED},
}


def conforms(value: Any, hint: Any) -> bool:
    """Whether a stored value is of a record field's type (as JSON keeps it: a tuple as a list, a float as an int)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(conforms(value, option) for option in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, list | tuple) and all(conforms(item, get_args(hint)[0]) for item in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(key, str) for key in value)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def described(hint: Any) -> str:
    """A field's type as a message says it."""
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(described(option) for option in get_args(hint))
    if get_origin(hint) is tuple:
        return f"a list of {described(get_args(hint)[0]).removeprefix('a ')}s"
    names = {int: "a whole number", float: "a number", str: "a text", type(None): "nothing", bool: "true or false"}
    return names.get(hint, "a table")


def split_sizes(record: TrialRecord, settings: dict[str, Any]) -> tuple[int, int]:
    """(training, validation) images of the trial's model; from the study's data limit where the trial
    predates recording them (the split then was the one `search.engine.data` makes today)."""
    if record.train_images is not None and record.validation_images is not None:
        return record.train_images, record.validation_images
    limit = settings.get("data_limit") or 0
    train, validation = TRAINING_IMAGES - VALIDATION_SIZE, VALIDATION_SIZE
    return (min(limit, train), min(limit, validation)) if limit else (train, validation)


def write_trial(trial: optuna.Trial, **values: Any) -> None:
    """Store fields of the trial's record; a name that is not a field is a bug, caught here."""
    _write(trial.set_user_attr, TRIAL_FIELDS, values)


def trial_attrs(**values: Any) -> dict[str, Any]:
    """Fields of a trial's record as the user attributes of a trial not yet created (`enqueue_trial`)."""
    attrs: dict[str, Any] = {}
    _write(attrs.__setitem__, TRIAL_FIELDS, values)
    return attrs


def write_study(study: optuna.Study, **values: Any) -> None:
    """Store fields of the study's record (kind, config, artifacts, baseline, init_study, frontier, retrained,
    warm_start)."""
    _write(study.set_user_attr, STUDY_FIELDS, values)


def _write(setter, known: tuple[str, ...], values: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"not a field of the record: {', '.join(unknown)}")
    for name, value in values.items():
        setter(name, list(value) if isinstance(value, tuple) else value)


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
