"""The one record of a trial and of a study: the attributes archsearch stores in Optuna, typed.

Objectives write a trial's attributes through `write_trial`, commands write a study's through
`write_study`, and everything else reads them back with `TrialRecord.of` and `StudyRecord.of`. The
defaults for studies made by older versions, which lack a field, live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from models.catalog import TRAINING_IMAGES, VALIDATION_SIZE
from models.profiles import UNIFORM

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
        for name in ("widths", "epoch_seconds", "val_accuracy_curve"):
            if name in values:
                values[name] = tuple(values[name])
        if "weight_decay" not in values:  # recorded at the top level since profiles searched it
            values["weight_decay"] = values.get("train_config", {}).get("weight_decay")
        return cls(**values)

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
        return cls(**{name: attrs[name] for name in STUDY_FIELDS if name in attrs})

    @property
    def ours(self) -> bool:
        return self.kind in ("search", "grid")

    @property
    def settings(self) -> dict[str, Any]:
        return self.config or {}


TRIAL_FIELDS = tuple(f.name for f in fields(TrialRecord))
STUDY_FIELDS = tuple(f.name for f in fields(StudyRecord))


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
