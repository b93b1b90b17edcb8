"""Storages: any Optuna storage URL or journal file, opened so that bad input is one line.

Every call into a storage runs inside `storage_calls_within`'s context, which the CLI and the API
set to hold Ctrl-C and SIGTERM back until the call returns: a stop raised inside SQLAlchemy's session
bookkeeping leaves a session that fails every later call of the process (IllegalStateChangeError),
so the trial it stopped could not even be marked failed. URLs and their secrets are
search.study.urls's, the files and tables behind a storage search.study.storage_files's; their
public names are importable from here too.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import inspect
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from search.errors import UsageError, argument
from search.study.storage_files import (
    OPTUNA_TABLES,
    STAMP_TABLE,
    WholeRecordJournal,
    begin_immediate,
    check_can_create,
    check_folder,
    check_not_foreign,
    check_optuna_tables,
    check_sqlite_study_file,
    disk_full,
    is_disk_full,
    on_read_only_media,
    reader_uri,
    remove_unused_database,
)
from search.study.urls import (
    JOURNAL_PREFIX,
    MASK,
    STORAGE_ENV,
    default_artifacts,
    describe,
    has_password,
    is_in_memory,
    is_secret_key,
    parse_url,
    public_url,
    scrub,
    sqlite_path,
    without_secrets,
)

__all__ = [
    "JOURNAL_PREFIX",
    "MASK",
    "OPTUNA_TABLES",
    "RACES",
    "SCHEMA_ATTEMPTS",
    "SQLITE_TIMEOUT_SECONDS",
    "STAMP_TABLE",
    "STORAGE_ENV",
    "STORAGE_FAILURES",
    "check_storage",
    "default_artifacts",
    "describe",
    "disk_full",
    "failed_write",
    "failure_reason",
    "has_password",
    "is_disk_full",
    "is_in_memory",
    "is_secret_key",
    "on_read_only_media",
    "open_storage",
    "parse_url",
    "public_url",
    "reader_uri",
    "scrub",
    "sqlite_path",
    "storage_calls_within",
    "without_secrets",
]

SQLITE_TIMEOUT_SECONDS = 120
SCHEMA_ATTEMPTS = 5
RACES = ("already exists", "UNIQUE constraint failed", "duplicate key value", "database is locked")
# What a storage raises when it stops working under a running study: Optuna wraps SQLAlchemy's errors.
STORAGE_FAILURES = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
# A running trial's heartbeat, and how long one may go unheard before the trial counts as stale and is failed.
DEFAULT_HEARTBEAT_SECONDS = 5
DEFAULT_GRACE_SECONDS = 20


_calls_within: Callable[[], AbstractContextManager] = contextlib.nullcontext


@contextlib.contextmanager
def storage_calls_within(context: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Every storage call made in the block, by any storage that open_storage opened, runs inside `context()`."""
    global _calls_within
    before, _calls_within = _calls_within, context
    try:
        yield
    finally:
        _calls_within = before


Storage = TypeVar("Storage", bound=type)


def _calls_guarded(cls: Storage) -> Storage:
    """`cls` with each of its methods (its bases' included, dunders apart) run inside the current context."""
    for base in cls.__mro__[1:-1]:
        for name, attribute in vars(base).items():
            if name.startswith("__") or not inspect.isfunction(attribute) or name in vars(cls):
                continue
            setattr(cls, name, _guarded(attribute))
    return cls


def _guarded(method: Callable) -> Callable:
    @functools.wraps(method)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        with _calls_within():
            return method(self, *args, **kwargs)

    return guarded


@_calls_guarded
class _RDBStorage(RDBStorage):
    """Optuna's RDBStorage, its calls run inside storage_calls_within's context."""

    def record_heartbeat(self, trial_id: int) -> None:
        """A heartbeat that fails (a full disk, a lost server) is skipped, and the next one tries again.

        Optuna records heartbeats from a thread of its own, where an error would print a traceback and end
        the heartbeats; the trial's own next write meets the same failure and reports it in one line."""
        with _calls_within(), contextlib.suppress(*STORAGE_FAILURES):
            super().record_heartbeat(trial_id)


@_calls_guarded
class _JournalStorage(JournalStorage):
    """Optuna's JournalStorage, its calls run inside storage_calls_within's context."""


