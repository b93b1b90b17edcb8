"""A study's life: created all or nothing with its kind and settings, resumed only as the same
experiment, and its sampler, pruner and best trial.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import UsageError, argument
from search.study.config import WARM_START_SETTINGS
from search.study.record import StudyRecord, write_study
from search.study.storage import (
    SCHEMA_ATTEMPTS,
    STORAGE_FAILURES,
    check_storage,
    failed_write,
    open_storage,
    public_url,
)


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


# A frontier's studies are NAME@BUDGET, one per budget (search/api/frontier.py).
MEMBER_SEPARATOR = "@"


def member_name(frontier: str, budget: int) -> str:
    """The study of one budget of a frontier."""
    return f"{frontier}{MEMBER_SEPARATOR}{budget}"


def frontier_studies(storage, frontier: str) -> list[optuna.Study]:
    """The search studies of the frontier `frontier`, in name order: named as `member_name` names them and
    marked with that frontier (a study the user named NAME@SOMETHING by hand is not one of them)."""
    prefix = f"{frontier}{MEMBER_SEPARATOR}"
    studies = (load_study(storage, name) for name in study_names(storage) if name.startswith(prefix))
    return [study for study in studies if StudyRecord.of(study).frontier == frontier]


def load_study(storage, name: str, sampler=None, pruner=None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        known = ", ".join(study_names(storage)) or "none"
        raise UsageError(f"no study named {name!r} in this storage (studies there: {known})") from None


def check_settings(storage, name: str, kind: str, config: dict) -> optuna.Study | None:
    """The existing study of this name if it is the same experiment (None if there is none); else one line.

    Commands call it before loading torch and the data, so a mistaken resume is refused at once.
    A half-made study (its creator was killed between creating it and storing its settings) counts
    as none: `create_study` completes it."""
    if name not in study_names(storage):
        return None
    study = load_study(storage, name)
    if _half_made(study):
        _check_kind(study, kind)
        return None
    _check_kind(study, kind)
    changed = _differences(StudyRecord.of(study).settings, config)
    if changed:
        raise UsageError(
            f"study {name!r} exists with other settings ({changed}); use another {argument('study')} to start anew"
        )
    return study


def check_new_run(url: str, name: str, kind: str, config: dict) -> None:
    """All that a run creating or resuming a study can learn about its storage without writing to it:
    the URL, the path, the server, and an existing study's kind and settings. The run then loads its
    data, and only then opens the storage for writing, which may create the database."""
    check_storage(url)
    try:
        storage = open_storage(url, read_only=True)
    except UsageError:
        return  # no database or no Optuna tables yet: nothing stored to compare with
    check_settings(storage, name, kind, config)


def _check_kind(study: optuna.Study, kind: str) -> None:
    """Refuse a study of another kind, or one archsearch did not make (no kind, yet trials).

    The kind is read once: a run creating the same study may store it between two reads."""
    stored_kind = StudyRecord.of(study).kind
    if stored_kind is None and study.get_trials(deepcopy=False):
        raise UsageError(f"study {study.study_name!r} was not made by archsearch; choose another {argument('study')}")
    if stored_kind not in (None, kind):
        raise UsageError(
            f"study {study.study_name!r} is a {stored_kind} study, not a {kind} study; "
            f"choose another {argument('study')}"
        )


def _half_made(study: optuna.Study) -> bool:
    """Created, but killed before its kind and settings were stored: no settings and no trials."""
    record = StudyRecord.of(study)
    return (record.kind is None or record.config is None) and not study.get_trials(deepcopy=False)


# Settings added after studies were first stored, with the value that does what those studies did: a
# study stored without one resumes as the same experiment when it is asked with that value.
ADDED_SETTINGS = {"space": {"input_dropout": [0.0, 0.0]}}


def with_added_settings(stored: dict, added: dict = ADDED_SETTINGS) -> dict:
    """`stored`, with the settings it predates filled in from `added` (nested dicts merged)."""
    filled = dict(stored)
    for key, value in added.items():
        if isinstance(value, dict):
            if isinstance(filled.get(key), dict):  # a grid study has no search space to fill
                filled[key] = with_added_settings(filled[key], value)
        elif key not in filled:
            filled[key] = value
    return filled


def _differences(stored: dict, config: dict) -> str:
    """The settings that make two configurations different experiments ('' if none)."""
    wanted, stored = with_added_settings(stored_form(config)), with_added_settings(stored)
    same_experiment = ("trials", "storage", *WARM_START_SETTINGS)
    changed = sorted(k for k in wanted if k not in same_experiment and stored.get(k) != wanted[k])
    return "; ".join(f"{k}: stored {stored.get(k)!r}, asked {wanted[k]!r}" for k in changed)


def stored_form(config: dict) -> dict:
    """A configuration as a study stores it: JSON values, and the storage URL without its password."""
    stored = _jsonable(config)
    if isinstance(stored.get("storage"), str):
        stored["storage"] = public_url(stored["storage"])
    return stored


def create_study(storage, name: str, kind: str, config: dict, sampler, pruner) -> optuna.Study:
    """Create, or resume after checking that the stored configuration is the same experiment.

    All or nothing as the user sees it: Optuna creates a study and its attributes in separate
    writes, so a run killed in between leaves a study without settings, which the next run of
    the same kind completes. Two runs that create one study at once both end up working on it.
    A storage that fails meanwhile (a full disk) is one line, and a database file this run began
    and that holds no study yet is removed."""
    try:
        return _create_or_resume(storage, name, kind, config, sampler, pruner)
    except STORAGE_FAILURES as error:
        raise failed_write(storage, error) from None


def _create_or_resume(storage, name: str, kind: str, config: dict, sampler, pruner) -> optuna.Study:
    stored = stored_form(config)
    for _attempt in range(SCHEMA_ATTEMPTS):
        if name in study_names(storage):
            study = load_study(storage, name, sampler, pruner)
            if not _half_made(study):
                check_settings(storage, name, kind, config)
                if StudyRecord.of(study).config != stored:  # a new --trials, or a password to drop; else no write
                    write_study(study, config=stored)
                return study
        else:
            try:
                study = optuna.create_study(
                    study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="minimize"
                )
            except optuna.exceptions.DuplicatedStudyError:
                continue  # another run created it a moment ago: resume it like any existing study
        return _claim(storage, study, kind, stored)
    raise UsageError(f"study {name!r} keeps changing while it is being created; try again")


def _claim(storage, study: optuna.Study, kind: str, stored: dict) -> optuna.Study:
    """Store kind and settings, then read them back: a run creating the same study at once may
    have written its own, and then only the one that matches goes on."""
    _check_kind(study, kind)
    write_study(study, kind=kind, config=stored)
    again = StudyRecord.of(optuna.load_study(study_name=study.study_name, storage=storage))
    changed = _differences(again.settings, stored) if again.kind == kind else "kind"
    if changed:
        raise UsageError(
            f"study {study.study_name!r} was created at the same moment by another run with other settings "
            f"({changed}); use another {argument('study')}"
        )
    return study


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def make_sampler(name: str, seed: int, worker_index: int = 0, grid: dict | None = None) -> optuna.samplers.BaseSampler:
    """Each worker gets its own seed, so parallel workers do not sample the same points."""
    worker_seed = (seed + 7919 * worker_index) % 2**32  # numpy's seeds end at 2**32 - 1
    if grid is not None:
        return optuna.samplers.GridSampler(grid, seed=worker_seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=worker_seed)
    return optuna.samplers.TPESampler(seed=worker_seed, multivariate=True, constant_liar=True)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name == "median":
        # Learning-rate schedules rank trials differently early and late (one-cycle warms up over its first
        # 30%; a cosine drops late), so trials are judged against the median from the middle epoch on.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(2, epochs // 2))
    return optuna.pruners.NopPruner()


def best_trial(study: optuna.Study) -> FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not complete:
        raise UsageError(f"study {study.study_name!r} has no completed trial yet; run or resume it first")
    return min(complete, key=lambda t: t.value)


def stored_settings(url: str, name: str, kind: str) -> dict | None:
    """A study's stored settings if it exists and is of this kind, read without writing anything."""
    try:
        storage = open_storage(url, read_only=True)
    except UsageError:
        return None  # no database yet, or one that the real open reports properly
    if name not in study_names(storage):
        return None
    study = load_study(storage, name)
    record = StudyRecord.of(study)
    return record.config if record.kind == kind else None
