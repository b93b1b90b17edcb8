"""Optuna glue: storages, study creation and loading, and the worker loop.

The loop stops at exactly N finished trials however many workers share the study: before a
trial runs it checks its rank among finished and running trials, and a surplus trial is failed
unrun. Trials of a killed worker go stale through the heartbeat and are retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
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

STORAGE_ENV = "ARCHSEARCH_STORAGE"  # a storage URL that stays off command lines (and out of `ps`)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (*FINISHED, TrialState.RUNNING)
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_SECONDS = 120
SCHEMA_ATTEMPTS = 5
RACES = ("already exists", "UNIQUE constraint failed", "duplicate key value", "database is locked")
OPTUNA_TABLES = ("studies", "trials", "version_info")
# What a storage raises when it stops working under a running study: Optuna wraps SQLAlchemy's errors.
STORAGE_FAILURES = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
OWNER_ATTR = "worker"  # host, process id and process start time of the process that runs a trial

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class Surplus(Exception):
    """A trial asked for after the study already had its N finished or running trials."""


def describe(url: str) -> str:
    """The URL with any password masked, for messages."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "an unparseable storage URL"


def public_url(url: str) -> str:
    """The URL without its password: what may be stored, printed in a command or passed on argv.

    The password then comes from ~/.pgpass, PGPASSWORD or ARCHSEARCH_STORAGE, never from a
    place that other users (`ps`), the dashboard's API or a shared log can read."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url
    if not parsed.password:
        return url
    # URL.set ignores None, so the URL is built again without the password.
    bare = sqlalchemy.engine.URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
    )
    return bare.render_as_string(hide_password=False)


def has_password(url: str) -> bool:
    return public_url(url) != url


def sqlite_path(url: str) -> Path | None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
    return None


def open_storage(
    url: str, heartbeat_seconds: int = 5, grace_seconds: int = 20, must_exist: bool = False, read_only: bool = False
):
    """Any Optuna storage URL, or `journal:PATH` for a journal file; errors become one line.

    `must_exist` opens only a storage that already holds Optuna's tables (a worker joining a study);
    `read_only` also leaves the database exactly as it was (best, export, report): no tables created,
    no schema migrated, no journal mode switched. Both refuse anything else with one line, before
    Optuna would quietly add its tables to, say, a mistyped path of some other SQLite file."""
    must_exist = must_exist or read_only
    if url.startswith(JOURNAL_PREFIX):
        return _open_journal(Path(url[len(JOURNAL_PREFIX) :]), must_exist)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UsageError(
            f"storage URL {_mask_unparsed(url)!r} does not parse; use sqlite:///studies/NAME.db, "
            "postgresql://USER@HOST/DB (password in ~/.pgpass) or journal:PATH"
        ) from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if parsed.drivername.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_SECONDS}
        if path is not None:
            if must_exist:
                _check_sqlite_study_file(path)
            else:
                _check_not_foreign(path)
                _check_folder(path)
    elif parsed.drivername.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver installed with us is psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
    try:
        if must_exist and path is None:
            _check_optuna_tables(parsed, engine_kwargs)
        for attempt in range(1, SCHEMA_ATTEMPTS + 1):
            try:
                storage = RDBStorage(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_seconds,
                    grace_period=grace_seconds,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                    skip_table_creation=must_exist,
                )
                if path is not None and not read_only:
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
            "use sqlite:///studies/NAME.db, postgresql://USER@HOST/DB or journal:PATH"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise UsageError(f"cannot use storage {describe(url)}: {reason}") from None
    return storage


def _mask_unparsed(url: str) -> str:
    """A URL that SQLAlchemy cannot parse may still carry a password after `user:`; hide it."""
    return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


def _open_journal(path: Path, must_exist: bool) -> JournalStorage:
    if path.is_dir():
        raise UsageError(f"journal storage {path} is a folder; give a file, e.g. journal:{path / 'studies.log'}")
    if must_exist and not path.is_file():
        raise UsageError(f"no study journal at {path}; check --storage")
    if not must_exist:
        _check_folder(path)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as error:
        raise UsageError(f"cannot use journal {path}: {error.strerror}") from None
    except Exception as error:  # a file that is not a journal fails in many ways while its log is replayed
        raise UsageError(
            f"{path} is not an Optuna journal ({type(error).__name__} while reading it); check --storage"
        ) from None


def _check_sqlite_study_file(path: Path) -> None:
    """An existing SQLite file with Optuna's tables, checked through a read-only connection."""
    if not path.is_file():
        raise UsageError(f"no study database at {path}; check --storage")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a study database ({error}); check --storage") from None
    if not set(OPTUNA_TABLES) <= tables:
        raise UsageError(f"{path} is not an Optuna study database (it has no Optuna tables); check --storage")