def open_storage(
    url: str,
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
    must_exist: bool = False,
    read_only: bool = False,
):
    """Any Optuna storage URL, or `journal:PATH` for a journal file; errors become one line.

    `must_exist` opens only a storage that already holds Optuna's tables (a worker joining a study);
    `read_only` also leaves the database exactly as it was (best, export, report): no tables created,
    no schema migrated, no journal mode switched. Both refuse anything else with one line, before
    Optuna would quietly add its tables to, say, a mistyped path of some other SQLite file."""
    must_exist = must_exist or read_only
    if url.startswith(JOURNAL_PREFIX):
        return _open_journal(Path(url[len(JOURNAL_PREFIX) :]), must_exist, read_only)
    parsed, engine_kwargs, path = _target(url, must_exist)
    if path is not None and not must_exist:
        check_folder(path)
    if path is not None and read_only and on_read_only_media(path):
        uri = reader_uri(path)  # what _target's check just opened
        engine_kwargs["creator"] = lambda: sqlite3.connect(
            uri, uri=True, timeout=SQLITE_TIMEOUT_SECONDS, check_same_thread=False
        )
    created = path is not None and not must_exist and not path.exists()
    try:
        with _one_line_errors(url, parsed, path):
            if must_exist and path is None:
                check_optuna_tables(parsed, engine_kwargs)
            for attempt in range(1, SCHEMA_ATTEMPTS + 1):
                try:
                    with _calls_within():  # tables created and WAL switched on whole, never cut off half-way
                        options = dict(
                            engine_kwargs=engine_kwargs,
                            heartbeat_interval=heartbeat_seconds,
                            grace_period=grace_seconds,
                            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                        )
                        target = parsed.render_as_string(hide_password=False)
                        storage = _RDBStorage(
                            target, skip_table_creation=must_exist, skip_compatibility_check=True, **options
                        )
                        if not schema_is_current(storage):
                            # Optuna's own check, which refuses the schema with its message (upgrade the
                            # storage, or Optuna); it would pass only if the schema were current after all.
                            _RDBStorage(target, skip_table_creation=True, **options).engine.dispose()
                        if path is not None and not read_only:
                            # WAL lets readers (the dashboard, other workers) proceed while one worker writes.
                            with storage.engine.connect() as connection:
                                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                            begin_immediate(storage.engine)
                    break
                except sqlalchemy.exc.DBAPIError as error:
                    # Processes that open a new database at once all create Optuna's tables (and SQLite's
                    # WAL mode), and the slower ones trip over the first one's; opening again then works.
                    if attempt == SCHEMA_ATTEMPTS or not any(text in str(error.orig) for text in RACES):
                        raise
                    time.sleep(0.5 * attempt)
    except BaseException:
        if created:  # a full disk, say, while Optuna made its tables: no half-made database stays behind
            remove_unused_database(path)
        raise
    storage.source_url, storage.created_file = url, path if created else None
    if path is not None:
        _engines_to_close.add(storage.engine)
    return storage


_schema_head: list[str] = []  # the installed Optuna's schema revision, read at the first open


def schema_is_current(storage: RDBStorage) -> bool:
    """Whether the database's schema revision is the one the installed Optuna writes.

    Optuna's own check, on by default, reads the newest revision from its migration scripts (importing
    each of them) every time a storage opens, which is most of what an open costs; that revision belongs
    to the installed Optuna, so it is read once per process here. A database at any other revision goes
    to Optuna's own check, which words the refusal."""
    try:
        current = storage.get_current_version()
    except AssertionError:  # no revision stamped: Optuna's check says what is wrong
        return False
    if not _schema_head:
        _schema_head.append(storage.get_head_version())
    return current == _schema_head[0]


# SQLite engines this process opened. Closed at exit, so that SQLite folds each WAL back into its
# database and removes the -wal and -shm files even when a failure (a full disk) ended the run early,
# rather than leaving that to the interpreter's teardown, which a fork or os._exit skips.
_engines_to_close: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    for engine in list(_engines_to_close):
        with contextlib.suppress(Exception):
            engine.dispose()


