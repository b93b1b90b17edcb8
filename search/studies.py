"""Optuna glue: storages, study creation and loading, and the worker loop.

The loop stops at exactly N finished trials however many workers share the study: before a
trial runs it checks its rank among finished and running trials, and a surplus trial is failed
unrun. Trials of a killed worker go stale through the heartbeat and are retried.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from search.errors import UsageError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (*FINISHED, TrialState.RUNNING)
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_SECONDS = 120
SCHEMA_ATTEMPTS = 5
RACES = ("already exists", "UNIQUE constraint failed", "duplicate key value", "database is locked")

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class Surplus(Exception):
    """A trial asked for after the study already had its N finished or running trials."""


def describe(url: str) -> str:
    """The URL with any password hidden, for messages."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
    return None


def open_storage(url: str, heartbeat_seconds: int = 5, grace_seconds: int = 20, must_exist: bool = False):
    """Any Optuna storage URL, or `journal:PATH` for a journal file; errors become one line."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :])
        if must_exist and not path.is_file():
            raise UsageError(f"no study journal at {path}; check --storage")
        _check_folder(path)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UsageError(
            f"storage URL {url!r} does not parse; use sqlite:///studies/NAME.db, "
            "postgresql://USER:PASSWORD@HOST/DB or journal:PATH"
        ) from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if parsed.drivername.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_SECONDS}
        if path is not None:
            if must_exist and not path.is_file():
                raise UsageError(f"no study database at {path}; check --storage")
            _check_folder(path)
    elif parsed.drivername.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver installed with us is psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
    try:
        for attempt in range(1, SCHEMA_ATTEMPTS + 1):
            try:
                storage = RDBStorage(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_seconds,
                    grace_period=grace_seconds,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
                if path is not None:
                    # WAL lets readers (the dashboard, other workers) proceed while one worker writes.
                    with storage.engine.connect() as connection:
                        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                    _begin_immediate(storage.engine)
                break
            except sqlalchemy.exc.DBAPIError as error:
                # Processes that open a new database at once all create Optuna's tables (and SQLite's
                # WAL mode), and the slower ones trip over the first one's; opening again then works.
                if attempt == SCHEMA_ATTEMPTS or not any(text in str(error.orig) for text in RACES):
                    raise
                time.sleep(0.5 * attempt)
    except ImportError as error:  # optuna re-raises the driver's ModuleNotFoundError as a plain ImportError
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "for its driver"
        raise UsageError(f"storage {describe(url)} needs the Python package {missing}; pip install it") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(
            f"storage URL {describe(url)} names no database that Optuna can use ({parsed.drivername}); "
            "use sqlite:///studies/NAME.db, postgresql://USER:PASSWORD@HOST/DB or journal:PATH"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise UsageError(f"cannot use storage {describe(url)}: {reason}") from None
    return storage


def _begin_immediate(engine: sqlalchemy.engine.Engine) -> None:
    """Make every SQLite transaction take the write lock as it begins.

    pysqlite begins a transaction only at the first write, so the read before it (Optuna's "is this
    queued trial still WAITING?") is not part of it: two workers could both claim one queued trial, run
    it twice, and the slower one crash on "Cannot tell a COMPLETE trial". BEGIN IMMEDIATE makes such
    read-then-write steps take turns; the busy timeout makes a worker wait for its turn, not fail.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _let_sqlalchemy_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened so far lack the hooks


def _check_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create folder {path.parent}: {error.strerror}") from None


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage, name: str, sampler=None, pruner=None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        known = ", ".join(study_names(storage)) or "none"
        raise UsageError(f"no study named {name!r} in this storage (studies there: {known})") from None


def check_settings(storage, name: str, kind: str, config: dict) -> optuna.Study | None:
    """The existing study of this name if it is the same experiment (None if there is none); else one line.

    Commands call it before loading torch and the data, so a mistaken resume is refused at once."""
    if name not in study_names(storage):
        return None
    study = load_study(storage, name)
    stored_kind = study.user_attrs.get("kind")
    if stored_kind != kind:
        raise UsageError(f"study {name!r} is a {stored_kind} study, not a {kind} study; choose another --study")
    stored = study.user_attrs.get("config", {})
    changed = sorted(k for k in config if k not in ("trials", "storage") and stored.get(k) != _jsonable(config[k]))
    if changed:
        details = "; ".join(f"{k}: stored {stored.get(k)!r}, asked {_jsonable(config[k])!r}" for k in changed)
        raise UsageError(f"study {name!r} exists with other settings ({details}); use another --study to start anew")
    return study


def create_study(storage, name: str, kind: str, config: dict, sampler, pruner) -> optuna.Study:
    """Create, or resume after checking that the stored configuration is the same experiment."""
    if check_settings(storage, name, kind, config) is not None:
        study = load_study(storage, name, sampler, pruner)
        if study.user_attrs.get("config") != _jsonable(config):  # a new --trials or --storage; no write otherwise
            study.set_user_attr("config", _jsonable(config))
        return study
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="minimize")
    study.set_user_attr("kind", kind)
    study.set_user_attr("config", _jsonable(config))
    return study


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


@dataclass
class Counts:
    finished: int
    running: int
    waiting: int


def count_trials(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    return Counts(
        sum(t.state in FINISHED for t in trials),
        sum(t.state == TrialState.RUNNING for t in trials),
        sum(t.state == TrialState.WAITING for t in trials),
    )


def guard_surplus(objective: Callable[[optuna.Trial], float], target: int) -> Callable[[optuna.Trial], float]:
    """Fail a trial unrun when `target` earlier trials are already finished or running."""

    def guarded(trial: optuna.Trial) -> float:
        earlier = trial.study.get_trials(deepcopy=False, states=COUNTED)
        if sum(t.number < trial.number for t in earlier) >= target:
            trial.set_user_attr("fail_reason", f"surplus: {target} trials were already finished or running")
            raise Surplus()
        return objective(trial)

    return guarded


def run_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    poll_seconds: float = 1.0,
) -> None:
    """Run trials until the study holds `target` finished (complete or pruned) trials."""
    guarded = guard_surplus(objective, target)
    callbacks = [on_trial] if on_trial else []
    while True:
        fail_stale_trials(study)
        counts = count_trials(study)
        if counts.finished >= target:
            return
        if counts.finished + counts.running >= target and counts.waiting == 0:
            time.sleep(poll_seconds)
            continue
        study.optimize(guarded, n_trials=1, catch=(Surplus,), callbacks=callbacks)


def make_sampler(name: str, seed: int, worker_index: int = 0, grid: dict | None = None) -> optuna.samplers.BaseSampler:
    """Each worker gets its own seed, so parallel workers do not sample the same points."""
    worker_seed = seed + 7919 * worker_index
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


def default_artifacts(url: str) -> Path:
    """Model files live beside a SQLite or journal file, else under studies/artifacts."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX) :]).resolve().parent / "artifacts"
    path = sqlite_path(url)
    return (path.resolve().parent if path else Path("studies").resolve()) / "artifacts"


def best_trial(study: optuna.Study) -> FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not complete:
        raise UsageError(f"study {study.study_name!r} has no completed trial yet; run or resume it first")
    return min(complete, key=lambda t: t.value)


def stored_settings(url: str, name: str, kind: str) -> dict | None:
    """A study's stored settings if it exists and is of this kind, read without creating a database."""
    try:
        storage = open_storage(url, must_exist=True)
    except UsageError:
        return None  # no database yet, or one that the real open reports properly
    if name not in study_names(storage):
        return None
    study = load_study(storage, name)
    return study.user_attrs.get("config") if study.user_attrs.get("kind") == kind else None