def _check_not_foreign(path: Path) -> None:
    """A study may be created in a new or empty file or an Optuna database, not in another program's."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a database file, e.g. sqlite:///{path / 'studies.db'}")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a study database ({error}); check --storage") from None
    if tables and not tables & {"studies", "version_info"}:
        raise UsageError(f"{path} is another program's SQLite database, not a study database; check --storage")


def _check_optuna_tables(parsed: sqlalchemy.engine.URL, engine_kwargs: dict[str, Any]) -> None:
    """A server database with Optuna's tables; looked at without creating anything."""
    engine = sqlalchemy.create_engine(parsed, **engine_kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not set(OPTUNA_TABLES) <= tables:
        where = parsed.render_as_string(hide_password=True)
        raise UsageError(f"no Optuna study tables in {where}; run `archsearch search` or `grid` there first")


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
    changed = _differences(study.user_attrs.get("config", {}), config)
    if changed:
        raise UsageError(f"study {name!r} exists with other settings ({changed}); use another --study to start anew")
    return study


def _check_kind(study: optuna.Study, kind: str) -> None:
    stored_kind = study.user_attrs.get("kind")
    if stored_kind is None and not _half_made(study):
        raise UsageError(f"study {study.study_name!r} was not made by archsearch; choose another --study")
    if stored_kind not in (None, kind):
        raise UsageError(
            f"study {study.study_name!r} is a {stored_kind} study, not a {kind} study; choose another --study"
        )


def _half_made(study: optuna.Study) -> bool:
    """Created, but killed before its kind and settings were stored: no settings and no trials."""
    attrs = study.user_attrs
    return ("kind" not in attrs or "config" not in attrs) and not study.get_trials(deepcopy=False)


def _differences(stored: dict, config: dict) -> str:
    """The settings that make two configurations different experiments ('' if none)."""
    wanted = stored_form(config)
    changed = sorted(k for k in wanted if k not in ("trials", "storage") and stored.get(k) != wanted[k])
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
    the same kind completes. Two runs that create one study at once both end up working on it."""
    stored = stored_form(config)
    for _attempt in range(SCHEMA_ATTEMPTS):
        if name in study_names(storage):
            study = load_study(storage, name, sampler, pruner)
            if not _half_made(study):
                check_settings(storage, name, kind, config)
                if study.user_attrs.get("config") != stored:  # a new --trials, or a password to drop; else no write
                    study.set_user_attr("config", stored)
                return study
        else:
            try:
                study = optuna.create_study(
                    study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="minimize"
                )
            except optuna.exceptions.DuplicatedStudyError:
                continue  # another run created it a moment ago: resume it like any existing study
        return _claim(study, kind, stored)
    raise UsageError(f"study {name!r} keeps changing while it is being created; try again")


def _claim(study: optuna.Study, kind: str, stored: dict) -> optuna.Study:
    """Store kind and settings, then read them back: a run creating the same study at once may
    have written its own, and then only the one that matches goes on."""
    _check_kind(study, kind)
    study.set_user_attr("kind", kind)
    study.set_user_attr("config", stored)
    attrs = optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs
    changed = _differences(attrs.get("config", {}), stored) if attrs.get("kind") == kind else "kind"
    if changed:
        raise UsageError(
            f"study {study.study_name!r} was created at the same moment by another run with other settings "
            f"({changed}); use another --study"
        )
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


def owner_record() -> dict[str, Any]:
    """Who runs a trial: enough to tell later, on the same host, whether that process is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), so a reused process id is not
    taken for the process that started a trial; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_is_gone(owner: Any) -> bool:
    """True only when the owner ran on this host and its process no longer exists."""
    if (
        not isinstance(owner, dict)
        or owner.get("host") != socket.gethostname()
        or not isinstance(owner.get("pid"), int)
    ):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except (OverflowError, ValueError):
        return False
    start = owner.get("start")
    return start is not None and _process_start(pid) not in (None, start)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose process on this host is gone, and queue their retry.

    Storages with a heartbeat find such trials after the grace period anyway; a journal storage
    has none, so without this a resume after a SIGKILL would wait for that trial forever."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owner_is_gone(trial.user_attrs.get(OWNER_ATTR)):
            continue
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        frozen = study.get_trials(deepcopy=False)[trial.number]
        if frozen.state == TrialState.FAIL and frozen.datetime_complete is not None:
            RetryHeartbeatStaleTrialCallback(max_retry=3)(study, frozen)
            failed.append(trial.number)
    return failed