def check_storage(url: str) -> None:
    """What opening `url` to create a study would refuse, found without writing anything: a URL that
    does not parse, a folder or another program's file where a database goes, a missing driver, a
    server that does not answer. A run checks this before its first write, which may be long after."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :])
        if path.is_dir():
            raise UsageError(f"journal storage {path} is a folder; give a file, e.g. journal:{path / 'studies.log'}")
        check_can_create(path)
        return
    parsed, engine_kwargs, path = _target(url, must_exist=False)
    if parsed.drivername.startswith("sqlite"):
        return
    with _one_line_errors(url, parsed):
        engine = sqlalchemy.create_engine(parsed, **engine_kwargs)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()


def _target(url: str, must_exist: bool) -> tuple[sqlalchemy.engine.URL, dict[str, Any], Path | None]:
    """The parsed URL, its engine's options and its SQLite file, once the URL and file are checked."""
    parsed = parse_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if parsed.drivername.startswith("sqlite"):
        if path is None:
            raise UsageError(
                f"storage {describe(url)} is in memory: the workers would not see it and every result would be "
                "lost at exit; give a file, e.g. sqlite:///studies/NAME.db"
            )
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_SECONDS}
        if path is not None:
            if must_exist:
                check_sqlite_study_file(path)
            else:
                check_not_foreign(path)
                check_can_create(path)
    elif parsed.drivername.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver installed with us is psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed, engine_kwargs, path


@contextlib.contextmanager
def _one_line_errors(url: str, parsed: sqlalchemy.engine.URL, path: Path | None = None):
    """A missing driver, an unknown dialect, a refused connection, a full disk: one line that says what to do."""
    try:
        yield
    except ImportError as error:  # optuna re-raises the driver's ModuleNotFoundError as a plain ImportError
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "for its driver"
        raise UsageError(f"storage {describe(url)} needs the Python package {missing}; pip install it") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(
            f"storage URL {describe(url)} names no database that Optuna can use ({parsed.drivername}); "
            "use sqlite:///studies/NAME.db, postgresql://USER@HOST/DB or journal:PATH"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
        reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]
        if path is not None and is_disk_full(reason):
            raise disk_full(path.resolve().parent) from None
        raise UsageError(f"cannot use storage {describe(url)}: {scrub(reason, url)}") from None


def _open_journal(path: Path, must_exist: bool, read_only: bool = False) -> JournalStorage:
    if path.is_dir():
        raise UsageError(f"journal storage {path} is a folder; give a file, e.g. journal:{path / 'studies.log'}")
    if must_exist and not path.is_file():
        raise UsageError(f"no study journal at {path}; check {argument('storage')}")
    if not must_exist:
        check_folder(path)
    try:
        backend = WholeRecordJournal(path)
        if not read_only:
            backend.drop_cut_off_record()  # before anything is appended after it
        storage = _JournalStorage(backend)
        storage.source_url, storage.created_file = f"{JOURNAL_PREFIX}{path}", None
        return storage
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(path.parent) from None
        raise UsageError(f"cannot use journal {path}: {error.strerror}") from None
    except UsageError:
        raise
    except Exception as error:  # a file that is not a journal fails in many ways while its log is replayed
        raise UsageError(
            f"{path} is not an Optuna journal ({type(error).__name__} while reading it); check {argument('storage')}"
        ) from None


def failure_reason(error: BaseException) -> str:
    """The first line of the deepest error behind a storage's failure: the driver's own words (SQLite's
    "database or disk is full"), which Optuna's and SQLAlchemy's wrappers hide as a cause or context."""
    chain, seen = [error], {id(error)}
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and id(inner) not in seen:
        chain.append(inner)
        seen.add(id(inner))
    texts = [str(getattr(link, "orig", None) or link).strip() for link in chain]
    said = [text.splitlines()[0] for text in texts if text]
    driver = [
        text.splitlines()[0]
        for link, text in zip(chain, texts, strict=True)
        if text and (getattr(link, "orig", None) is not None or isinstance(link, OSError | sqlite3.Error))
    ]
    full = [text for text in said if is_disk_full(text)]
    return (full or driver[-1:] or said or [type(error).__name__])[0]


def failed_write(storage: optuna.storages.BaseStorage, error: BaseException) -> UsageError:
    """A write that the storage refused (a full disk, a lost server) as one line; a SQLite file that
    open_storage made for this run and that holds no study yet is removed, so nothing half-made stays."""
    url = getattr(storage, "source_url", None) or ""
    reason = failure_reason(error)
    created = getattr(storage, "created_file", None)
    if created is not None:
        with contextlib.suppress(Exception):
            storage.engine.dispose()  # its connections closed first, so the file goes with its side files
        remove_unused_database(created)
    path = None if not url or url.startswith(JOURNAL_PREFIX) else sqlite_path(url)
    if path is not None and is_disk_full(reason):
        return disk_full(path.resolve().parent)
    where = describe(url) if url else "the storage"
    return UsageError(f"storage {where} failed: {scrub(reason, url)}; run the same command again once it works")