def blocking_trials(study: optuna.Study) -> str:
    """The running trials a finished study waits for, with where they run, for a one-line message."""
    parts = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR)
        where = f"process {owner.get('pid')} on host {owner.get('host')}" if isinstance(owner, dict) else "unknown"
        parts.append(f"#{trial.number} ({where})")
    return ", ".join(parts)


def guard_surplus(objective: Callable[[optuna.Trial], float], target: int) -> Callable[[optuna.Trial], float]:
    """Fail a trial unrun when `target` earlier trials are already finished or running; record its owner."""

    def guarded(trial: optuna.Trial) -> float:
        earlier = trial.study.get_trials(deepcopy=False, states=COUNTED)
        if sum(t.number < trial.number for t in earlier) >= target:
            trial.set_user_attr("fail_reason", f"surplus: {target} trials were already finished or running")
            raise Surplus()
        trial.set_user_attr(OWNER_ATTR, owner_record())
        return objective(trial)

    return guarded


def run_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    poll_seconds: float = 1.0,
    deadline: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> bool:
    """Run trials until the study holds `target` finished (complete or pruned) trials.

    False if `deadline` (a `time.monotonic()` value) came first: like Optuna's `optimize(timeout=)`,
    no trial starts after it and a running one finishes. While only other processes' trials are
    left, `on_wait` gets a line naming them, once for each new set."""
    guarded = guard_surplus(objective, target)
    callbacks = [on_trial] if on_trial else []
    announced = ""
    while True:
        fail_stale_trials(study)
        fail_orphaned_trials(study)
        counts = count_trials(study)
        if counts.finished >= target:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if counts.finished + counts.running >= target and counts.waiting == 0:
            blocking = blocking_trials(study)
            if on_wait is not None and blocking != announced:
                on_wait(blocking)
                announced = blocking
            time.sleep(poll_seconds)
            continue
        try:
            study.optimize(guarded, n_trials=1, catch=(Surplus,), callbacks=callbacks)
        except AssertionError as error:
            # When the storage fails while a trial's end is recorded, Optuna 5 asserts ("Should not reach")
            # and hides the failure as the assertion's context: report the failure itself.
            if isinstance(error.__context__, STORAGE_FAILURES):
                raise error.__context__ from None
            raise


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
    """A study's stored settings if it exists and is of this kind, read without writing anything."""
    try:
        storage = open_storage(url, read_only=True)
    except UsageError:
        return None  # no database yet, or one that the real open reports properly
    if name not in study_names(storage):
        return None
    study = load_study(storage, name)
    return study.user_attrs.get("config") if study.user_attrs.get("kind") == kind else None
